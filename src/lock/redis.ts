// Redis-backed locks, so several ncps instances download a NAR (or run the LRU) only once.
//
// A lock is a key `<prefix><name>` holding a random token, created with SET NX PX (only if absent,
// with a TTL). While held, the TTL is extended every ttl/3 by a script that checks the token first;
// release deletes the key by a script that checks the token first, so a holder whose lock expired
// can never extend or delete the lock somebody else holds now. A holder that dies stops refreshing
// and its lock expires after at most one TTL.
//
// Waiting for a busy lock goes on until the lock is free (a download may take minutes), with
// exponential backoff. Failing to *reach* Redis is bounded by retry.maxAttempts; then either a
// LockUnavailableError is thrown or, with allowDegradedMode, an in-process lock is used instead.
// A token an attempt gave up on is deleted again as soon as Redis takes commands (./abandoned.ts),
// so a short stall never leaves a path locked for the whole TTL.
//
// This class speaks to one Redis: a server, or a Redis Cluster (several addresses). Several
// independent servers are ./redlock.ts; ./redis-service.ts tells which the addresses are.

import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { Cluster, Redis, type ClusterNode, type ClusterOptions, type RedisOptions } from 'ioredis';
import { AbandonedTokens } from './abandoned';
import { DegradedLocks } from './degraded';
import type { Lock, Locker, LockLogger } from './locker';

export interface RedisLockRetryOptions {
  /** Consecutive failed attempts to reach Redis before giving up (not a bound on waiting for a busy lock). */
  maxAttempts: number;
  /** First backoff delay; doubles up to maxDelayMs. */
  initialDelayMs: number;
  maxDelayMs: number;
  /** Full jitter: each delay is uniform in [0, delay]. */
  jitter: boolean;
}

export interface RedisLockerOptions {
  /** `host:port` (or `[v6addr]:port`); one → a standalone client, several → Redis Cluster. */
  addrs: string[];
  /** Talk to a Redis Cluster (default: when several addresses are given; ./redis-service.ts asks them). */
  cluster?: boolean;
  username?: string;
  password?: string;
  /** Database number (standalone only; Redis Cluster has only database 0). */
  db: number;
  useTls: boolean;
  /** Prepended to every lock key, e.g. `ncps:lock:`. */
  keyPrefix: string;
  retry: RedisLockRetryOptions;
  /** Fall back to in-process locks when Redis cannot be reached (they do not exclude other instances). */
  allowDegradedMode: boolean;
  logger?: LockLogger;
  /** How long one attempt waits for a connection being (re)established. Default 2000 ms. */
  connectWaitMs?: number;
  /** Timeout of one Redis command. Default 5000 ms. */
  commandTimeoutMs?: number;
}

/** Redis could not give a lock (unreachable, credentials rejected, locker closed…). */
export class LockUnavailableError extends Error {
  override readonly name = 'LockUnavailableError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A lock held in Redis. `signal` aborts (and `lost` turns true) if the lock is lost while held. */
export interface RedisLock extends Lock {
  readonly key: string;
  readonly lost: boolean;
  readonly signal: AbortSignal;
  /** True when this is an in-process lock taken in degraded mode. */
  readonly degraded: boolean;
}

export type RedisClientOptions =
  | { mode: 'standalone'; options: RedisOptions }
  | { mode: 'cluster'; nodes: ClusterNode[]; options: ClusterOptions };

// Extend the TTL only while the key still holds our token.
export const EXTEND_SCRIPT = `
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0`;

// Delete the key only while it still holds our token.
export const RELEASE_SCRIPT = `
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0`;

export const AUTH_ERROR = /WRONGPASS|NOAUTH|NOPERM|invalid password|invalid username-password/i;

type Client = Redis | Cluster;

interface ReadyWaiter {
  settle(error?: Error): void;
}

export class RedisLocker implements Locker {
  /** Locks obtained (from Redis, or in-process in degraded mode). */
  acquisitions = 0;
  /** Times Redis could not give a lock (gave up or fell back to degraded mode), plus locks lost while held. */
  failures = 0;
  /** Locks obtained in-process because Redis was unreachable. */
  degradedAcquisitions = 0;

