// Locks over several independent Redis servers, as the Go ncps keeps them (the Redlock scheme):
// a lock is held when a majority of the servers granted it, so one server down, restarted empty
// or stalled neither blocks nor breaks locking.
//
// Taking a lock: the same random token is SET NX PX on every server at once. As soon as a majority
// said OK (and the time spent leaves some of the TTL), the lock is held; as soon as a majority can
// no longer be reached, it is not, and the token is deleted again from every server (compare-and-
// delete, ./abandoned.ts), also from those that never answered: a stalled server runs that delete
// right after the SET it still has queued. A stalled server therefore costs nothing but its own
// answer. Refreshing and releasing work the same way, on every server, deciding on a majority.
//
// "Busy" (a majority holds somebody else's lock) is waited out with backoff, however long;
// "unreachable" (fewer than a majority answer at all) counts against retry.maxAttempts, then gives
// a LockUnavailableError or, with allowDegradedMode, an in-process lock.

import { Redis } from 'ioredis';
import { AbandonedTokens } from './abandoned';
import { DegradedLocks } from './degraded';
import type { Locker, LockLogger } from './locker';
import {
  AUTH_ERROR,
  EXTEND_SCRIPT,
  HeldLock,
  LockUnavailableError,
  newToken,
  RedisLocker,
  RELEASE_SCRIPT,
  retryDelay,
  sleep,
  wholeMs,
  type RedisLock,
  type RedisLockerOptions,
} from './redis';

interface RedisNode {
  addr: string;
  client: Redis;
  lastError: Error | undefined;
  outageLogged: boolean;
}

type Vote = 'yes' | 'no' | 'error';

interface Tally {
  yes: number;
  no: number;
  errors: Error[];
}

/**
 * Runs `call` on every node and resolves as soon as the outcome is decided: `quorum` yes votes,
 * or so many no votes and errors that `quorum` can no longer be reached. The calls still running
 * go on (a stalled node answers later; callers clean up after those).
 */
function tally(nodes: readonly RedisNode[], quorum: number, call: (node: RedisNode) => Promise<Vote>): Promise<Tally> {
  return new Promise((resolve) => {
    const result: Tally = { yes: 0, no: 0, errors: [] };
    let pending = nodes.length;
    let done = false;
    const settle = () => {
      if (done) return;
      if (result.yes >= quorum || result.yes + pending < quorum) {
        done = true;
        resolve({ ...result, errors: [...result.errors] });
      }
    };
    for (const node of nodes) {
      call(node)
        .catch((error: unknown): Vote => {
          result.errors.push(explain(node, error));
          return 'error';
        })
        .then((vote) => {
          pending--;
          if (vote === 'yes') result.yes++;
          else if (vote === 'no') result.no++;
          settle();
        });
    }
    settle();
  });
}

function explain(node: RedisNode, error: unknown): Error {
  const err = error instanceof Error ? error : new Error(String(error));
  // ioredis says "Stream isn't writeable…" for a connection that is down; the connection's own error says why.
  const message = /isn't writeable|Connection is closed|enableOfflineQueue/i.test(err.message) && node.lastError ? node.lastError.message : err.message;
  return new Error(`${node.addr}: ${message}`, { cause: err });
}

export class RedlockLocker implements Locker {
  acquisitions = 0;
  failures = 0;
  degradedAcquisitions = 0;

  readonly nodes: readonly RedisNode[];
  /** Servers that must agree: a majority. */
  readonly quorum: number;
  private readonly options: RedisLockerOptions;
  private readonly logger: LockLogger | undefined;
  private readonly abandoned: AbandonedTokens;
  private readonly inProcess = new DegradedLocks(() => {
    this.acquisitions++;
    this.degradedAcquisitions++;
  });
  private readonly held = new Set<HeldLock>();
  private degraded = false;
  private closed = false;

