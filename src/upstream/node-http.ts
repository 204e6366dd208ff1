// Upstream GETs with Node's own HTTP client, for when undici cannot run: undici parses HTTP with
// WebAssembly, which Node.js has only with its JIT, and the JIT is off where memory may not be
// written and then executed (MemoryDenyWriteExecute=, as nixpkgs' services.ncps sets it; the
// package's bin/ncps then starts Node.js --jitless). Same contract as the undici path in pool.ts:
// the connect and response-header timeouts, a 60 s limit between body bytes, up to three
// redirects, and every connection (redirects included) only to an address the destination policy
// allows.

import http, { type IncomingHttpHeaders } from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import { isIP } from 'node:net';
import type { Readable } from 'node:stream';
import type { DestinationPolicy } from './destinations';

export interface UpstreamResponse {
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: Readable;
}

export interface NodeHttpOptions {
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  destinations: DestinationPolicy;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTIONS = 3;

/** Whether undici can work in this process (WebAssembly is there only with the JIT). */
export function undiciUsable(): boolean {
  return typeof (globalThis as { WebAssembly?: unknown }).WebAssembly !== 'undefined';
}

/**
 * Without WebAssembly, Node's own bundled undici (behind the global fetch, Request, Response…,
 * which fastify looks at) fails its HTTP parser set-up the first time it loads, with a rejected
 * promise nothing awaits. Nothing here uses that client, so that one rejection is let pass; any
 * other unhandled rejection still ends the process as usual.
 */
export function tolerateMissingWebAssembly(): void {
  if (undiciUsable()) return;
  process.on('unhandledRejection', (reason) => {
    if (reason instanceof ReferenceError && /WebAssembly is not defined/.test(reason.message)) return;
    throw reason;
  });
}

export class NodeHttpClient {
  private readonly httpAgent = new http.Agent({ keepAlive: true, keepAliveMsecs: 30_000 });
  private readonly httpsAgent = new https.Agent({ keepAlive: true, keepAliveMsecs: 30_000 });

  constructor(private readonly options: NodeHttpOptions) {}

  async get(url: URL, headers: Record<string, string>, signal?: AbortSignal): Promise<UpstreamResponse> {
    let current = url;
    for (let hop = 0; ; hop++) {
      const res = await this.once(current, headers, signal);
      const location = res.headers.location;
      if (!REDIRECTS.has(res.statusCode) || !location || hop >= MAX_REDIRECTIONS) return res;
      res.body.resume();
      current = new URL(location, current);
      if (current.protocol !== 'http:' && current.protocol !== 'https:') {
        throw new Error(`refused to follow a redirect to a ${current.protocol} URL`);
      }
    }
  }

  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }

  private once(url: URL, headers: Record<string, string>, signal?: AbortSignal): Promise<UpstreamResponse> {
    const secure = url.protocol === 'https:';
    const port = Number(url.port) || (secure ? 443 : 80);
    const { destinations, connectTimeoutMs, headersTimeoutMs, bodyTimeoutMs } = this.options;
    // Resolves the name and connects only to an address the policy allows (as the undici connector does).
    const lookup: LookupFunction = (hostname, lookupOptions, callback) => {
      destinations.addressFor(hostname, port).then(
        (address) => {
          const family = isIP(address) || 4;
          if ((lookupOptions as { all?: boolean }).all) (callback as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [{ address, family }]);
          else callback(null, address, family);
        },
        (error: Error) => callback(error as NodeJS.ErrnoException, '', 0),
      );
    };
    return new Promise((resolve, reject) => {
      const request = (secure ? https : http).request(url, {
        method: 'GET',
        headers: { ...headers, connection: 'keep-alive' },
        agent: secure ? this.httpsAgent : this.httpAgent,
        lookup,
        ...(signal ? { signal } : {}),
      });
      let answered = false;
      const timeout = (message: string) => Object.assign(new Error(message), { code: 'ETIMEDOUT' });
      const headersTimer = setTimeout(() => request.destroy(timeout(`no response headers within ${headersTimeoutMs} ms from ${url.host}`)), headersTimeoutMs);
      request.once('socket', (socket) => {
        if (socket.connecting) {
          const connectTimer = setTimeout(() => request.destroy(timeout(`connecting to ${url.host} took longer than ${connectTimeoutMs} ms`)), connectTimeoutMs);
          socket.once('connect', () => clearTimeout(connectTimer));
          socket.once('secureConnect', () => clearTimeout(connectTimer));
          socket.once('close', () => clearTimeout(connectTimer));
        }
      });
      request.once('response', (res) => {
        answered = true;
        clearTimeout(headersTimer);
        // Between body bytes, as undici's bodyTimeout.
        res.setTimeout(bodyTimeoutMs, () => res.destroy(timeout(`no body bytes from ${url.host} for ${bodyTimeoutMs} ms`)));
        resolve({ statusCode: res.statusCode ?? 0, headers: res.headers, body: res });
      });
      request.once('error', (error) => {
        clearTimeout(headersTimer);
        if (!answered) reject(error);
      });
      request.end();
    });
  }
}