  readonly client: Client;
  private readonly options: RedisLockerOptions;
  private readonly logger: LockLogger | undefined;
  private readonly connectWaitMs: number;
  private readonly inProcess = new DegradedLocks(() => {
    this.acquisitions++;
    this.degradedAcquisitions++;
  });
  private readonly held = new Set<HeldLock>();
  private degraded = false;
  private closed = false;
  private lastConnectionError: Error | undefined;
  private outageLogged = false;
  private readonly readyWaiters = new Set<ReadyWaiter>();
  private readonly abandoned: AbandonedTokens;

  constructor(options: RedisLockerOptions) {
    if (options.addrs.length === 0) throw new Error('RedisLocker needs at least one Redis address');
    this.options = options;
    this.logger = options.logger;
    this.connectWaitMs = options.connectWaitMs ?? 2_000;
    this.abandoned = new AbandonedTokens(options.logger);
    const config = RedisLocker.clientOptions(options);
    if (config.mode === 'cluster') {
      if (options.db !== 0) this.logger?.warn({ db: options.db }, 'Redis Cluster has only database 0; the Redis db setting is ignored');
      this.client = new Cluster(config.nodes, config.options);
    } else {
      this.client = new Redis(config.options);
    }
    // Without an 'error' listener ioredis prints every failed reconnect to the console.
    this.client.on('error', (error: Error) => {
      this.lastConnectionError = error;
      this.settleWaiters(error);
      if (!this.outageLogged && !this.closed) {
        this.outageLogged = true;
        this.logger?.warn({ err: error.message, addrs: options.addrs }, 'Redis connection problem; reconnecting');
      } else {
        this.logger?.debug({ err: error.message }, 'Redis connection error');
      }
    });
    this.client.on('end', () => this.settleWaiters(new LockUnavailableError('Redis connection is closed')));
    this.client.on('ready', () => {
      this.settleWaiters();
      this.lastConnectionError = undefined;
      this.outageLogged = false;
      if (this.degraded) {
        this.degraded = false;
        this.logger?.info({ addrs: options.addrs }, 'Redis reachable again; distributed locks restored');
      }
    });
  }

  /** What the ioredis client is constructed with (exposed so tests can check TLS etc.). */
  static clientOptions(options: RedisLockerOptions): RedisClientOptions {
    const commandTimeout = options.commandTimeoutMs ?? 5_000;
    const connectTimeout = Math.max(options.connectWaitMs ?? 2_000, 1_000);
    const tls = options.useTls ? {} : undefined;
    const perConnection: RedisOptions = {
      username: options.username || undefined,
      password: options.password || undefined,
      connectTimeout,
      commandTimeout,
      // Our own loop retries; a command must fail fast when the connection is down rather than
      // wait in a queue (that is what bounds attempts against an unreachable Redis).
      maxRetriesPerRequest: 0,
      connectionName: 'ncps-lock',
    };
    if (tls) perConnection.tls = tls;
    // Reconnect forever (Redis restarts must be survived), at most every 2 s.
    const reconnect = (times: number) => Math.min(100 * times, 2_000);

    if (!(options.cluster ?? options.addrs.length > 1)) {
      const { host, port } = parseAddr(options.addrs[0]!);
      return {
        mode: 'standalone',
        options: { ...perConnection, host, port, db: options.db, enableOfflineQueue: false, retryStrategy: reconnect },
      };
    }
    const clusterOptions: ClusterOptions = {
      redisOptions: perConnection,
      enableOfflineQueue: false,
      clusterRetryStrategy: reconnect,
    };
    // With TLS, keep host names (not resolved IPs) so certificates can be verified against them.
    if (tls) clusterOptions.dnsLookup = (address, callback) => callback(null, address);
    return { mode: 'cluster', nodes: options.addrs.map(parseAddr), options: clusterOptions };
  }

