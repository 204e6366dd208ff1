// Liveness and readiness. /healthz answers as long as the process serves HTTP (what the Go ncps
// and its chart probe); /readyz asks the database, storage and upstreams (see
// server/readiness) and answers 503 with the reason when one of them cannot be used.
// Both are public and not request-logged: probes call them every few seconds.

import type { FastifyInstance } from 'fastify';
import type { Readiness } from '../readiness';

export function registerHealthRoutes(app: FastifyInstance, readiness: Readiness | undefined): void {
  app.route({
    method: ['GET', 'HEAD'],
    url: '/healthz',
    config: { quiet: true, access: 'public' },
    handler: async (_request, reply) => reply.type('text/plain; charset=utf-8').send('OK\n'),
  });

  if (!readiness) return;
  app.route({
    method: ['GET', 'HEAD'],
    url: '/readyz',
    config: { quiet: true, access: 'public' },
    handler: async (_request, reply) => {
      const report = await readiness.report();
      return reply
        .code(report.ready ? 200 : 503)
        .header('cache-control', 'no-store')
        .type('application/json; charset=utf-8')
        .send(`${JSON.stringify(report)}\n`);
    },
  });
}