  constructor(options: RedisLockerOptions) {
    if (options.addrs.length < 2) throw new Error('RedlockLocker needs at least two Redis addresses');
    this.options = options;
    this.logger = options.logger;
    this.abandoned = new AbandonedTokens(options.logger);
    this.quorum = Math.floor(options.addrs.length / 2) + 1;
    this.nodes = options.addrs.map((addr) => {
      const config = RedisLocker.clientOptions({ ...options, addrs: [addr] });
      if (config.mode !== 'standalone') throw new Error('unreachable: one address is a standalone client');
      const node: RedisNode = { addr, client: new Redis(config.options), lastError: undefined, outageLogged: false };
      node.client.on('error', (error: Error) => {
        node.lastError = error;
        if (!node.outageLogged && !this.closed) {
          node.outageLogged = true;
          this.logger?.warn({ err: error.message, addr }, 'Redis connection problem; reconnecting');
        }
      });
      node.client.on('ready', () => {
        node.lastError = undefined;
        node.outageLogged = false;
        if (this.degraded && this.readyNodes() >= this.quorum) {
          this.degraded = false;
          this.logger?.info({ addrs: options.addrs }, 'a majority of the Redis servers is reachable again; distributed locks restored');
        }
      });
      return node;
    });
  }

  /** Checks that a majority of the servers answers; call at start-up for a clear error. */
  async check(): Promise<void> {
    const deadline = Date.now() + Math.max(this.options.connectWaitMs ?? 2_000, 1_000) * Math.max(1, this.options.retry.maxAttempts);
    for (;;) {
      const result = await tally(this.nodes, this.nodes.length, async (node) => ((await node.client.ping()) === 'PONG' ? 'yes' : 'no'));
      if (result.yes >= this.quorum) {
        if (result.yes < this.nodes.length) {
          this.logger?.warn(
            { down: result.errors.map((e) => e.message) },
            `${result.yes} of ${this.nodes.length} Redis servers answer: locks work while a majority (${this.quorum}) does`,
          );
        }
        return;
      }
      const auth = result.errors.find((e) => AUTH_ERROR.test(e.message));
      if (auth || Date.now() >= deadline) {
        throw new LockUnavailableError(
          `Redis is not usable: ${result.yes} of ${this.nodes.length} servers answered, locks need ${this.quorum} (${result.errors.map((e) => e.message).join('; ')})`,
        );
      }
      await sleep(200);
    }
  }

  async acquire(key: string, requestedTtlMs: number): Promise<RedisLock> {
    this.assertOpen();
    const ttlMs = wholeMs(requestedTtlMs);
    if (this.degraded && this.readyNodes() < this.quorum) return this.inProcess.acquire(key, ttlMs);
    const redisKey = this.options.keyPrefix + key;
    let unreachable = 0;
    for (let busy = 0; ; ) {
      const outcome = await this.attempt(redisKey, ttlMs);
      if (outcome.kind === 'held') return this.hold(key, redisKey, outcome.token, ttlMs);
      if (outcome.kind === 'unreachable') {
        unreachable++;
        if (this.closed || unreachable >= Math.max(1, this.options.retry.maxAttempts) || outcome.auth) {
          return this.giveUp(key, ttlMs, outcome.error, (k, t) => this.inProcess.acquire(k, t));
        }
        await sleep(retryDelay(this.options.retry, unreachable - 1));
      } else {
        unreachable = 0;
        await sleep(retryDelay(this.options.retry, busy++));
      }
      this.assertOpen();
    }
  }

