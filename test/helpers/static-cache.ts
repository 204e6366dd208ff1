// A minimal upstream binary cache on loopback: serves the files of a directory (as written by
// `nix copy --to file://DIR`), records every request, and can be throttled or made to fail.
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { serveOnLoopback } from './loopback';

export type FailureMode = 'none' | 'hang' | '500';

export interface RecordedRequest {
  method: string;
  /** Decoded URL path, without the query string. */
  path: string;
}

export interface StaticCache {
  /** `http://127.0.0.1:PORT` (no trailing slash). */
  url: string;
  port: number;
  dir: string;
  requests: RecordedRequest[];
  /** Requests with this method whose path ends with the given suffix (or matches the RegExp). */
  count(method: string, pathSuffixOrRegex: string | RegExp): number;
  clearRequests(): void;
  /** 'hang': accept requests but never answer; '500': answer 500; 'none': serve normally.
   * With `match`, only request paths ending with it (string) or matching it (RegExp) fail. */
  setFailure(mode: FailureMode, match?: string | RegExp): void;
  /** Closes the listener and destroys every open connection. */
  stop(): Promise<void>;
}

function contentType(file: string): string {
  if (file.endsWith('.narinfo')) return 'text/x-nix-narinfo';
  if (path.basename(file) === 'nix-cache-info') return 'text/x-nix-cache-info';
  return 'application/octet-stream';
}

function matches(p: string, m: string | RegExp): boolean {
  return typeof m === 'string' ? p.endsWith(m) : m.test(p);
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** Writes `file` to `res` at about `bytesPerSecond`, in small chunks; stops when the client goes. */
async function sendThrottled(res: http.ServerResponse, file: string, size: number, bytesPerSecond: number): Promise<void> {
  const chunkSize = Math.max(1024, Math.floor(bytesPerSecond / 50));
  const fh = await open(file, 'r');
  let gone = false;
  res.on('close', () => {
    gone = true;
  });
  try {
    const start = Date.now();
    let sent = 0;
    while (sent < size && !gone) {
      const buf = Buffer.allocUnsafe(Math.min(chunkSize, size - sent));
      const { bytesRead } = await fh.read(buf, 0, buf.length, sent);
      if (bytesRead === 0) break;
      const ok = res.write(buf.subarray(0, bytesRead));
      sent += bytesRead;
      if (!ok && !gone) {
        await new Promise<void>((resolve) => {
          const fin = (): void => {
            res.off('drain', fin);
            res.off('close', fin);
            resolve();
          };
          res.on('drain', fin);
          res.on('close', fin);
        });
      }
      const due = start + (sent / bytesPerSecond) * 1000;
      const wait = due - Date.now();
      if (wait > 0 && !gone) await sleep(wait);
    }
    if (!gone) res.end();
  } finally {
    await fh.close();
  }
}

export async function startStaticCache(dir: string, opts: { bytesPerSecond?: number } = {}): Promise<StaticCache> {
  const root = path.resolve(dir);
  const requests: RecordedRequest[] = [];
  let failure: FailureMode = 'none';
  let failureMatch: string | RegExp | undefined;

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const method = req.method ?? 'GET';
    const rawPath = (req.url ?? '/').split('?')[0] ?? '/';
    let decoded: string;
    try {
      decoded = decodeURIComponent(rawPath);
    } catch {
      decoded = rawPath;
    }
    requests.push({ method, path: decoded });

    if (failure !== 'none' && (failureMatch === undefined || matches(decoded, failureMatch))) {
      if (failure === 'hang') return; // keep the connection open, never answer
      res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end('injected failure\n');
      return;
    }
    if (method !== 'GET' && method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' });
      res.end();
      return;
    }
    const segments = decoded.split('/');
    if (segments.includes('..') || decoded.includes('\0') || decoded.includes('\\')) {
      res.writeHead(400, { 'Content-Type': 'text/plain' });
      res.end('bad path\n');
      return;
    }
    const file = path.join(root, decoded);
    if (file !== root && !file.startsWith(root + path.sep)) {
      res.writeHead(400);
      res.end();
      return;
    }
    let size: number;
    try {
      const st = await stat(file);
      if (!st.isFile()) throw new Error('not a file');
      size = st.size;
    } catch {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('404 not found\n');
      return;
    }
    res.writeHead(200, { 'Content-Type': contentType(file), 'Content-Length': String(size) });
    if (method === 'HEAD') {
      res.end();
      return;
    }
    if (opts.bytesPerSecond && opts.bytesPerSecond > 0) {
      await sendThrottled(res, file, size, opts.bytesPerSecond);
    } else {
      await pipeline(createReadStream(file), res).catch(() => undefined);
    }
  };

  const server = await serveOnLoopback(handle);
  return {
    url: server.url,
    port: server.port,
    dir: root,
    requests,
    count(method, m) {
      return requests.filter((r) => r.method === method && matches(r.path, m)).length;
    },
    clearRequests() {
      requests.length = 0;
    },
    setFailure(mode, match) {
      failure = mode;
      failureMatch = match;
    },
    stop: server.stop,
  };
}
