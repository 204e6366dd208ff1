// Builds the fastify application: routes translate HTTP into calls on the cache core and back.
// Nothing about storage or upstreams lives here.

import { SpanKind, SpanStatusCode, type Span } from '@opentelemetry/api';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import http from 'node:http';
import type { Cache, CacheSource } from '../cache/cache';
import type { CacheWrites } from '../cache/writes';
import type { Logger } from '../telemetry/logger';
import type { Metrics, NarInfoSource } from '../telemetry/metrics';
import type { Readiness } from './readiness';
import type { StatusBoard } from '../telemetry/status';
import { tracer } from '../telemetry/tracing';
import { createAccessCheck, createAuthHook, type Access } from './auth';
import { HttpError } from './errors';
import { answerClientError, answerFrameworkError } from './framework-errors';
import { createHotPath } from './hot-path';
import { RouteMethods } from './method-not-allowed';
import { createResponseRecorder } from './response-record';
import { responseBytes, trackResponseBytes } from './response-bytes';
import { registerCacheInfoRoutes } from './routes/cache-info';
import { registerStatusPage } from './routes/status-page';
import { registerHealthRoutes } from './routes/health';
import { registerLogRoutes } from './routes/aux-files';
import { registerNarRoutes } from './routes/nar';
import { registerNarInfoRoutes } from './routes/narinfo';
import { registerWriteRoutes } from './routes/writes';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by cache routes once they looked something up: what it was, for the metrics. */
    cacheKind: 'narinfo' | 'nar' | undefined;
    /** Set by cache routes: whether the answer came from our storage or from upstream. */
    cacheSource: CacheSource | undefined;
    /** Set by the narinfo route on a hit: the database, or a narinfo file an older ncps left. */
    narInfoFrom: NarInfoSource | undefined;
    startedAt: bigint;
    span: Span | undefined;
    /** Set by cache routes on a miss: which upstream answered. */
    upstreamHost: string | undefined;
  }
  interface FastifyContextConfig {
    /** Not request-logged (health checks). */
    quiet?: boolean;
    /** Who may call the route; 'read' when absent. */
    access?: Access;
  }
}

export interface AppOptions {
  cache: Cache;
  writes: CacheWrites;
  logger: Logger;
  metrics: Metrics;
  hostname: string;
  publicKey: string | undefined;
  getToken: string;
  putToken: string;
  allowPut: boolean;
  allowDelete: boolean;
  prometheus: boolean;
  /** Refreshes gauges that are read from the database, before a scrape. */
  beforeScrape?: () => Promise<void>;
  /** The text of a scrape; in a worker of several, every worker's figures (workers/worker-link.ts). */
  metricsText?: () => Promise<string>;
  /** Answers /readyz; without it only /healthz is served. */
  readiness?: Readiness;
  /** The figures of the status page at `/` for browsers; without it `/` answers JSON only. */
  statusBoard?: StatusBoard;
  version?: string;
}

/** How long a scrape waits for the figures read from the database before answering without them. */
const SCRAPE_REFRESH_TIMEOUT_MS = 2_000;

/** What fastify passes a server factory: its options, with its defaults filled in. */
interface ServerSettings {
  http?: http.ServerOptions;
  keepAliveTimeout?: number;
  requestTimeout?: number;
  connectionTimeout?: number;
  maxRequestsPerSocket?: number;
}

