// GET|HEAD /nar/<file>: from storage, or streamed from the shared upstream download.

import type { FastifyInstance } from 'fastify';
import type { Cache } from '../../cache/cache';
import { checkNarFileName } from '../../cache/names';
import { badRequest } from '../errors';

export function checkedNarName(file: string): string {
  const check = checkNarFileName(file);
  if (!check.ok) throw badRequest(check.reason);
  return file;
}

export function registerNarRoutes(app: FastifyInstance, cache: Cache, prefix: '' | '/upload'): void {
  const upstream = prefix === '';
  app.route<{ Params: { file: string } }>({
    method: ['GET', 'HEAD'],
    url: `${prefix}/nar/:file`,
    config: { kind: 'nar' },
    handler: async (request, reply) => {
      const name = checkedNarName(request.params.file);
      const head = request.method === 'HEAD';
      const result = await cache.getNar(name, { head, upstream });
      request.cacheSource = result?.source;
      if (!result) return reply.callNotFound();
      reply.type('application/x-nix-nar');
      if (result.size !== undefined) reply.header('content-length', result.size);
      if (head || !result.stream) return reply.send();
      return reply.send(result.stream);
    },
  });
}
