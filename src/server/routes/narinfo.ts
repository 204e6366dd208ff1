// GET|HEAD /<hash>.narinfo

import type { FastifyInstance } from 'fastify';
import type { Cache } from '../../cache/cache';
import { NARINFO_FILE_NAME } from '../../cache/names';
import { badRequest } from '../errors';

export function registerNarInfoRoutes(app: FastifyInstance, cache: Cache): void {
  app.route<{ Params: { file: string } }>({
    method: ['GET', 'HEAD'],
    url: '/:file',
    handler: async (request, reply) => {
      const { file } = request.params;
      if (!file.endsWith('.narinfo')) return reply.callNotFound();
      const hash = NARINFO_FILE_NAME.exec(file)?.[1];
      if (!hash) throw badRequest('invalid store path hash: expected 32 characters of nix32');
      // HEAD needs the narinfo too: only a verified narinfo may be announced as present.
      const result = await cache.getNarInfo(hash);
      request.cacheSource = result?.source;
      if (!result) return reply.callNotFound();
      return reply.type('text/x-nix-narinfo').header('content-length', Buffer.byteLength(result.text)).send(result.text);
    },
  });
}
