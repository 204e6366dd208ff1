// The upstream caches ncps pulls from. Every healthy upstream is asked in parallel; the answer of
// the best-priority upstream that has the path wins, so a fast low-priority mirror never shadows a
// preferred one, yet a slow preferred one that does not have the path costs only its own latency.
// Anything that goes wrong upstream (timeouts, 5xx, bad narinfos) counts as "not there".

import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { brotliDecompress, gunzip, inflate } from 'node:zlib';
import { Agent, buildConnector, interceptors, request, type Dispatcher } from 'undici';
import { NodeHttpClient, undiciUsable, type UpstreamResponse } from './node-http';
import { parseNarInfo, type NarInfo } from '../nix';
import type { Logger } from '../telemetry/logger';
import { UpstreamBackoff } from './backoff';
import { DestinationPolicy } from './destinations';
import { basicAuthFor, type Netrc } from './netrc';

export interface Upstream {
  /** Base URL with a trailing slash and without the priority parameter. */
  baseUrl: URL;
  /** Lower is preferred, as in nix-cache-info. */
  priority: number;
  /** Whether the priority came from the URL (then nix-cache-info does not override it). */
  priorityFixed: boolean;
  /** `?allow-unsigned=true` in its URL: narinfos no configured key signed are accepted from it. */
  allowUnsigned: boolean;
  healthy: boolean;
  /** The last health check: when it ended, how long it took, and why it failed (if it did). */
  lastCheck?: HealthCheck;
  /** Left alone for a while after a failure (5xx, 429, timeout), wholly or for one path. */
  backoff: UpstreamBackoff;
}

/** What the upstreams said about a path. */
export interface Lookup<T> {
  found?: T;
  /** True only when every upstream that was asked answered "not here" (404/403/410 or an answer
   * that does not count): the one outcome worth remembering. Failures and upstreams left alone
   * after a failure make it false. */
  absent: boolean;
}

/** An upstream answer that is a failure, not an absence. */
class UpstreamFailure extends Error {
  constructor(
    readonly status: number,
    readonly retryAfter: string | undefined,
  ) {
    super(`HTTP ${status}`);
  }
}

export interface HealthCheck {
  at: number;
  latencyMs: number;
  error?: string;
}

export interface UpstreamNarInfo {
  narInfo: NarInfo;
  upstream: Upstream;
  /** The narinfo's URL field resolved against the upstream, i.e. where its NAR is. */
  narUrl: URL;
}

export interface UpstreamBody {
  body: Readable;
  contentLength?: number;
}

export interface UpstreamPoolOptions {
  urls: readonly string[];
  dialerTimeoutMs: number;
  responseHeaderTimeoutMs: number;
  netrc?: Netrc;
  logger: Logger;
  healthIntervalMs?: number;
  /** Non-public hosts NAR URLs and redirects may point to (--cache-upstream-allowed-host). */
  allowedHosts?: readonly string[];
  /** Ports ncps listens on: never fetched from on this machine. */
  ownPorts?: readonly number[];
}

const DEFAULT_PRIORITY = 50;
/** The upstream URL parameter that opts in to unsigned narinfos (see src/upstream/trust.ts). */
export const ALLOW_UNSIGNED_PARAM = 'allow-unsigned';
const MAX_NARINFO_BYTES = 1 << 20;

