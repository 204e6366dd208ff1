// Raw HTTP client for tests. Uses node:http directly so request paths are sent exactly as
// given (fetch/WHATWG URL would normalise away `..` segments, hiding path-traversal attempts).
import { createHash } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import http, { type IncomingHttpHeaders } from 'node:http';

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text: string;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Overall deadline for the whole exchange. Default 30 s. */
  timeoutMs?: number;
}

function target(baseUrl: string): { hostname: string; port: number } {
  const u = new URL(baseUrl);
  return { hostname: u.hostname, port: Number(u.port || 80) };
}

/** Sends one request with `rawPath` verbatim as the request target. Rejects on network
 * errors and on timeout; any HTTP status resolves. */
export function request(baseUrl: string, rawPath: string, opts: RequestOptions = {}): Promise<HttpResponse> {
  const { hostname, port } = target(baseUrl);
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const req = http.request(
      { hostname, port, path: rawPath, method: opts.method ?? 'GET', headers: opts.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
          const body = Buffer.concat(chunks);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString('utf8') });
        });
        res.on('error', (e) => {
          clearTimeout(timer);
          reject(e);
        });
      },
    );
    const timer = setTimeout(() => {
      req.destroy(new Error(`${opts.method ?? 'GET'} ${rawPath}: no complete answer within ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.end(opts.body);
  });
}

export interface HashedDownload {
  status: number;
  headers: IncomingHttpHeaders;
  /** Body bytes received. */
  bytes: number;
  /** sha256 of the body received (hex). */
  sha256: string;
  /** True when we aborted the download ourselves (abortAfterBytes). */
  aborted: boolean;
}

/** GETs `rawPath`, hashing the body as it streams (nothing is buffered in memory). With
 * `abortAfterBytes`, destroys the connection once that many bytes have arrived; with `saveTo`,
 * also writes the body to that file (complete once the promise resolves). */
export async function downloadHashed(
  baseUrl: string,
  rawPath: string,
  opts: { timeoutMs?: number; abortAfterBytes?: number; saveTo?: string } = {},
): Promise<HashedDownload> {
  const file = opts.saveTo === undefined ? undefined : createWriteStream(opts.saveTo);
  try {
    return await downloadInner(baseUrl, rawPath, opts, file);
  } finally {
    if (file) await new Promise<void>((resolve) => file.end(() => resolve()));
  }
}

function downloadInner(
  baseUrl: string,
  rawPath: string,
  opts: { timeoutMs?: number; abortAfterBytes?: number },
  file: WriteStream | undefined,
): Promise<HashedDownload> {
  const { hostname, port } = target(baseUrl);
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (f: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      f();
    };
    const req = http.request({ hostname, port, path: rawPath, method: 'GET', agent: false }, (res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      const finish = (aborted: boolean): void =>
        done(() =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, bytes, sha256: hash.digest('hex'), aborted }),
        );
      res.on('data', (c: Buffer) => {
        if (settled) return;
        hash.update(c);
        file?.write(c);
        bytes += c.length;
        if (opts.abortAfterBytes !== undefined && bytes >= opts.abortAfterBytes) {
          finish(true);
          req.destroy();
        }
      });
      res.on('end', () => {
        if (!res.complete) done(() => reject(new Error(`${rawPath}: connection closed after ${bytes} bytes`)));
        else finish(false);
      });
      res.on('error', (e) => done(() => reject(e)));
      res.on('close', () => {
        if (!res.complete) done(() => reject(new Error(`${rawPath}: connection closed after ${bytes} bytes`)));
      });
    });
    const timer = setTimeout(() => {
      done(() => reject(new Error(`GET ${rawPath}: not finished within ${timeoutMs} ms`)));
      req.destroy();
    }, timeoutMs);
    req.on('error', (e) => done(() => reject(e)));
    req.end();
  });
}
