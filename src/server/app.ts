// Builds the fastify application: routes translate HTTP into calls on the cache core and back.
// Nothing about storage or upstreams lives here.

import Fastify, { type FastifyInstance } from 'fastify';
import type { Cache, CacheSource } from '../cache/cache';
import type { Logger } from '../telemetry/logger';
import { HttpError } from './errors';
import { registerCacheInfoRoutes } from './routes/cache-info';
import { registerNarRoutes } from './routes/nar';
import { registerNarInfoRoutes } from './routes/narinfo';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by cache routes: whether the answer came from our storage or from upstream. */
    cacheSource: CacheSource | undefined;
    startedAt: bigint;
    socketBytesAtStart: number;
  }
  interface FastifyContextConfig {
    /** Not request-logged (health checks). */
    quiet?: boolean;
  }
}

export interface AppOptions {
  cache: Cache;
  logger: Logger;
  hostname: string;
  publicKey: string | undefined;
}

export function buildApp(options: AppOptions): FastifyInstance {
  const { logger } = options;
  const app = Fastify({
    logger: false,
    // HEAD is routed explicitly: an automatic HEAD would run the GET handler and download NARs.
    exposeHeadRoutes: false,
    // Requests already accepted during shutdown are answered, not refused with 503 (Nix would
    // disable the substituter).
    return503OnClosing: false,
    routerOptions: { maxParamLength: 256 },
  });

  app.decorateRequest('cacheSource', undefined);
  app.decorateRequest('startedAt', 0n);
  app.decorateRequest('socketBytesAtStart', 0);

  app.addHook('onRequest', async (request) => {
    request.startedAt = process.hrtime.bigint();
    request.socketBytesAtStart = request.raw.socket?.bytesWritten ?? 0;
  });

  // One line per request: what was asked, the answer, how big, how long, and hit or miss.
  app.addHook('onResponse', async (request, reply) => {
    if (reply.routeOptions.config?.quiet) return;
    const ms = Number(process.hrtime.bigint() - request.startedAt) / 1e6;
    const socket = request.raw.socket;
    const bytes = socket ? socket.bytesWritten - request.socketBytesAtStart : undefined;
    logger.info(
      {
        method: request.method,
        url: request.url,
        status: reply.statusCode,
        bytes,
        ms: Math.round(ms * 10) / 10,
        cache: request.cacheSource,
      },
      'request',
    );
  });

  app.setNotFoundHandler(async (_request, reply) => reply.code(404).type('text/plain; charset=utf-8').send('not found\n'));

  app.setErrorHandler(async (error, request, reply) => {
    if (error instanceof HttpError) {
      return reply.code(error.statusCode).type('text/plain; charset=utf-8').send(`${error.message}\n`);
    }
    const status = (error as { statusCode?: number }).statusCode;
    if (status !== undefined && status >= 400 && status < 500) {
      return reply.code(status).type('text/plain; charset=utf-8').send(`${(error as Error).message}\n`);
    }
    logger.error({ err: error, url: request.url }, 'request failed');
    return reply.code(500).type('text/plain; charset=utf-8').send('internal error\n');
  });

  registerCacheInfoRoutes(app, { hostname: options.hostname, publicKey: options.publicKey });
  registerNarInfoRoutes(app, options.cache);
  registerNarRoutes(app, options.cache);
  return app;
}