  /** Checks that Redis answers (bounded by retry.maxAttempts); call at start-up for a clear error. */
  async check(): Promise<void> {
    try {
      await this.reachable(() => this.client.ping());
    } catch (error) {
      throw this.unavailable('Redis is not usable', error);
    }
  }

  async acquire(key: string, requestedTtlMs: number): Promise<RedisLock> {
    this.assertOpen();
    const ttlMs = wholeMs(requestedTtlMs);
    if (this.degraded && this.client.status !== 'ready') return this.inProcess.acquire(key, ttlMs);
    const redisKey = this.options.keyPrefix + key;
    const token = newToken();
    const trySet = this.setIfAbsent(redisKey, token, ttlMs);
    for (let busy = 0; ; busy++) {
      let obtained: boolean;
      try {
        obtained = await this.reachable(trySet);
      } catch (error) {
        this.abandon(redisKey, token, ttlMs);
        return this.giveUp(key, ttlMs, error, (k, t) => this.inProcess.acquire(k, t));
      }
      if (obtained) return this.hold(key, redisKey, token, ttlMs);
      await sleep(retryDelay(this.options.retry, busy));
      this.assertOpen();
    }
  }

  /** One attempt, no waiting for a busy lock: the lock, or undefined when somebody holds it. */
  async tryAcquire(key: string, requestedTtlMs: number): Promise<RedisLock | undefined> {
    this.assertOpen();
    const ttlMs = wholeMs(requestedTtlMs);
    if (this.degraded && this.client.status !== 'ready') return this.inProcess.tryAcquire(key, ttlMs);
    const redisKey = this.options.keyPrefix + key;
    const token = newToken();
    let obtained: boolean;
    try {
      obtained = await this.reachable(this.setIfAbsent(redisKey, token, ttlMs));
    } catch (error) {
      this.abandon(redisKey, token, ttlMs);
      return this.giveUp(key, ttlMs, error, (k, t) => this.inProcess.tryAcquire(k, t));
    }
    return obtained ? this.hold(key, redisKey, token, ttlMs) : undefined;
  }

  /** Releases the locks still held (best effort), then disconnects. */
  async close(): Promise<void> {
    if (this.closed) return;
    const releases = [...this.held].map((lock) => lock.release());
    await Promise.race([Promise.allSettled(releases), sleep(2_000)]);
    this.closed = true;
    this.abandoned.close();
    await this.inProcess.close();
    try {
      await Promise.race([this.client.quit(), sleep(1_000)]);
    } catch {
      /* not connected: nothing to say goodbye to */
    }
    this.client.disconnect();
  }

  // --- internals -----------------------------------------------------------------------------

  /** A SET for `token` may have been sent without an answer: delete it again wherever it landed. */
  private abandon(redisKey: string, token: string, ttlMs: number): void {
    if (this.closed) return;
    this.abandoned.forget(this.options.addrs.join(','), redisKey, Date.now() + ttlMs, () =>
      this.client.status === 'ready'
        ? this.client.eval(RELEASE_SCRIPT, 1, redisKey, token)
        : Promise.reject(new Error(`Redis connection is ${this.client.status}`)),
    );
  }

  /** SET key token NX PX ttl, as a repeatable attempt: true when the key now holds our token. */
  private setIfAbsent(redisKey: string, token: string, ttlMs: number): () => Promise<boolean> {
    let ambiguous = false;
    return async () => {
      try {
        if ((await this.client.set(redisKey, token, 'PX', ttlMs, 'NX')) === 'OK') return true;
        // A SET whose reply was lost (connection dropped) may still have succeeded.
        const ours = ambiguous && (await this.client.get(redisKey)) === token;
        ambiguous = false;
        return ours;
      } catch (error) {
        ambiguous = true;
        throw error;
      }
    };
  }

