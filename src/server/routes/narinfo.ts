// GET|HEAD /<hash>.narinfo (and the same under /upload, which never asks upstream).

import type { IncomingMessage } from 'node:http';
import type { FastifyInstance } from 'fastify';
import type { Cache } from '../../cache/cache';
import { LISTING_FILE_NAME, NARINFO_FILE_NAME } from '../../nix/file-names';
import { badRequest } from '../errors';
import { serveAuxFile } from './aux-files';

/** The headers of a narinfo answer; the hot path (server/hot-path.ts) sends the same. */
export function narInfoHeaders(length: number): Record<string, string | number> {
  return { 'content-type': 'text/x-nix-narinfo', 'cache-control': 'public, max-age=300', 'content-length': length };
}

/**
 * Requests the hot path (server/hot-path.ts) looked up and found nothing stored for, just before
 * handing them on: the route goes on from there (upstream, or 404) without looking again.
 */
const foundNotStored = new WeakSet<IncomingMessage>();

export function passOnNotStored(req: IncomingMessage): void {
  foundNotStored.add(req);
}

export function listingName(file: string): string {
  if (!LISTING_FILE_NAME.test(file)) throw badRequest('invalid NAR listing name: expected <32 characters of nix32>.ls');
  return file;
}

/** The store path hash of a `<hash>.narinfo` file name; undefined for other names (not ours). */
export function narInfoHashOf(file: string): string | undefined {
  if (!file.endsWith('.narinfo')) return undefined;
  const hash = NARINFO_FILE_NAME.exec(file)?.[1];
  if (!hash) throw badRequest('invalid store path hash: expected 32 characters of nix32');
  return hash;
}

export function registerNarInfoRoutes(app: FastifyInstance, cache: Cache, prefix: '' | '/upload'): void {
  const upstream = prefix === '';
  app.route<{ Params: { file: string } }>({
    method: ['GET', 'HEAD'],
    url: `${prefix}/:file`,
    handler: async (request, reply) => {
      if (request.params.file.endsWith('.ls')) return serveAuxFile(request, reply, cache, 'ls', listingName(request.params.file), upstream);
      const hash = narInfoHashOf(request.params.file);
      if (!hash) return reply.callNotFound();
      // HEAD needs the narinfo too: only a verified narinfo may be announced as present.
      request.cacheKind = 'narinfo';
      const result = await cache.getNarInfo(hash, { upstream, notStored: foundNotStored.has(request.raw) });
      request.cacheSource = result?.source;
      request.narInfoFrom = result?.from;
      request.upstreamHost = result?.upstream;
      reply.header('x-cache', result?.source === 'hit' ? 'HIT' : 'MISS');
      if (!result) return reply.callNotFound();
      return reply.headers(narInfoHeaders(result.body.length)).send(result.body);
    },
  });
}
