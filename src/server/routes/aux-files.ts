// NAR listings (`<hash>.ls`, for `nix store ls`) and build logs (`log/<drv>`, for `nix log`).

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Cache } from '../../cache/cache';
import { LOG_NAME } from '../../cache/names';
import { REALISATION_ID } from '../../nix';
import type { AuxKind } from '../../storage/storage';
import { badRequest } from '../errors';

const CONTENT_TYPES: Record<AuxKind, string> = {
  ls: 'application/json',
  log: 'text/plain; charset=utf-8',
  realisations: 'application/json',
};

/** `sha256:<hex>!<output>.doi` → the realisation id. */
export function realisationId(file: string): string {
  const id = file.endsWith('.doi') ? file.slice(0, -'.doi'.length) : '';
  if (!REALISATION_ID.test(id)) throw badRequest('invalid realisation name: expected sha256:<64 hex>!<output>.doi');
  return id;
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
  app.route<{ Params: { file: string } }>({
    method: ['GET', 'HEAD'],
    url: `${prefix}/realisations/:file`,
    handler: async (request, reply) => {
      const text = await cache.getRealisation(realisationId(request.params.file), { upstream: prefix === '' });
      if (text === undefined) {
        reply.callNotFound();
        return reply;
      }
      reply.type(CONTENT_TYPES.realisations).header('content-length', Buffer.byteLength(text)).header('cache-control', 'public, max-age=300');
      return request.method === 'HEAD' ? reply.send() : reply.send(text);
    },
  });

  app.route<{ Params: { name: string } }>({
    method: ['GET', 'HEAD'],
    url: `${prefix}/log/:name`,
    handler: async (request, reply) => serveAuxFile(request, reply, cache, 'log', logName(request.params.name), prefix === ''),
  });
}