  /** Runs `op` once Redis is connected; a failure to reach Redis is retried up to maxAttempts. */
  private async reachable<T>(op: () => Promise<T>): Promise<T> {
    const maxAttempts = Math.max(1, this.options.retry.maxAttempts);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.waitReady();
        return await op();
      } catch (error) {
        const cause = this.explain(error);
        // Rejected credentials will not fix themselves within the retry window.
        if (this.closed || attempt >= maxAttempts || AUTH_ERROR.test(cause.message)) throw cause;
        this.logger?.debug({ attempt, err: cause.message }, 'Redis attempt failed; retrying');
        await sleep(retryDelay(this.options.retry, attempt - 1));
      }
    }
  }

  /** Resolves when the client is ready; rejects on a connection error, close, or connectWaitMs. */
  private waitReady(): Promise<void> {
    if (this.client.status === 'ready') return Promise.resolve();
    if (this.closed || this.client.status === 'end') return Promise.reject(new LockUnavailableError('Redis connection is closed'));
    // One set of client listeners serves every waiter (see the constructor), however many there are.
    return new Promise((resolve, reject) => {
      const waiter: ReadyWaiter = {
        settle: (error) => {
          clearTimeout(timer);
          this.readyWaiters.delete(waiter);
          if (error) reject(error);
          else resolve();
        },
      };
      const timer = setTimeout(() => {
        const last = this.lastConnectionError ? ` (${this.lastConnectionError.message})` : '';
        waiter.settle(new Error(`no connection to Redis within ${this.connectWaitMs} ms${last}`));
      }, this.connectWaitMs);
      this.readyWaiters.add(waiter);
    });
  }

  private settleWaiters(error?: Error): void {
    for (const waiter of [...this.readyWaiters]) waiter.settle(error);
  }

  /** ioredis reports "Stream isn't writeable…" for a down connection; the connection's own error says why. */
  private explain(error: unknown): Error {
    const err = error instanceof Error ? error : new Error(String(error));
    if (/isn't writeable|Connection is closed|enableOfflineQueue/i.test(err.message) && this.lastConnectionError) {
      return new Error(`${this.lastConnectionError.message}`, { cause: err });
    }
    return err;
  }

  private giveUp<T>(key: string, ttlMs: number, error: unknown, fallback: (key: string, ttlMs: number) => Promise<T>): Promise<T> {
    this.failures++;
    if (this.closed || !this.options.allowDegradedMode) {
      return Promise.reject(this.unavailable(`cannot lock "${key}"`, error));
    }
    if (!this.degraded) {
      this.degraded = true;
      this.logger?.warn(
        { addrs: this.options.addrs, err: (error as Error)?.message },
        'Redis unreachable: degraded mode, using in-process locks (they do not exclude other ncps instances)',
      );
    }
    return fallback(key, ttlMs);
  }

  private unavailable(what: string, error: unknown): LockUnavailableError {
    if (error instanceof LockUnavailableError && this.closed) return new LockUnavailableError(`${what}: the locker is closed`, { cause: error });
    const message = (error as Error)?.message ?? String(error);
    const attempts = Math.max(1, this.options.retry.maxAttempts);
    const why = AUTH_ERROR.test(message)
      ? `Redis rejected the credentials (${message})`
      : `Redis at ${this.options.addrs.join(', ')} unreachable after ${attempts} attempt(s) (${message})`;
    return new LockUnavailableError(`${what}: ${why}`, { cause: error });
  }

  private assertOpen(): void {
    if (this.closed) throw new LockUnavailableError('the Redis locker is closed');
  }

  private hold(key: string, redisKey: string, token: string, ttlMs: number): RedisLock {
    this.acquisitions++;
    const lock: HeldLock = new HeldLock(key, ttlMs, {
      extend: () => this.extend(redisKey, token, ttlMs),
      // Compare-and-delete: never removes a lock that expired and was taken by someone else.
      remove: async () => {
        this.held.delete(lock);
        try {
          await this.reachable(() => this.client.eval(RELEASE_SCRIPT, 1, redisKey, token));
        } catch (error) {
          this.abandon(redisKey, token, ttlMs);
          throw error;
        }
      },
      lost: (reason) => {
        this.failures++;
        this.logger?.warn({ key, reason }, 'Redis lock lost while held');
      },
      logger: this.logger,
    });
    this.held.add(lock);
    return lock;
  }

  private async extend(redisKey: string, token: string, ttlMs: number): Promise<boolean> {
    if (this.client.status !== 'ready') throw this.explain(new Error('Connection is closed.'));
    return (await this.client.eval(EXTEND_SCRIPT, 1, redisKey, token, String(ttlMs))) === 1;
  }
}

