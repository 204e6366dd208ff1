// GET|HEAD /nar/<file>: from storage, or streamed from the shared upstream download.

import type { FastifyInstance } from 'fastify';
import type { Cache } from '../../cache/cache';
import { checkNarFileName } from '../../nix/file-names';
import { badRequest } from '../errors';
import { parseRange } from '../../cache/range';
import { sendStream } from '../send-stream';

/** NARs never change under a name: clients and proxies may keep them for good. */
const IMMUTABLE = 'public, max-age=31536000, immutable';

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
    handler: async (request, reply) => {
      const name = checkedNarName(request.params.file);
      const head = request.method === 'HEAD';
      // NAR file names are derived from the file's hash, so the name is a strong validator.
      const etag = `"${name.replace(/\.nar(\.[a-z0-9]+)?$/, '')}"`;
      const range = head ? undefined : parseRange(request.headers.range);
      request.cacheKind = 'nar';
      const result = await cache.getNar(name, { head, upstream, ...(range ? { range } : {}) });
      request.cacheSource = result?.source;
      request.upstreamHost = result?.upstream;
      reply.header('x-cache', result?.source === 'hit' ? 'HIT' : 'MISS');
      if (!result) return reply.callNotFound();
      reply
        .type('application/x-nix-nar')
        .header('accept-ranges', 'bytes')
        .header('cache-control', IMMUTABLE)
        .header('etag', etag);
      if (request.headers['if-none-match'] === etag) {
        result.stream?.destroy();
        return reply.code(304).send();
      }
      if (result.range === 'unsatisfiable') {
        return reply.code(416).header('content-range', `bytes */${result.size}`).send();
      }
      if (result.range) {
        const { start, end } = result.range;
        reply.code(206).header('content-range', `bytes ${start}-${end}/${result.size}`).header('content-length', end - start + 1);
      } else if (result.size !== undefined) {
        reply.header('content-length', result.size);
      }
      if (head || !result.stream) return reply.send();
      return sendStream(reply, result.stream);
    },
  });
}
