// A hostile upstream binary cache on loopback: it serves the files of a directory (a signed binary
// cache written by `nix copy --to file://DIR`) like any upstream, except where a rule says to
// misbehave: answer a status (429 with Retry-After, 500), hang, redirect (to a loopback service),
// flip a byte, truncate, pause mid-body, rewrite a narinfo (its URL is not covered by the signature),
// or send a body of its own (a decompression bomb). Every request is recorded.
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import type { Transform, Writable } from 'node:stream';
import { constants as zlibConstants, createBrotliCompress, createDeflate, createGzip } from 'node:zlib';
import { serveOnLoopback } from './loopback';

export interface FaultRequest {
  method: string;
  /** Decoded URL path without the query string. */
  path: string;
  headers: http.IncomingHttpHeaders;
}

/** What the upstream does with a request a rule matched. `file` is the served file, if it exists. */
export type FaultAction = (req: http.IncomingMessage, res: http.ServerResponse, file: string | undefined) => Promise<void> | void;

interface Rule {
  match: string | RegExp;
  action: FaultAction;
  /** Applies this many more times (Infinity: until removed). */
  remaining: number;
}

export interface FaultUpstream {
  /** `http://127.0.0.1:PORT` */
  url: string;
  port: number;
  dir: string;
  requests: FaultRequest[];
  /** Requests with `method` whose path ends with the string (or matches the RegExp). */
  count(method: string, match: string | RegExp): number;
  /** Adds a rule for paths ending with `match` (or matching it); the newest matching rule wins.
   * With `times`, the rule applies that many times and then the upstream behaves again. */
  on(match: string | RegExp, action: FaultAction, opts?: { times?: number }): void;
  /** Removes every rule. */
  reset(): void;
  stop(): Promise<void>;
}

function matches(p: string, m: string | RegExp): boolean {
  return typeof m === 'string' ? p.endsWith(m) : m.test(p);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Writes `data` respecting backpressure; false when the client went away. */
async function write(res: http.ServerResponse, data: Buffer): Promise<boolean> {
  if (res.destroyed) return false;
  if (res.write(data)) return true;
  await new Promise<void>((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
  return !res.destroyed;
}

function notFound(res: http.ServerResponse): void {
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found\n');
}

// ---- actions ------------------------------------------------------------------------------

/** Answers `code` with `headers` and a short body (e.g. 429 with `retry-after`). */
export function status(code: number, headers: Record<string, string> = {}, body = `injected ${code}\n`): FaultAction {
  return (_req, res) => {
    res.writeHead(code, { 'content-type': 'text/plain', ...headers });
    res.end(body);
  };
}

/** Accepts the request and never answers (the connection stays open until the upstream stops). */
export function hang(): FaultAction {
  return () => new Promise<void>(() => undefined);
}

/** Redirects to `location` (absolute URL). */
export function redirect(location: string, code = 302): FaultAction {
  return (_req, res) => {
    res.writeHead(code, { location, 'content-length': '0' });
    res.end();
  };
}

/** Sends `body` with `headers` (add `content-encoding` for a compressed answer). */
export function body(data: Buffer | string, headers: Record<string, string> = {}): FaultAction {
  return (_req, res) => {
    const buf = Buffer.from(data);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(buf.length), ...headers });
    res.end(buf);
  };
}

/** Serves the file with its bytes passed through `transform` (same length or not). */
export function transformFile(transform: (data: Buffer) => Buffer, opts: { contentLength?: boolean } = {}): FaultAction {
  return async (_req, res, file) => {
    if (!file) return notFound(res);
    const data = transform(await readFile(file));
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (opts.contentLength !== false) headers['content-length'] = String(data.length);
    res.writeHead(200, headers);
    // In pieces, so that a reader downstream sees the body arrive over time.
    for (let offset = 0; offset < data.length; offset += 64 * 1024) {
      if (!(await write(res, data.subarray(offset, offset + 64 * 1024)))) return;
    }
    res.end();
  };
}

/** Serves another file (e.g. xz bytes under a `.nar.zst` name). */
export function serveFile(file: string): FaultAction {
  return async (_req, res) => {
    const data = await readFile(file);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(data.length) });
    res.end(data);
  };
}