  async tryAcquire(key: string, requestedTtlMs: number): Promise<RedisLock | undefined> {
    this.assertOpen();
    const ttlMs = wholeMs(requestedTtlMs);
    if (this.degraded && this.readyNodes() < this.quorum) return this.inProcess.tryAcquire(key, ttlMs);
    const redisKey = this.options.keyPrefix + key;
    for (let unreachable = 1; ; unreachable++) {
      const outcome = await this.attempt(redisKey, ttlMs);
      if (outcome.kind === 'held') return this.hold(key, redisKey, outcome.token, ttlMs);
      if (outcome.kind === 'busy') return undefined;
      if (this.closed || unreachable >= Math.max(1, this.options.retry.maxAttempts) || outcome.auth) {
        return this.giveUp(key, ttlMs, outcome.error, (k, t) => this.inProcess.tryAcquire(k, t));
      }
      await sleep(retryDelay(this.options.retry, unreachable - 1));
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    const releases = [...this.held].map((lock) => lock.release());
    await Promise.race([Promise.allSettled(releases), sleep(2_000)]);
    this.closed = true;
    this.abandoned.close();
    await this.inProcess.close();
    await Promise.all(
      this.nodes.map(async (node) => {
        try {
          await Promise.race([node.client.quit(), sleep(1_000)]);
        } catch {
          /* not connected */
        }
        node.client.disconnect();
      }),
    );
  }

  // --- internals -----------------------------------------------------------------------------

  private readyNodes(): number {
    return this.nodes.filter((n) => n.client.status === 'ready').length;
  }

  /** Waits (up to connectWaitMs) until a majority of the connections is up, as after start or a restart. */
  private async waitForQuorum(): Promise<void> {
    if (this.readyNodes() >= this.quorum || this.closed) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        for (const node of this.nodes) node.client.off('ready', onReady);
        resolve();
      };
      const onReady = () => {
        if (this.readyNodes() >= this.quorum) done();
      };
      const timer = setTimeout(done, this.options.connectWaitMs ?? 2_000);
      for (const node of this.nodes) node.client.on('ready', onReady);
    });
  }

  /** One round over every server with a fresh token. */
  private async attempt(
    redisKey: string,
    ttlMs: number,
  ): Promise<{ kind: 'held'; token: string } | { kind: 'busy' } | { kind: 'unreachable'; error: Error; auth: boolean }> {
    await this.waitForQuorum();
    const token = newToken();
    const started = Date.now();
    const result = await tally(this.nodes, this.quorum, async (node) =>
      (await node.client.set(redisKey, token, 'PX', ttlMs, 'NX')) === 'OK' ? 'yes' : 'no',
    );
    // What is left of the TTL after the round trip, less a margin for clocks running apart.
    const validity = ttlMs - (Date.now() - started) - (Math.ceil(ttlMs * 0.01) + 2);
    if (result.yes >= this.quorum && validity > 0) return { kind: 'held', token };
    // Not held: take the token back everywhere, also where the SET is still under way.
    this.abandon(redisKey, token, ttlMs);
    // A server that said "taken" means somebody holds it: wait (the round may have been decided
    // before the others answered). Only when nobody said so is it the servers that are missing.
    if (result.no > 0 || result.yes >= this.quorum) return { kind: 'busy' };
    const error = new Error(
      `no majority of the ${this.nodes.length} Redis servers reachable, locks need ${this.quorum} (${result.errors.map((e) => e.message).join('; ')})`,
    );
    return { kind: 'unreachable', error, auth: result.errors.some((e) => AUTH_ERROR.test(e.message)) };
  }

  private abandon(redisKey: string, token: string, ttlMs: number): void {
    if (this.closed) return;
    const until = Date.now() + ttlMs;
    for (const node of this.nodes) {
      this.abandoned.forget(node.addr, redisKey, until, () =>
        node.client.status === 'ready'
          ? node.client.eval(RELEASE_SCRIPT, 1, redisKey, token)
          : Promise.reject(new Error(`connection is ${node.client.status}`)),
      );
    }
  }

  private hold(key: string, redisKey: string, token: string, ttlMs: number): RedisLock {
    this.acquisitions++;
    const lock: HeldLock = new HeldLock(key, ttlMs, {
      // Held while a majority still holds it; lost for sure once a majority no longer can.
      extend: async () => {
        const result = await tally(this.nodes, this.quorum, async (node) =>
          (await node.client.eval(EXTEND_SCRIPT, 1, redisKey, token, String(ttlMs))) === 1 ? 'yes' : 'no',
        );
        if (result.yes >= this.quorum) return true;
        if (result.no > this.nodes.length - this.quorum) return false;
        throw new Error(`only ${result.yes + result.no} of ${this.nodes.length} Redis servers answered`);
      },
      // Compare-and-delete everywhere; what a server cannot take now is retried in the background.
      remove: async () => {
        this.held.delete(lock);
        const result = await tally(this.nodes, this.nodes.length, async (node) => {
          await node.client.eval(RELEASE_SCRIPT, 1, redisKey, token);
          return 'yes';
        });
        if (result.errors.length > 0) this.abandon(redisKey, token, ttlMs);
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

  private giveUp<T>(key: string, ttlMs: number, error: Error, fallback: (key: string, ttlMs: number) => Promise<T>): Promise<T> {
    this.failures++;
    if (this.closed || !this.options.allowDegradedMode) {
      const what = this.closed ? 'the locker is closed' : error.message;
      return Promise.reject(new LockUnavailableError(`cannot lock "${key}": ${what}`, { cause: error }));
    }
    if (!this.degraded) {
      this.degraded = true;
      this.logger?.warn(
        { addrs: this.options.addrs, err: error.message },
        'no majority of the Redis servers reachable: degraded mode, using in-process locks (they do not exclude other ncps instances)',
      );
    }
    return fallback(key, ttlMs);
  }

  private assertOpen(): void {
    if (this.closed) throw new LockUnavailableError('the Redis locker is closed');
  }
}
