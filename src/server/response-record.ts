// What every answered request leaves behind: the latency histogram, the cache counters (with the
// Go ncps's labels) and one log line. Shared by the fastify onResponse hook and the hot path
// (hot-path.ts), so both count and log alike.

import type { CacheSource } from '../cache/cache';
import type { Logger } from '../telemetry/logger';
import type { Metrics, NarInfoSource } from '../telemetry/metrics';
import type { RecentMiss } from '../telemetry/status';

export interface AnsweredRequest {
  method: string;
  url: string;
  /** The route pattern (`/:file`), or 'unmatched'. */
  route: string;
  status: number;
  /** Bytes written for this response, headers included. */
  bytes: number;
  seconds: number;
  /** The client's address as the socket saw it. */
  ip: string;
  /** Set by cache routes once they looked something up. */
  cacheKind: 'narinfo' | 'nar' | undefined;
  cacheSource: CacheSource | undefined;
  narInfoFrom: NarInfoSource | undefined;
  upstreamHost: string | undefined;
  /** Not logged (health checks). */
  quiet: boolean;
  /** The connection went away before the whole response was written. */
  aborted: boolean;
}

/** Both callers build it with the same fields in the same order: one object shape, fast field reads. */
export type ResponseRecorder = (answered: AnsweredRequest) => void;

/** `onMiss` hears of every GET that went to the upstreams (for the status page's recent misses). */
export function createResponseRecorder(metrics: Metrics, logger: Logger, onMiss?: (miss: RecentMiss) => void): ResponseRecorder {
  // The series every request touches, looked up once.
  const narInfoHit = {
    database: metrics.narInfoServed.labels({ result: 'hit', status: 'success', source: 'database' }),
    storage: metrics.narInfoServed.labels({ result: 'hit', status: 'success', source: 'storage' }),
  };
  const narInfoAbsent = metrics.narInfoServed.labels({ result: 'miss', status: 'error' });
  const narHit = metrics.narServed.labels({ result: 'hit', status: 'success' });
  const narAbsent = metrics.narServed.labels({ result: 'miss', status: 'error' });
  const bytesFromCache = metrics.bytesServed.labels('cache');
  const bytesFromUpstream = metrics.bytesServed.labels('upstream');

  /** The Go ncps's labels of a miss that found the path: its upstream host when known. */
  const foundMiss = (status: string, host: string | undefined) => (host ? { result: 'miss', status, upstream_hostname: host } : { result: 'miss', status });

  // The latency series of the last request: a run of hits shares one, and comparing three values
  // costs less than resolving the labels again.
  let last: { method: string; route: string; status: number; series: ReturnType<Metrics['httpDuration']['labels']> } | undefined;
  const durationSeries = (method: string, route: string, status: number) => {
    if (last === undefined || last.status !== status || last.method !== method || last.route !== route) {
      last = { method, route, status, series: metrics.httpDuration.labels(method, route, String(status)) };
    }
    return last.series;
  };

  return (r) => {
    const { status } = r;
    durationSeries(r.method, r.route, status).observe(r.seconds);
    const result = r.cacheSource;
    if (onMiss && r.cacheKind && r.method === 'GET' && (result === 'miss' || (result === undefined && status === 404))) {
      onMiss({ at: Date.now(), path: r.url, kind: r.cacheKind, status, ms: r.seconds * 1000, ...(r.upstreamHost ? { upstream: r.upstreamHost } : {}) });
    }
    if (r.cacheKind === 'narinfo') {
      // GET and HEAD, like the Go ncps (both look the narinfo up).
      if (result === 'hit') narInfoHit[r.narInfoFrom ?? 'database'].inc();
      else if (result === 'miss') metrics.narInfoServed.labels(foundMiss(status < 400 ? 'success' : 'error', r.upstreamHost)).inc();
      else narInfoAbsent.inc();
    } else if (r.cacheKind === 'nar' && r.method === 'GET') {
      if (result === 'hit' && status < 400) {
        narHit.inc();
        bytesFromCache.inc(r.bytes);
      } else if (result === 'miss') {
        metrics.narServed.labels(foundMiss(status < 400 ? 'success' : 'error', r.upstreamHost)).inc();
        bytesFromUpstream.inc(r.bytes);
      } else if (status === 404) {
        narAbsent.inc();
      }
    }
    if (r.quiet || !logger.isLevelEnabled('info')) return;
    logger.info(
      {
        client: clientAddress(r.ip),
        method: r.method,
        url: r.url,
        status,
        bytes: r.bytes,
        ms: Math.round(r.seconds * 1e4) / 10,
        cache: result,
        ...(r.aborted ? { aborted: true } : {}),
      },
      'request',
    );
  };
}

/** `::ffff:192.0.2.1` (an IPv4 client of the dual-stack listener) as `192.0.2.1`. */
function clientAddress(ip: string): string {
  return ip.startsWith('::ffff:') ? ip.slice('::ffff:'.length) : ip;
}
