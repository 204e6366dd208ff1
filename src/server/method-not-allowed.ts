// A request whose path exists but not for its method is answered 405 with `Allow` (HTTP's rule),
// not 404: `PUT /nix-cache-info` is a wrong method, not a missing file. Fastify's router only says
// "no route", so the registered routes are kept here as path patterns and matched against the URL.

import type { FastifyInstance } from 'fastify';

interface RoutePattern {
  methods: string[];
  /** Path segments; `null` for a parameter (any one non-empty segment). */
  segments: Array<string | null>;
}

export class RouteMethods {
  private readonly routes: RoutePattern[] = [];

  /** Records every route added to `app` from now on. */
  watch(app: FastifyInstance): void {
    app.addHook('onRoute', (route) => {
      const methods = ([] as string[]).concat(route.method);
      this.routes.push({ methods, segments: route.url.split('/').map((s) => (s.startsWith(':') ? null : s)) });
    });
  }

  /** Methods some route accepts for this request URL (path only), in a stable order. */
  allowedFor(url: string): string[] {
    const segments = (url.split('?')[0] ?? '').split('/');
    const allowed = new Set<string>();
    for (const route of this.routes) {
      if (route.segments.length !== segments.length) continue;
      if (route.segments.every((s, i) => (s === null ? segments[i] !== '' : s === segments[i]))) {
        for (const method of route.methods) allowed.add(method);
      }
    }
    return ['GET', 'HEAD', 'PUT', 'POST', 'DELETE'].filter((m) => allowed.has(m));
  }
}
