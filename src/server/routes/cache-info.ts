// The small fixed routes: cache info and the public key (the index at / is routes/status-page).

import type { FastifyInstance } from 'fastify';

export interface CacheInfoOptions {
  hostname: string;
  publicKey: string | undefined;
}

/** Priority 10: preferred over cache.nixos.org (40), as ncps announces itself. */
const NIX_CACHE_INFO = 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 10\n';

export function registerCacheInfoRoutes(app: FastifyInstance, options: CacheInfoOptions): void {
  for (const url of ['/nix-cache-info', '/upload/nix-cache-info']) {
    app.route({
      method: ['GET', 'HEAD'],
      url,
      handler: async (_request, reply) => reply.type('text/x-nix-cache-info').send(NIX_CACHE_INFO),
    });
  }

  app.route({
    method: ['GET', 'HEAD'],
    url: '/pubkey',
    config: { access: 'public' },
    handler: async (_request, reply) => {
      if (!options.publicKey) return reply.code(404).type('text/plain; charset=utf-8').send('this cache does not sign narinfos\n');
      return reply.type('text/plain; charset=utf-8').send(`${options.publicKey}\n`);
    },
  });
}