export function parseUpstreamUrl(text: string): Upstream {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`invalid upstream URL: ${text}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`upstream URL must be http or https: ${text}`);
  }
  const priorityParam = url.searchParams.get('priority');
  url.searchParams.delete('priority');
  const allowUnsignedParam = url.searchParams.get(ALLOW_UNSIGNED_PARAM);
  url.searchParams.delete(ALLOW_UNSIGNED_PARAM);
  let allowUnsigned = false;
  if (allowUnsignedParam !== null) {
    if (!/^(true|false|1|0)$/.test(allowUnsignedParam)) throw new Error(`${ALLOW_UNSIGNED_PARAM} must be true or false in upstream URL: ${text}`);
    allowUnsigned = allowUnsignedParam === 'true' || allowUnsignedParam === '1';
  }
  let priority = DEFAULT_PRIORITY;
  if (priorityParam !== null) {
    if (!/^\d+$/.test(priorityParam)) throw new Error(`invalid priority in upstream URL: ${text}`);
    priority = Number(priorityParam);
  }
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  return { baseUrl: url, priority, priorityFixed: priorityParam !== null, allowUnsigned, healthy: true, backoff: new UpstreamBackoff() };
}

export class UpstreamPool {
  readonly upstreams: Upstream[];
  private readonly agent: Agent;
  private readonly dispatcher: Dispatcher;
  /** Node's own HTTP client where undici cannot run (no WebAssembly without the JIT: ./node-http.ts). */
  private readonly fallback: NodeHttpClient | undefined;
  private readonly options: UpstreamPoolOptions;
  private readonly destinations: DestinationPolicy;
  private healthTimer?: NodeJS.Timeout;

  constructor(options: UpstreamPoolOptions) {
    this.options = options;
    this.upstreams = options.urls.map(parseUpstreamUrl);
    this.destinations = new DestinationPolicy({
      upstreams: this.upstreams.map((u) => u.baseUrl),
      ...(options.allowedHosts ? { allowedHosts: options.allowedHosts } : {}),
      ...(options.ownPorts ? { ownPorts: options.ownPorts } : {}),
    });
    this.agent = new Agent({
      // Every connection, redirects included, goes only where the destination policy allows.
      connect: this.destinations.connector(buildConnector({ timeout: options.dialerTimeoutMs })),
      headersTimeout: options.responseHeaderTimeoutMs,
      // Between body chunks; a stalled upstream must not hold a download forever.
      bodyTimeout: 60_000,
      keepAliveTimeout: 30_000,
    });
    this.dispatcher = this.agent.compose(interceptors.redirect({ maxRedirections: 3 }));
    this.fallback = undiciUsable()
      ? undefined
      : new NodeHttpClient({
          connectTimeoutMs: options.dialerTimeoutMs,
          headersTimeoutMs: options.responseHeaderTimeoutMs,
          bodyTimeoutMs: 60_000,
          destinations: this.destinations,
        });
  }

  /** Checks every upstream now, then periodically in the background. */
  async start(): Promise<void> {
    await this.checkHealth();
    const interval = this.options.healthIntervalMs ?? 60_000;
    this.healthTimer = setInterval(() => void this.checkHealth(), interval);
    this.healthTimer.unref();
  }

  /** Whether every upstream has been checked at least once since start. */
  get checked(): boolean {
    return this.upstreams.every((u) => u.lastCheck !== undefined);
  }

  async checkHealth(): Promise<void> {
    await Promise.all(
      this.upstreams.map(async (upstream) => {
        const url = new URL('nix-cache-info', upstream.baseUrl);
        const started = performance.now();
        let error: string | undefined;
        try {
          const res = await this.get(url);
          if (res.statusCode === 200) {
            const text = await readLimited(res.body, MAX_NARINFO_BYTES);
            const priority = /^Priority:\s*(\d+)\s*$/m.exec(text);
            if (priority && !upstream.priorityFixed) upstream.priority = Number(priority[1]);
          } else {
            res.body.resume();
            error = `nix-cache-info answered HTTP ${res.statusCode}`;
          }
        } catch (failure) {
          error = (failure as Error).message || String(failure);
        }
        const healthy = error === undefined;
        upstream.lastCheck = { at: Date.now(), latencyMs: performance.now() - started, ...(error ? { error } : {}) };
        if (healthy !== upstream.healthy) {
          // A change is worth a line, with why; a state that stays is not repeated every minute.
          if (healthy) this.options.logger.info({ upstream: upstream.baseUrl.href }, 'upstream is healthy');
          else this.options.logger.warn({ upstream: upstream.baseUrl.href, reason: error }, 'upstream is unhealthy');
        } else if (!healthy) {
          this.options.logger.debug({ upstream: upstream.baseUrl.href, reason: error }, 'upstream is still unhealthy');
        }
        upstream.healthy = healthy;
      }),
    );
  }

  /** Healthy upstreams by priority; all of them when none is healthy (a stale verdict beats none). */
  private candidates(): Upstream[] {
    const healthy = this.upstreams.filter((u) => u.healthy);
    return [...(healthy.length > 0 ? healthy : this.upstreams)].sort((a, b) => a.priority - b.priority);
  }

  /** Candidates not being left alone for `path` after a failure, and whether any were skipped. */
  private available(path: string): { upstreams: Upstream[]; skipped: boolean } {
    const now = Date.now();
    const all = this.candidates();
    const upstreams = all.filter((u) => u.backoff.available(path, now));
    return { upstreams, skipped: upstreams.length < all.length };
  }

  /** Records how an upstream's answer went: a failure backs it off, anything else resets that. */
  private outcome(upstream: Upstream, path: string, error: Error | undefined): void {
    if (!error) {
      upstream.backoff.succeeded(path);
      return;
    }
    const failure = error instanceof UpstreamFailure ? error : undefined;
    const wide = failure ? failure.status === 429 || failure.retryAfter !== undefined : isUnreachable(error);
    const delayMs = upstream.backoff.failed(path, wide ? 'upstream' : 'path', failure?.retryAfter);
    this.options.logger.warn(
      {
        upstream: upstream.baseUrl.href,
        path,
        err: error.message,
        retryInMs: delayMs,
        scope: wide ? 'upstream' : 'path',
        ...(failure?.retryAfter ? { retryAfter: failure.retryAfter } : {}),
      },
      'upstream fetch failed; not asking it again for a while',
    );
  }

  /**
   * Asks the upstreams for a narinfo. `accept` decides whether an upstream's answer counts (the
   * cache core checks the store path and the signatures there); a rejected answer is "not there".
   */
  async fetchNarInfo(hash: string, accept: (narInfo: NarInfo, upstream: Upstream) => boolean): Promise<Lookup<UpstreamNarInfo>> {
    const path = `${hash}.narinfo`;
    const { upstreams: candidates, skipped } = this.available(path);
    const controller = new AbortController();
    let failed = skipped;
    const attempts = candidates.map((upstream) =>
      this.fetchNarInfoFrom(upstream, hash, controller.signal).then(
        async (narInfo) => {
          this.outcome(upstream, path, undefined);
          if (!narInfo || !accept(narInfo, upstream)) return undefined;
          return (await this.narUrlAllowed(upstream, hash, narInfo)) ? narInfo : undefined;
        },
        (error: Error) => {
          if (!controller.signal.aborted) {
            failed = true;
            this.outcome(upstream, path, error);
          }
          return undefined;
        },
      ),
    );
    try {
      for (let i = 0; i < candidates.length; i++) {
        const narInfo = await attempts[i];
        if (narInfo) {
          const upstream = candidates[i]!;
          return { found: { narInfo, upstream, narUrl: new URL(narInfo.url, upstream.baseUrl) }, absent: false };
        }
      }
      return { absent: !failed };
    } finally {
      controller.abort();
    }
  }

  /** A narinfo whose NAR lives where ncps may not fetch from is not served at all. */
  private async narUrlAllowed(upstream: Upstream, hash: string, narInfo: NarInfo): Promise<boolean> {
    try {
      await this.destinations.check(new URL(narInfo.url, upstream.baseUrl));
      return true;
    } catch (error) {
      this.options.logger.warn({ upstream: upstream.baseUrl.href, hash, url: narInfo.url, err: (error as Error).message }, 'upstream narinfo points at a NAR ncps may not fetch; ignored');
      return false;
    }
  }

  private async fetchNarInfoFrom(upstream: Upstream, hash: string, signal: AbortSignal): Promise<NarInfo | undefined> {
    const res = await this.get(new URL(`${hash}.narinfo`, upstream.baseUrl), signal);
    if (res.statusCode !== 200) {
      res.body.resume();
      if (isAbsent(res.statusCode)) return undefined;
      throw failureOf(res);
    }
    const text = await readLimited(res.body, MAX_NARINFO_BYTES);
    try {
      return parseNarInfo(text);
    } catch (error) {
      this.options.logger.warn({ upstream: upstream.baseUrl.href, hash, err: (error as Error).message }, 'upstream sent an invalid narinfo');
      return undefined;
    }
  }

  /**
   * A small file (NAR listing, build log) by its path relative to the upstreams, from the
   * best-priority upstream that has it. Content-Encoding is undone, so what is returned is the file.
   */
  async fetchSmallFile(relative: string, limit: number): Promise<Lookup<Buffer>> {
    const { upstreams, skipped } = this.available(relative);
    let failed = skipped;
    for (const upstream of upstreams) {
      try {
        const res = await this.get(new URL(relative, upstream.baseUrl));
        if (res.statusCode !== 200) {
          res.body.resume();
          if (isAbsent(res.statusCode)) {
            this.outcome(upstream, relative, undefined);
            continue;
          }
          throw failureOf(res);
        }
        const raw = await readLimitedBuffer(res.body, limit);
        this.outcome(upstream, relative, undefined);
        return { found: await decodeContent(String(res.headers['content-encoding'] ?? 'identity'), raw, limit), absent: false };
      } catch (error) {
        failed = true;
        if (error instanceof UpstreamFailure || isNetworkFailure(error)) this.outcome(upstream, relative, error as Error);
        else this.options.logger.warn({ upstream: upstream.baseUrl.href, path: relative, err: (error as Error).message }, 'upstream fetch failed');
      }
    }
    return { absent: !failed };
  }

  /** Opens a NAR download; undefined when the upstream does not have it. */
  async fetchFile(url: URL, signal?: AbortSignal): Promise<UpstreamBody | undefined> {
    const res = await this.get(url, signal);
    if (res.statusCode !== 200) {
      res.body.resume();
      if (isAbsent(res.statusCode)) return undefined;
      throw new Error(`upstream answered HTTP ${res.statusCode} for ${url.href}`);
    }
    const length = Number(res.headers['content-length']);
    return { body: res.body, ...(Number.isFinite(length) && length >= 0 ? { contentLength: length } : {}) };
  }

  private get(url: URL, signal?: AbortSignal): Promise<UpstreamResponse> {
    const headers: Record<string, string> = {
      // The bytes must be exactly the file whose hash the narinfo names.
      'accept-encoding': 'identity',
      'user-agent': 'ncps',
    };
    const auth = basicAuthFor(this.options.netrc, url.hostname);
    if (auth) headers.authorization = auth;
    if (this.fallback) return this.fallback.get(url, headers, signal);
    return request(url, { method: 'GET', headers, dispatcher: this.dispatcher, signal: signal ?? null });
  }

  async close(): Promise<void> {
    if (this.healthTimer) clearInterval(this.healthTimer);
    await this.agent.close().catch(() => undefined);
    this.fallback?.close();
  }
}

function failureOf(res: UpstreamResponse): UpstreamFailure {
  const retryAfter = res.headers['retry-after'];
  return new UpstreamFailure(res.statusCode, Array.isArray(retryAfter) ? retryAfter[0] : retryAfter);
}

/** Errors of the connection or the exchange (as opposed to a body we refused to take). */
function isNetworkFailure(error: unknown): boolean {
  const code = (error as { code?: string }).code ?? '';
  return code.startsWith('UND_ERR') || code.startsWith('E') || (error as Error).name === 'AbortError';
}

/** The upstream itself cannot be reached (as opposed to one request going wrong). */
function isUnreachable(error: Error): boolean {
  const code = (error as { code?: string }).code ?? '';
  return ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT'].includes(code);
}

function isAbsent(status: number): boolean {
  return status === 404 || status === 403 || status === 410;
}

async function readLimitedBuffer(body: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += (chunk as Buffer).length;
    if (total > limit) {
      body.destroy();
      throw new Error(`response larger than ${limit} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

async function readLimited(body: Readable, limit: number): Promise<string> {
  return (await readLimitedBuffer(body, limit)).toString('utf8');
}

/**
 * Undoes a Content-Encoding (binary caches serve listings and logs compressed that way). The
 * decoded size is bounded like the raw one: a small answer that inflates to gigabytes (a
 * decompression bomb) fails at `limit` instead of filling memory.
 */
async function decodeContent(encoding: string, data: Buffer, limit: number): Promise<Buffer> {
  const bounded = { maxOutputLength: limit };
  try {
    switch (encoding.trim().toLowerCase()) {
      case '':
      case 'identity':
        return data;
      case 'br':
        return await promisify(brotliDecompress)(data, bounded);
      case 'gzip':
      case 'x-gzip':
        return await promisify(gunzip)(data, bounded);
      case 'deflate':
        return await promisify(inflate)(data, bounded);
      case 'zstd':
        return await runFilter('zstd', ['-dcq'], data, limit);
      case 'xz':
        return await runFilter('xz', ['-dc'], data, limit);
      default:
        throw new Error(`unsupported Content-Encoding ${encoding}`);
    }
  } catch (error) {
    if ((error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' || error instanceof RangeError) throw new DecodedTooLarge(encoding, limit);
    throw error;
  }
}

class DecodedTooLarge extends Error {
  constructor(encoding: string, limit: number) {
    super(`${encoding} answer larger than ${limit} bytes once decoded`);
  }
}

/** Runs a decompressor over `input`; stops it as soon as its output passes `limit`. */
function runFilter(command: string, args: string[], input: Buffer, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'ignore'] });
    const chunks: Buffer[] = [];
    let total = 0;
    let tooLarge = false;
    child.stdout.on('data', (chunk: Buffer) => {
      total += chunk.length;
      if (total > limit) {
        tooLarge = true;
        child.kill('SIGKILL');
        return;
      }
      chunks.push(chunk);
    });
    child.once('error', reject);
    child.once('close', (code) => {
      if (tooLarge) reject(new RangeError('too large'));
      else if (code === 0) resolve(Buffer.concat(chunks));
      else reject(new Error(`${command} exited ${code}`));
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}