/** The file with the byte at `offset` (negative: from the end) inverted: same size, wrong hash. */
export function flipByte(offset: number, opts: { contentLength?: boolean } = {}): FaultAction {
  return transformFile((data) => {
    const copy = Buffer.from(data);
    const at = offset < 0 ? copy.length + offset : offset;
    copy[at] = (copy[at] ?? 0) ^ 0xff;
    return copy;
  }, opts);
}

/** Announces the whole file (Content-Length, unless disabled), sends `bytes` of it, then closes. */
export function truncate(bytes: number, opts: { contentLength?: boolean } = {}): FaultAction {
  return async (_req, res, file) => {
    if (!file) return notFound(res);
    const data = await readFile(file);
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (opts.contentLength !== false) headers['content-length'] = String(data.length);
    res.writeHead(200, headers);
    await write(res, data.subarray(0, bytes));
    await sleep(50);
    res.destroy();
  };
}

/** Sends the first `bytes` of the file, waits until `resume()` is called (or `ms`), then the rest. */
export function pauseAfter(bytes: number, until: { ms?: number; resume?: Promise<void> }): FaultAction {
  return async (_req, res, file) => {
    if (!file) return notFound(res);
    const data = await readFile(file);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(data.length) });
    if (!(await write(res, data.subarray(0, bytes)))) return;
    await Promise.race([until.resume ?? new Promise(() => undefined), until.ms !== undefined ? sleep(until.ms) : new Promise(() => undefined)]);
    if (await write(res, data.subarray(bytes))) res.end();
  };
}

/** Serves the file at about `bytesPerSecond`. */
export function throttle(bytesPerSecond: number): FaultAction {
  return async (_req, res, file) => {
    if (!file) return notFound(res);
    const data = await readFile(file);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(data.length) });
    const chunk = Math.max(1024, Math.floor(bytesPerSecond / 20));
    const start = Date.now();
    for (let sent = 0; sent < data.length; ) {
      const piece = data.subarray(sent, sent + chunk);
      if (!(await write(res, piece))) return;
      sent += piece.length;
      const wait = start + (sent / bytesPerSecond) * 1000 - Date.now();
      if (wait > 0) await sleep(wait);
    }
    res.end();
  };
}

/** Serves a narinfo with its fields changed by `edit` (Sig lines kept: URL, FileHash and FileSize
 * are not covered by the signature). */
export function rewriteNarinfo(edit: (fields: Map<string, string>) => void): FaultAction {
  return async (_req, res, file) => {
    if (!file) return notFound(res);
    const lines = (await readFile(file, 'utf8')).split('\n').filter(Boolean);
    const fields = new Map<string, string>();
    const sigs: string[] = [];
    for (const line of lines) {
      const i = line.indexOf(': ');
      const key = line.slice(0, i);
      if (key === 'Sig') sigs.push(line.slice(i + 2));
      else fields.set(key, line.slice(i + 2));
    }
    edit(fields);
    const text = [...[...fields].map(([k, v]) => `${k}: ${v}`), ...sigs.map((s) => `Sig: ${s}`)].join('\n') + '\n';
    res.writeHead(200, { 'content-type': 'text/x-nix-narinfo', 'content-length': String(Buffer.byteLength(text)) });
    res.end(text);
  };
}

/**
 * A gzip body that inflates to `decodedBytes` of zeros while being about a thousandth of that on
 * the wire: many identical gzip members back to back (a valid gzip stream).
 */
export async function gzipBomb(decodedBytes: number): Promise<Buffer> {
  const member = 16 << 20;
  const one = await compressZeros(createGzip({ level: 9 }), member);
  return Buffer.concat(Array.from({ length: Math.ceil(decodedBytes / member) }, () => one));
}

