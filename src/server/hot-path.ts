// The answer a busy cache gives most: a narinfo it holds, above all one it served a moment ago
// (see cache/narinfo-memo.ts). It is written straight from node's http layer, before fastify routes
// the request: fastify's routing, hooks and reply machinery cost more CPU than the rest of such an
// answer (measured with bench/). Headers, counters and the log line are the ones the fastify route and hooks produce
// (narInfoHeaders, the shared ResponseRecorder), and test/integration/hot-path.test.ts checks that
// both paths answer alike. Anything else goes to fastify: other routes, a narinfo not held, a
// token that is not plainly valid, a query string, a pipelined request, or tracing being on (spans
// come from the hooks).

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Cache } from '../cache/cache';
import { isNix32Span } from '../nix/nix32';
import type { NarInfoSource } from '../telemetry/metrics';
import { tracingEnabled } from '../telemetry/tracing';
import type { AccessVerdict, Access } from './auth';
import type { ResponseRecorder } from './response-record';
import { narInfoHeaders, passOnNotStored } from './routes/narinfo';

const NARINFO_SUFFIX = '.narinfo';
const NARINFO_PATH_LENGTH = 1 + 32 + NARINFO_SUFFIX.length;

/**
 * The hash of `/<32 characters of nix32>.narinfo`, nothing before or after (the route's
 * NARINFO_FILE_NAME after the slash). Checked by character codes: a regular expression's match
 * array and capture cost more than the rest of the check (measured with bench/instructions.mjs).
 */
export function narInfoPathHash(url: string): string | undefined {
  if (url.length !== NARINFO_PATH_LENGTH || url.charCodeAt(0) !== 0x2f || !url.endsWith(NARINFO_SUFFIX)) return undefined;
  return isNix32Span(url, 1, 33) ? url.slice(1, 33) : undefined;
}

export interface HotPathOptions {
  cache: Cache;
  checkAccess: (access: Access, authorization: string | undefined) => AccessVerdict;
  record: ResponseRecorder;
  /** The route pattern fastify would have matched, for the latency histogram. */
  route: string;
}

/**
 * Returns a handler that answers the request, or passes it to `fallback` (fastify): at once when
 * it is not a narinfo read it can answer, or after looking in the database and finding nothing.
 */
export function createHotPath(options: HotPathOptions): (req: IncomingMessage, res: ServerResponse, fallback: (req: IncomingMessage, res: ServerResponse) => void) => void {
  const { cache, checkAccess, record, route } = options;
  // Tokens are fixed at start: without a read token the Authorization header need not be read.
  const readIsOpen = checkAccess('read', undefined) === 'allowed';

  // The headers by body length, built once: narinfos are a few hundred bytes, so there are few.
  const headersByLength = new Map<number, Record<string, string | number>>();
  const headersFor = (length: number) => {
    let headers = headersByLength.get(length);
    if (!headers) {
      headers = { ...narInfoHeaders(length), 'x-cache': 'HIT' };
      if (headersByLength.size < 4096) headersByLength.set(length, headers);
    }
    return headers;
  };

  const answer = (req: IncomingMessage, res: ServerResponse, socket: Socket, started: number, body: Buffer, from: NarInfoSource) => {
    const bytesBefore = socket.bytesWritten;
    res.writeHead(200, headersFor(body.length));
    if (req.method === 'HEAD') res.end();
    else res.end(body);
    record({
      method: req.method!,
      url: req.url!,
      route,
      status: 200,
      bytes: socket.bytesWritten - bytesBefore,
      seconds: (performance.now() - started) / 1000,
      ip: socket.remoteAddress ?? '',
      cacheKind: 'narinfo',
      cacheSource: 'hit',
      narInfoFrom: from,
      upstreamHost: undefined,
      quiet: false,
      aborted: socket.destroyed,
    });
  };

  return (req, res, fallback) => {
    const started = performance.now();
    const { method, url } = req;
    if ((method !== 'GET' && method !== 'HEAD') || url === undefined) return fallback(req, res);
    const hash = narInfoPathHash(url);
    if (hash === undefined || tracingEnabled()) return fallback(req, res);
    if (!readIsOpen && checkAccess('read', req.headers.authorization) !== 'allowed') return fallback(req, res);
    // A response queued behind another on the same connection (pipelining) has no socket yet: its
    // byte count needs the tracking the fastify hooks do.
    const socket = res.socket;
    if (!socket) return fallback(req, res);
    const body = cache.peekNarInfo(hash, started);
    if (body !== undefined) return answer(req, res, socket, started, body, 'database');
    // Not memoised: the database (or a legacy file) may have it. Anything else is fastify's to
    // answer: not stored, it asks upstream without looking again; after an error it looks again.
    cache.storedNarInfo(hash).then(
      (stored) => {
        if (!stored) {
          passOnNotStored(req);
          return fallback(req, res);
        }
        if (socket.destroyed) return;
        answer(req, res, socket, started, stored.body, stored.from);
      },
      () => fallback(req, res),
    );
  };
}
