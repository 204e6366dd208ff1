// What `--cache-redis-addrs` names, and the locker for it. One address: that Redis server. Several:
// the Go ncps takes them for independent servers and locks on a majority (./redlock.ts); but the
// same list is also how one names the nodes of a Redis Cluster, where a plain client per address
// would be answered MOVED. So each address is asked once, at start, whether it is a cluster node
// (`INFO cluster`): cluster nodes → one Redis Cluster client (./redis.ts); plain servers → majority
// locking. The choice is logged.

import { Redis } from 'ioredis';
import type { Lock, Locker } from './locker';
import { RedlockLocker } from './redlock';
import { LockUnavailableError, parseAddr, RedisLocker, type RedisLockerOptions } from './redis';

export type RedisTopology = 'server' | 'cluster' | 'independent';

// One address may be a cluster node too (a seed): asked as well, so that keys in slots of other
// nodes are not answered MOVED.

/** Asks one address whether it runs in cluster mode; undefined when it does not answer. */
async function isClusterNode(addr: string, options: RedisLockerOptions): Promise<boolean | undefined> {
  const { host, port } = parseAddr(addr);
  const client = new Redis({
    host,
    port,
    username: options.username || undefined,
    password: options.password || undefined,
    db: 0,
    lazyConnect: true,
    connectTimeout: Math.max(options.connectWaitMs ?? 2_000, 1_000),
    commandTimeout: options.commandTimeoutMs ?? 5_000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectionName: 'ncps-probe',
    ...(options.useTls ? { tls: {} } : {}),
  });
  client.on('error', () => {
    /* reported by the caller as "no answer" */
  });
  try {
    await client.connect();
    const info = await client.info('cluster');
    return /^cluster_enabled:1\s*$/m.test(info);
  } catch {
    return undefined;
  } finally {
    client.disconnect();
  }
}

/** Which kind of Redis the addresses are (see the top of this file). */
export async function detectTopology(options: RedisLockerOptions): Promise<RedisTopology> {
  const answers = await Promise.all(options.addrs.map((addr) => isClusterNode(addr, options)));
  const cluster = options.addrs.filter((_, i) => answers[i] === true);
  const plain = options.addrs.filter((_, i) => answers[i] === false);
  if (cluster.length > 0 && plain.length > 0) {
    throw new LockUnavailableError(
      `--cache-redis-addrs mixes Redis Cluster nodes (${cluster.join(', ')}) and plain Redis servers (${plain.join(', ')}): name either the nodes of one cluster, or independent servers`,
    );
  }
  if (cluster.length > 0) return 'cluster';
  if (options.addrs.length === 1) return 'server';
  if (plain.length === 0) {
    options.logger?.warn(
      { addrs: options.addrs },
      'none of the Redis addresses answered; taking them for independent servers (a lock needs a majority), as the Go ncps does',
    );
  }
  return 'independent';
}

/**
 * The Locker for `--cache-redis-addrs`: decides what the addresses are on first use (check() at
 * start-up), then hands every call to that locker.
 */
export class RedisLockService implements Locker {
  private chosen: Promise<RedisLocker | RedlockLocker> | undefined;
  private resolved: RedisLocker | RedlockLocker | undefined;
  topology: RedisTopology | undefined;

  constructor(private readonly options: RedisLockerOptions) {}

  private locker(): Promise<RedisLocker | RedlockLocker> {
    this.chosen ??= detectTopology(this.options).then((topology) => {
      this.topology = topology;
      const { logger, addrs } = this.options;
      if (topology === 'independent') {
        const redlock = new RedlockLocker(this.options);
        logger?.info({ addrs }, `Redis: ${addrs.length} independent servers; a lock is held when ${redlock.quorum} of them grant it`);
        this.resolved = redlock;
      } else {
        if (topology === 'cluster') logger?.info({ addrs }, 'Redis: the addresses are nodes of one Redis Cluster; locks are kept in the cluster');
        this.resolved = new RedisLocker({ ...this.options, cluster: topology === 'cluster' });
      }
      return this.resolved;
    });
    return this.chosen;
  }

  async check(): Promise<void> {
    await (await this.locker()).check();
  }

  async acquire(key: string, ttlMs: number): Promise<Lock> {
    return (await this.locker()).acquire(key, ttlMs);
  }

  async tryAcquire(key: string, ttlMs: number): Promise<Lock | undefined> {
    return (await this.locker()).tryAcquire(key, ttlMs);
  }

  async close(): Promise<void> {
    if (!this.chosen) return;
    const locker = await this.chosen.catch(() => undefined);
    await locker?.close();
  }
}
