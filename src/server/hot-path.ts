// The answer a busy cache gives most: a narinfo it served a moment ago (see cache/narinfo-memo.ts).
// It is written straight from node's http layer, before fastify routes the request: fastify's
// routing, hooks and reply machinery cost more CPU than the rest of such an answer (measured with
// bench/). Headers, counters and the log line are the ones the fastify route and hooks produce
// (narInfoHeaders, the shared ResponseRecorder), and test/integration/hot-path.test.ts checks that
// both paths answer alike. Anything else goes to fastify: other routes, a narinfo not memoised, a
// token that is not plainly valid, a query string, a pipelined request, or tracing being on (spans
// come from the hooks).

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Cache } from '../cache/cache';
import { tracingEnabled } from '../telemetry/tracing';
import type { AccessVerdict, Access } from './auth';
import type { ResponseRecorder } from './response-record';
import { narInfoHeaders } from './routes/narinfo';

/** `/<32 characters of nix32>.narinfo`, nothing before or after. */
const NARINFO_PATH = /^\/([0-9a-df-np-sv-z]{32})\.narinfo$/;
const NARINFO_PATH_LENGTH = 1 + 32 + '.narinfo'.length;

export interface HotPathOptions {
  cache: Cache;
  checkAccess: (access: Access, authorization: string | undefined) => AccessVerdict;
  record: ResponseRecorder;
  /** The route pattern fastify would have matched, for the latency histogram. */
  route: string;
}

/** Returns a handler that answers the request and returns true, or returns false and leaves it. */
export function createHotPath(options: HotPathOptions): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { cache, checkAccess, record, route } = options;
  return (req, res) => {
    const started = process.hrtime.bigint();
    const { method, url } = req;
    if ((method !== 'GET' && method !== 'HEAD') || url?.length !== NARINFO_PATH_LENGTH) return false;
    const hash = NARINFO_PATH.exec(url)?.[1];
    if (hash === undefined || tracingEnabled()) return false;
    if (checkAccess('read', req.headers.authorization) !== 'allowed') return false;
    // A response queued behind another on the same connection (pipelining) has no socket yet: its
    // byte count needs the tracking the fastify hooks do.
    const socket = res.socket;
    if (!socket) return false;
    const body = cache.peekNarInfo(hash);
    if (body === undefined) return false;

    const bytesBefore = socket.bytesWritten;
    res.writeHead(200, { ...narInfoHeaders(body.length), 'x-cache': 'HIT' });
    if (method === 'HEAD') res.end();
    else res.end(body);
    record({
      method,
      url,
      route,
      status: 200,
      bytes: socket.bytesWritten - bytesBefore,
      seconds: Number(process.hrtime.bigint() - started) / 1e9,
      ip: socket.remoteAddress ?? '',
      cacheKind: 'narinfo',
      cacheSource: 'hit',
      narInfoFrom: 'database',
      upstreamHost: undefined,
      quiet: false,
    });
    return true;
  };
}