export interface HeldLockOps {
  /** Compare-and-extend; false when the key no longer holds our token. */
  extend(): Promise<boolean>;
  /** Compare-and-delete. */
  remove(): Promise<void>;
  lost(reason: string): void;
  logger: LockLogger | undefined;
}

export class HeldLock implements RedisLock {
  readonly degraded = false;
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private released = false;
  private refreshing = false;
  private lastConfirmed = Date.now();
  private isLost = false;

  constructor(
    readonly key: string,
    private readonly ttlMs: number,
    private readonly ops: HeldLockOps,
  ) {
    this.timer = setInterval(() => void this.refresh(), Math.max(1, Math.floor(ttlMs / 3)));
    this.timer.unref();
  }

  get lost(): boolean {
    return this.isLost;
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  private async refresh(): Promise<void> {
    if (this.refreshing || this.released || this.isLost) return;
    this.refreshing = true;
    const sent = Date.now();
    try {
      if (await this.ops.extend()) this.lastConfirmed = sent;
      else this.markLost('the key expired or belongs to another holder');
    } catch (error) {
      // Redis unreachable: keep trying, but one TTL after the last confirmation the key is gone.
      const message = (error as Error).message;
      if (Date.now() - this.lastConfirmed >= this.ttlMs) this.markLost(`not refreshed for ${this.ttlMs} ms (${message})`);
      else this.ops.logger?.debug({ key: this.key, err: message }, 'Redis lock refresh failed; will retry');
    } finally {
      this.refreshing = false;
    }
  }

  private markLost(reason: string): void {
    if (this.isLost || this.released) return;
    this.isLost = true;
    clearInterval(this.timer);
    this.ops.lost(reason);
    this.controller.abort(new LockUnavailableError(`lock "${this.key}" lost: ${reason}`));
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearInterval(this.timer);
    try {
      await this.ops.remove();
    } catch (error) {
      this.ops.logger?.warn({ key: this.key, err: (error as Error).message }, 'could not release Redis lock now; it is deleted in the background (at the latest it expires after its TTL)');
    }
  }
}

/** `host:port`, `[::1]:port`, `host` (port 6379); a `redis://` or `rediss://` prefix is tolerated. */
export function parseAddr(addr: string): { host: string; port: number } {
  const trimmed = addr.trim().replace(/^rediss?:\/\//, '').replace(/\/.*$/, '');
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(trimmed);
  if (bracketed) return { host: bracketed[1]!, port: bracketed[2] ? Number(bracketed[2]) : 6379 };
  const colon = trimmed.lastIndexOf(':');
  if (colon > 0 && trimmed.indexOf(':') === colon) {
    const port = Number(trimmed.slice(colon + 1));
    if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`invalid Redis address "${addr}"`);
    return { host: trimmed.slice(0, colon), port };
  }
  if (!trimmed) throw new Error(`invalid Redis address "${addr}"`);
  return { host: trimmed, port: 6379 };
}

/** The wait before retry `step` (0, 1, …): initialDelayMs doubling up to maxDelayMs, with full jitter when asked. */
export function retryDelay(retry: RedisLockRetryOptions, step: number): number {
  const { initialDelayMs, maxDelayMs, jitter } = retry;
  const delay = Math.min(maxDelayMs, initialDelayMs * 2 ** Math.min(step, 30));
  return jitter ? Math.random() * delay : delay;
}

/** PX takes a positive integer. */
export function wholeMs(ms: number): number {
  return Math.max(1, Math.round(ms));
}

export function newToken(): string {
  return `${os.hostname()}:${process.pid}:${randomBytes(12).toString('hex')}`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