export function buildApp(options: AppOptions): FastifyInstance {
  const { logger, metrics } = options;
  const tokens = { getToken: options.getToken, putToken: options.putToken };
  const record = createResponseRecorder(metrics, logger, options.statusBoard ? (miss) => options.statusBoard!.recordMiss(miss) : undefined);
  const hotPath = createHotPath({ cache: options.cache, checkAccess: createAccessCheck(tokens), record, route: '/:file' });
  const app = Fastify({
    // Our own http server, so that the hot path sees each request before fastify does; it is set
    // up as fastify would set up its own.
    serverFactory: (handler, settings: ServerSettings) => {
      const server = http.createServer(settings.http ?? {}, (req, res) => hotPath(req, res, handler));
      if (settings.keepAliveTimeout !== undefined) server.keepAliveTimeout = settings.keepAliveTimeout;
      if (settings.requestTimeout !== undefined) server.requestTimeout = settings.requestTimeout;
      server.setTimeout(settings.connectionTimeout ?? 0);
      if (settings.maxRequestsPerSocket) server.maxRequestsPerSocket = settings.maxRequestsPerSocket;
      return server;
    },
    logger: false,
    // HEAD is routed explicitly: an automatic HEAD would run the GET handler and download NARs.
    exposeHeadRoutes: false,
    // Requests already accepted during shutdown are answered, not refused with 503 (Nix would
    // disable the substituter).
    return503OnClosing: false,
    routerOptions: { maxParamLength: 256 },
    // Refusals before routing answer one line of text, like every other refusal.
    frameworkErrors: answerFrameworkError,
    clientErrorHandler: answerClientError,
  });
  const routeMethods = new RouteMethods();
  routeMethods.watch(app);

  app.decorateRequest('cacheKind', undefined);
  app.decorateRequest('cacheSource', undefined);
  app.decorateRequest('narInfoFrom', undefined);
  app.decorateRequest('startedAt', 0n);
  app.decorateRequest('span', undefined);
  app.decorateRequest('upstreamHost', undefined);

  app.addHook('onRequest', async (request, reply) => {
    request.startedAt = process.hrtime.bigint();
    trackResponseBytes(reply.raw);
    request.span = tracer().startSpan(`${request.method} ${request.routeOptions.url ?? 'unmatched'}`, {
      kind: SpanKind.SERVER,
      attributes: { 'http.request.method': request.method, 'url.path': request.url },
    });
    // Accounted when the response closes, not in fastify's onResponse: that one is skipped when
    // the client closes the connection as soon as it has the whole body, before the server's last
    // write completes (such responses went missing from the log and the metrics).
    const ip = request.ip ?? '';
    reply.raw.once('close', () => answered(request, reply, ip));
  });
  app.addHook('onRequest', createAuthHook(tokens));

  // One log line and the metrics per request: what was asked, by whom, the answer, size, time,
  // hit or miss.
  const answered = (request: FastifyRequest, reply: FastifyReply, ip: string) => {
    const seconds = Number(process.hrtime.bigint() - request.startedAt) / 1e9;
    const bytes = responseBytes(reply.raw);
    const status = reply.statusCode;
    const result = request.cacheSource;
    request.span?.setAttributes({ 'http.response.status_code': status, 'ncps.cache': result ?? 'none', 'ncps.bytes': bytes });
    if (status >= 500) request.span?.setStatus({ code: SpanStatusCode.ERROR });
    request.span?.end();
    record({
      method: request.method,
      url: request.url,
      route: reply.routeOptions.url ?? 'unmatched',
      status,
      bytes,
      seconds,
      ip,
      cacheKind: request.cacheKind,
      cacheSource: result,
      narInfoFrom: request.narInfoFrom,
      upstreamHost: request.upstreamHost,
      quiet: reply.routeOptions.config?.quiet ?? false,
      aborted: !reply.raw.writableFinished,
    });
  };

  // Absence is short-lived: an upstream may get the path any minute. A path that exists for other
  // methods only is a wrong method: 405 with Allow.
  app.setNotFoundHandler(async (request, reply) => {
    const allowed = routeMethods.allowedFor(request.url);
    if (allowed.length > 0 && !allowed.includes(request.method)) {
      return reply.code(405).header('allow', allowed.join(', ')).type('text/plain; charset=utf-8').send(`method ${request.method} not allowed here\n`);
    }
    return reply.code(404).header('cache-control', 'public, max-age=60').type('text/plain; charset=utf-8').send('not found\n');
  });

  app.setErrorHandler(async (error, request, reply) => {
    if (error instanceof HttpError) {
      return reply.code(error.statusCode).type('text/plain; charset=utf-8').send(`${error.message}\n`);
    }
    if ((error as Error).name === 'LockUnavailableError') {
      // Redis is down: answer "not here" (a 5xx would make Nix disable the substituter) and say why.
      logger.error({ err: (error as Error).message, url: request.url }, 'lock service unavailable');
      return reply.code(404).type('text/plain; charset=utf-8').send('not available right now: the lock service is unreachable\n');
    }
    const status = (error as { statusCode?: number }).statusCode;
    if (status === 502) {
      // A NAR download that failed before any byte went out: nothing here may be kept as good.
      logger.warn({ err: (error as Error).message, url: request.url }, 'NAR download failed before the answer started');
      return reply.code(502).header('cache-control', 'no-store').type('text/plain; charset=utf-8').send(`${(error as Error).message}\n`);
    }
    if (status !== undefined && status >= 400 && status < 500) {
      return reply.code(status).type('text/plain; charset=utf-8').send(`${(error as Error).message}\n`);
    }
    logger.error({ err: error, url: request.url }, 'request failed');
    return reply.code(500).type('text/plain; charset=utf-8').send('internal error\n');
  });

  registerHealthRoutes(app, options.readiness);
  registerCacheInfoRoutes(app, { hostname: options.hostname, publicKey: options.publicKey });
  registerStatusPage(app, {
    hostname: options.hostname,
    publicKey: options.publicKey,
    version: options.version ?? 'dev',
    ...(options.statusBoard ? { board: options.statusBoard } : {}),
    ...(options.readiness ? { readiness: options.readiness } : {}),
    checkAccess: createAccessCheck(tokens),
  });
  for (const prefix of ['', '/upload'] as const) {
    registerNarInfoRoutes(app, options.cache, prefix);
    registerNarRoutes(app, options.cache, prefix);
    registerLogRoutes(app, options.cache, prefix);
  }
  registerWriteRoutes(app, options.writes, {
    allowPut: options.allowPut,
    allowDelete: options.allowDelete,
    writeTokenConfigured: Boolean(options.putToken || options.getToken),
  });
  if (options.prometheus) {
    // Never behind the read token, as in the Go ncps: Prometheus scrapers carry none.
    app.get('/metrics', { config: { quiet: true, access: 'public' } }, async (_request, reply) => {
      // Prometheus must see what can still be measured exactly when something is down: with the
      // database unreachable, the gauges read from it keep their last values and the rest is fresh.
      if (options.beforeScrape) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          options.beforeScrape(),
          new Promise((_resolve, reject) => {
            timer = setTimeout(() => reject(new Error(`no answer within ${SCRAPE_REFRESH_TIMEOUT_MS} ms`)), SCRAPE_REFRESH_TIMEOUT_MS);
          }),
        ])
          .catch((error: Error) => logger.warn({ err: error.message }, 'metrics: could not read the store figures from the database; serving the last known'))
          .finally(() => clearTimeout(timer));
      }
      const text = options.metricsText ? await options.metricsText() : await metrics.registry.metrics();
      return reply.type(metrics.registry.contentType).send(text);
    });
  }
  return app;
}
