// Tokens for reads and writes. Nix sends netrc credentials as HTTP Basic auth and other clients
// send Bearer tokens, so both carry the token: Bearer <token>, or Basic with the token as password.
// Comparison is constant-time over fixed-length digests, so neither content nor length leaks.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

export type Access = 'public' | 'read' | 'write';

export interface AuthOptions {
  getToken: string;
  /** Token for uploads, deletes and pins; falls back to the read token when empty. */
  putToken: string;
}

const digest = (value: string) => createHash('sha256').update(value).digest();

function presentedToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const [scheme, value = ''] = header.split(/\s+/, 2);
  switch (scheme?.toLowerCase()) {
    case 'bearer':
      return value;
    case 'basic': {
      const decoded = Buffer.from(value, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      return colon === -1 ? undefined : decoded.slice(colon + 1);
    }
    default:
      return undefined;
  }
}

export type AccessVerdict = 'allowed' | 'missing' | 'invalid';

/** Decides whether an Authorization header grants `access`; shared by the hook and the hot path. */
export function createAccessCheck(options: AuthOptions): (access: Access, authorization: string | undefined) => AccessVerdict {
  const readDigest = options.getToken ? digest(options.getToken) : undefined;
  const writeToken = options.putToken || options.getToken;
  const writeDigest = writeToken ? digest(writeToken) : undefined;

  return (access, authorization) => {
    const expected = access === 'write' ? writeDigest : access === 'read' ? readDigest : undefined;
    if (!expected) return 'allowed';
    const token = presentedToken(authorization);
    if (token === undefined) return 'missing';
    const presented = digest(token);
    if (timingSafeEqual(presented, expected)) return 'allowed';
    // Whoever may write may also read: `nix copy` sends its one netrc password on the reads it
    // makes to find what is already uploaded.
    if (access === 'read' && writeDigest && timingSafeEqual(presented, writeDigest)) return 'allowed';
    return 'invalid';
  };
}

export function createAuthHook(options: AuthOptions) {
  const check = createAccessCheck(options);
  return async function authorize(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const verdict = check(request.routeOptions.config?.access ?? 'read', request.headers.authorization);
    if (verdict === 'allowed') return;
    reply
      .code(401)
      .header('www-authenticate', 'Basic realm="ncps", charset="UTF-8"')
      .type('text/plain; charset=utf-8')
      .send(verdict === 'missing' ? 'authentication required\n' : 'invalid token\n');
  };
}