/** `decodedBytes` of zeros compressed for `Content-Encoding: encoding` (br, deflate, zstd, gzip). */
export async function zeroBomb(encoding: 'gzip' | 'br' | 'deflate' | 'zstd', decodedBytes: number): Promise<Buffer> {
  switch (encoding) {
    case 'gzip':
      return gzipBomb(decodedBytes);
    case 'br':
      return compressZeros(createBrotliCompress({ params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 4 } }), decodedBytes);
    case 'deflate':
      return compressZeros(createDeflate({ level: 9 }), decodedBytes);
    case 'zstd': {
      const child = spawn('zstd', ['-c', '-q'], { stdio: ['pipe', 'pipe', 'ignore'] });
      const out = new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        child.stdout.on('data', (c: Buffer) => chunks.push(c));
        child.once('error', reject);
        child.once('close', (code) => (code === 0 ? resolve(Buffer.concat(chunks)) : reject(new Error(`zstd exited ${code}`))));
      });
      await feedZeros(child.stdin, decodedBytes);
      return out;
    }
  }
}

async function feedZeros(sink: Writable, bytes: number): Promise<void> {
  const block = Buffer.alloc(1 << 20);
  for (let left = bytes; left > 0; left -= block.length) {
    if (!sink.write(left >= block.length ? block : block.subarray(0, left))) await once(sink, 'drain');
  }
  sink.end();
}

async function compressZeros(compressor: Transform, bytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  compressor.on('data', (c: Buffer) => chunks.push(c));
  const ended = once(compressor, 'end');
  await feedZeros(compressor, bytes);
  await ended;
  return Buffer.concat(chunks);
}

// ---- the server ---------------------------------------------------------------------------

export async function startFaultUpstream(dir: string): Promise<FaultUpstream> {
  const root = path.resolve(dir);
  const requests: FaultRequest[] = [];
  let rules: Rule[] = [];

  const fileFor = async (decoded: string): Promise<string | undefined> => {
    if (decoded.split('/').includes('..') || decoded.includes('\0')) return undefined;
    const file = path.join(root, decoded);
    if (!file.startsWith(root + path.sep)) return undefined;
    const info = await stat(file).catch(() => undefined);
    return info?.isFile() ? file : undefined;
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const method = req.method ?? 'GET';
    const raw = (req.url ?? '/').split('?')[0] ?? '/';
    let decoded = raw;
    try {
      decoded = decodeURIComponent(raw);
    } catch {
      /* keep it raw */
    }
    requests.push({ method, path: decoded, headers: req.headers });
    req.resume();
    const file = await fileFor(decoded);
    const rule = [...rules].reverse().find((r) => r.remaining > 0 && matches(decoded, r.match));
    if (rule) {
      rule.remaining--;
      await rule.action(req, res, file);
      return;
    }
    if (method !== 'GET' && method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' });
      res.end();
      return;
    }
    if (!file) return notFound(res);
    const size = (await stat(file)).size;
    const type = file.endsWith('.narinfo') ? 'text/x-nix-narinfo' : 'application/octet-stream';
    res.writeHead(200, { 'content-type': type, 'content-length': String(size) });
    if (method === 'HEAD') {
      res.end();
      return;
    }
    await pipeline(createReadStream(file), res).catch(() => undefined);
  };

  const server = await serveOnLoopback(handle);
  return {
    url: server.url,
    port: server.port,
    dir: root,
    requests,
    count: (method, match) => requests.filter((r) => r.method === method && matches(r.path, match)).length,
    on(match, action, opts = {}) {
      rules.push({ match, action, remaining: opts.times ?? Infinity });
    },
    reset() {
      rules = [];
    },
    stop: server.stop,
  };
}

/** A service on loopback that must never be reached through ncps: it counts requests and answers
 * every one with `secret`. */
export interface LoopbackService {
  url: string;
  port: number;
  hits: () => number;
  stop(): Promise<void>;
}

export async function startLoopbackService(secret = 'internal secret\n'): Promise<LoopbackService> {
  let hits = 0;
  const server = await serveOnLoopback(async (_req, res) => {
    hits++;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(secret)) });
    res.end(secret);
  });
  return { url: server.url, port: server.port, hits: () => hits, stop: server.stop };
}
