// NAR listings (`<hash>.ls`, for `nix store ls`), build logs (`log/<drv>`, for `nix log`),
// realisations (`realisations/<id>.doi`, Nix <= 2.34) and build trace entries
// (`build-trace-v2/<drv>/<output>.doi`, Nix >= 2.35).

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Cache } from '../../cache/cache';
import { LOG_NAME } from '../../nix/file-names';
import { parseBuildTraceKey, REALISATION_ID, type BuildTraceKey } from '../../nix';
import type { AuxKind } from '../../storage/storage';
import { badRequest } from '../errors';

const CONTENT_TYPES: Record<AuxKind, string> = {
  ls: 'application/json',
  log: 'text/plain; charset=utf-8',
  realisations: 'application/json',
  'build-trace-v2': 'application/json',
};

/** `sha256:<hex>!<output>.doi` → the realisation id. */
export function realisationId(file: string): string {
  const id = file.endsWith('.doi') ? file.slice(0, -'.doi'.length) : '';
  if (!REALISATION_ID.test(id)) throw badRequest('invalid realisation name: expected sha256:<64 hex>!<output>.doi');
  return id;
}

/** `<drv base name>` and `<output>.doi` → the build trace key they name. */
export function buildTraceKey(drv: string, file: string): BuildTraceKey {
  const key = parseBuildTraceKey(drv, file);
  if (!key) throw badRequest('invalid build trace name: expected build-trace-v2/<hash>-<name>.drv/<output>.doi');
  return key;
}

export function logName(name: string): string {
  if (!LOG_NAME.test(name)) throw badRequest('invalid log name: expected a store path base name such as <hash>-name.drv');
  return name;
}

export async function serveAuxFile(
  request: FastifyRequest,
  reply: FastifyReply,
  cache: Cache,
  kind: AuxKind,
  name: string,
  upstream: boolean,
): Promise<FastifyReply> {
  const data = await cache.getAuxFile(kind, name, { upstream });
  if (!data) {
    reply.callNotFound();
    return reply;
  }
  reply.type(CONTENT_TYPES[kind]).header('content-length', data.length).header('cache-control', 'public, max-age=86400');
  return request.method === 'HEAD' ? reply.send() : reply.send(data);
}

export function registerLogRoutes(app: FastifyInstance, cache: Cache, prefix: '' | '/upload'): void {
  // Signed entries may be re-signed or replaced by a newer upload: cached briefly.
  const sendEntry = (request: FastifyRequest, reply: FastifyReply, text: string | undefined) => {
    if (text === undefined) {
      reply.callNotFound();
      return reply;
    }
    reply.type('application/json').header('content-length', Buffer.byteLength(text)).header('cache-control', 'public, max-age=300');
    return request.method === 'HEAD' ? reply.send() : reply.send(text);
  };

  app.route<{ Params: { file: string } }>({
    method: ['GET', 'HEAD'],
    url: `${prefix}/realisations/:file`,
    handler: async (request, reply) =>
      sendEntry(request, reply, await cache.getRealisation(realisationId(request.params.file), { upstream: prefix === '' })),
  });

  app.route<{ Params: { drv: string; file: string } }>({
    method: ['GET', 'HEAD'],
    url: `${prefix}/build-trace-v2/:drv/:file`,
    handler: async (request, reply) =>
      sendEntry(request, reply, await cache.getBuildTrace(buildTraceKey(request.params.drv, request.params.file), { upstream: prefix === '' })),
  });

  app.route<{ Params: { name: string } }>({
    method: ['GET', 'HEAD'],
    url: `${prefix}/log/:name`,
    handler: async (request, reply) => serveAuxFile(request, reply, cache, 'log', logName(request.params.name), prefix === ''),
  });
}
