// Several --cache-redis-addrs, as the Go ncps means them: independent redis-servers, a lock held on
// a majority (three real servers, one killed, one stopped with SIGSTOP), and a Redis Cluster when
// the addresses are one (a real three-node cluster, detected). Also the stall of issue 12: a Redis
// that stops answering for a while must not leave ncps's own abandoned token holding a path for
// the whole TTL (locker level and through a real ncps process).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { withLock } from '../../src/lock/locker';
import { LockUnavailableError, RedisLocker, type RedisLockerOptions } from '../../src/lock/redis';
import { RedisLockService } from '../../src/lock/redis-service';
import { RedlockLocker } from '../../src/lock/redlock';
import { createLogger } from '../../src/telemetry/logger';
import { teardown, signedUpstream, type SignedUpstream } from '../helpers/fixture';
import { request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { hashPart, nixAvailable } from '../helpers/nix';
import { cleanupTempDirs, sleep } from '../helpers/proc';
import { redisAvailable, startRedis, type RedisServer } from '../helpers/redis';

const skip = redisAvailable() ? false : 'redis-server not installed';
const haveRedisCli = spawnSync('redis-cli', ['--version'], { stdio: 'ignore' }).status === 0;

function options(addrs: string[], overrides: Partial<RedisLockerOptions> = {}): RedisLockerOptions {
  return {
    addrs,
    db: 0,
    useTls: false,
    keyPrefix: 'ncps:lock:',
    retry: { maxAttempts: 2, initialDelayMs: 20, maxDelayMs: 200, jitter: true },
    allowDegradedMode: false,
    connectWaitMs: 500,
    commandTimeoutMs: 1_000,
    ...overrides,
  };
}

function rawClient(server: RedisServer): Redis {
  const client = new Redis({ host: server.host, port: server.port, maxRetriesPerRequest: 1, lazyConnect: false });
  client.on('error', () => undefined);
  return client;
}

/** Polls until `condition` holds; fails after `timeoutMs`. */
async function eventually(what: string, condition: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await condition()) return Date.now() - started;
    if (Date.now() - started > timeoutMs) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await sleep(100);
  }
}

describe('three independent redis-servers: a lock is held on a majority', { skip, timeout: 180_000 }, () => {
  let servers: RedisServer[];
  let raws: Redis[];
  const lockers: Array<{ close(): Promise<void> }> = [];
  const redlock = (overrides: Partial<RedisLockerOptions> = {}) => {
    const l = new RedlockLocker(options(servers.map((s) => s.addr), overrides));
    lockers.push(l);
    return l;
  };

  before(async () => {
    servers = [await startRedis(), await startRedis(), await startRedis()];
    raws = servers.map(rawClient);
  });

  after(async () => {
    await Promise.all(lockers.map((l) => l.close().catch(() => undefined)));
    for (const r of raws) r.disconnect();
    for (const s of servers) await s.stop();
    await cleanupTempDirs();
  });

  it('is detected as independent servers and excludes two holders, with the key on every server', async () => {
    const service = new RedisLockService(options(servers.map((s) => s.addr)));
    lockers.push(service);
    await service.check();
    assert.equal(service.topology, 'independent');
    const other = redlock();
    await other.check();
    const lock = await service.acquire('both', 10_000);
    for (const [i, raw] of raws.entries()) assert.ok(await raw.get('ncps:lock:both'), `server ${i} holds the key`);
    assert.equal(await other.tryAcquire('both', 10_000), undefined, 'a second holder is refused');
    await lock.release();
    for (const raw of raws) assert.equal(await raw.exists('ncps:lock:both'), 0, 'released everywhere');
    const again = await other.tryAcquire('both', 10_000);
    assert.ok(again, 'free again');
    await again.release();

    // Contention: a non-atomic read-modify-write is safe only under the lock.
    const a = redlock();
    const b = redlock();
    await raws[0]!.set('test:counter', '0');
    let inside = 0;
    let most = 0;
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        withLock(i % 2 ? a : b, 'contended', 10_000, async () => {
          most = Math.max(most, ++inside);
          const v = Number(await raws[0]!.get('test:counter'));
          await sleep(2 + Math.random() * 5);
          await raws[0]!.set('test:counter', String(v + 1));
          inside--;
        }),
      ),
    );
    assert.equal(most, 1);
    assert.equal(await raws[0]!.get('test:counter'), '20');
  });

  it('keeps locking, and excluding, with one server stopped with SIGSTOP; cleans that server once it moves again', async () => {
    const a = redlock();
    const b = redlock();
    await a.check();
    await b.check();
    servers[2]!.pause();
    try {
      const started = Date.now();
      const lock = await a.acquire('stalled', 20_000);
      const took = Date.now() - started;
      assert.ok(took < 900, `a stalled server must not slow locking down to its command timeout (took ${took} ms)`);
      assert.equal(await b.tryAcquire('stalled', 20_000), undefined, 'the majority excludes');
      await lock.release();
      const next = await b.tryAcquire('stalled', 20_000);
      assert.ok(next, 'released on the majority: free');
      await next.release();
    } finally {
      servers[2]!.resume();
    }
    // The stalled server ran the queued SETs and then the deletes queued behind them.
    await eventually('no lock key left on the server that was stopped', async () => (await raws[2]!.exists('ncps:lock:stalled')) === 0, 10_000);
  });

  it('keeps locking with one server killed; refuses clearly (or degrades) with two down', async () => {
    const a = redlock();
    await a.check();
    await servers[1]!.stop();
    try {
      const lock = await a.acquire('one-down', 10_000);
      assert.equal(await redlock().tryAcquire('one-down', 10_000), undefined);
      await lock.release();

      await servers[0]!.stop();
      await assert.rejects(a.acquire('two-down', 10_000), (e: unknown) => e instanceof LockUnavailableError && /no majority of the 3 Redis servers reachable, locks need 2 \(.*ECONNREFUSED/.test(e.message));
      const degraded = redlock({ allowDegradedMode: true, logger: createLogger('disabled') });
      const local = await degraded.acquire('two-down', 10_000);
      assert.equal(local.degraded, true);
      await local.release();
    } finally {
      await servers[0]!.restart();
      await servers[1]!.restart();
    }
    await a.check();
    const back = await a.acquire('back', 10_000);
    assert.equal(back.degraded, false);
    await back.release();
  });

  it('a stall of a majority gives up, and leaves no token behind once the servers move again', async () => {
    const a = redlock();
    await a.check();
    servers[0]!.pause();
    servers[1]!.pause();
    try {
      await assert.rejects(a.acquire('majority-stalled', 60_000), LockUnavailableError);
    } finally {
      servers[0]!.resume();
      servers[1]!.resume();
    }
    const waited = await eventually(
      'the abandoned tokens deleted on every server',
      async () => (await Promise.all(raws.map((r) => r.exists('ncps:lock:majority-stalled')))).every((n) => n === 0),
      10_000,
    );
    const lock = await redlock().tryAcquire('majority-stalled', 60_000);
    assert.ok(lock, `free again after ${waited} ms, not after the 60 s TTL`);
    await lock.release();
  });
});

describe('one redis-server stalled with SIGSTOP (issue 12): no abandoned token holds a path for its TTL', { skip, timeout: 180_000 }, () => {
  let server: RedisServer;
  let raw: Redis;

  before(async () => {
    server = await startRedis();
    raw = rawClient(server);
  });

  after(async () => {
    raw?.disconnect();
    await server?.stop();
    await cleanupTempDirs();
  });

  it('deletes the token of a SET that Redis runs only after the acquire gave up', async () => {
    const stalled = new RedisLocker(options([server.addr]));
    const other = new RedisLocker(options([server.addr]));
    try {
      await stalled.check();
      await other.check();
      server.pause();
      try {
        await assert.rejects(stalled.acquire('stall', 60_000), LockUnavailableError);
      } finally {
        server.resume();
      }
      const waited = await eventually('the lock key gone', async () => (await raw.exists('ncps:lock:stall')) === 0, 10_000);
      const lock = await other.tryAcquire('stall', 60_000);
      assert.ok(lock, `the path is free ${waited} ms after Redis moved again, not after the 60 s TTL`);
      await lock.release();
    } finally {
      await stalled.close();
      await other.close();
    }
  });
});

describe('ncps with a Redis that stalls, and with three Redis servers one of them killed', { skip: skip || (nixAvailable() ? false : 'nix not installed'), timeout: 300_000 }, () => {
  let upstream: SignedUpstream;
  let servers: RedisServer[] = [];
  const running: NcpsProcess[] = [];

  before(async () => {
    upstream = await signedUpstream({ label: 'redis-nodes' });
  });

  after(async () => {
    await teardown(...running, ...servers, upstream);
  });

  it('answers a miss again at once after a SIGSTOP/SIGCONT of its Redis (not after --cache-lock-download-ttl)', { timeout: 120_000 }, async () => {
    const redis = await startRedis();
    servers.push(redis);
    const ncps = await startNcps({
      upstreams: [upstream.url],
      publicKeys: [upstream.key.publicKey],
      extraArgs: [`--cache-redis-addrs=${redis.addr}`, '--cache-lock-download-ttl=60s'],
    });
    running.push(ncps);
    const path = `/${hashPart(upstream.closure.top)}.narinfo`;
    redis.pause();
    let stalled;
    try {
      stalled = await request(ncps.url, path, { timeoutMs: 60_000 });
    } finally {
      redis.resume();
    }
    assert.equal(stalled.status, 404, 'no lock service: "not here", never a 5xx');
    const started = Date.now();
    const after = await request(ncps.url, path, { timeoutMs: 60_000 });
    const took = Date.now() - started;
    assert.equal(after.status, 200, `after SIGCONT: ${after.status} ${after.text}\n${ncps.logs().slice(-3000)}`);
    assert.ok(took < 15_000, `the next request waited ${took} ms: an abandoned lock held the path`);
  });

  it('serves with three independent Redis servers, one of them killed', { timeout: 120_000 }, async () => {
    servers = [...servers, await startRedis(), await startRedis(), await startRedis()];
    const three = servers.slice(-3);
    const ncps = await startNcps({
      upstreams: [upstream.url],
      publicKeys: [upstream.key.publicKey],
      extraArgs: three.map((s) => `--cache-redis-addrs=${s.addr}`),
    });
    running.push(ncps);
    assert.match(ncps.logs(), /3 independent servers; a lock is held when 2 of them grant it/);
    await three[1]!.stop();
    for (const p of upstream.closure.paths) {
      const r = await request(ncps.url, `/${hashPart(p)}.narinfo`, { timeoutMs: 30_000 });
      assert.equal(r.status, 200, `${p} with one Redis down: ${r.status}\n${ncps.logs().slice(-3000)}`);
    }
  });
});

describe('a real Redis Cluster named by its nodes', { skip: skip || (haveRedisCli ? false : 'redis-cli not installed'), timeout: 180_000 }, () => {
  let nodes: RedisServer[] = [];

  before(async () => {
    for (let i = 0; i < 3; i++) {
      nodes.push(await startRedis({ extraArgs: ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${i}.conf`, '--cluster-node-timeout', '5000'] }));
    }
    const create = spawnSync('redis-cli', ['--cluster', 'create', ...nodes.map((n) => n.addr), '--cluster-replicas', '0', '--cluster-yes'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(create.status, 0, `redis-cli --cluster create: ${create.stdout}\n${create.stderr}`);
    const raw = rawClient(nodes[0]!);
    try {
      await eventually('cluster_state:ok', async () => /cluster_state:ok/.test(await raw.cluster('INFO') as string), 30_000);
    } finally {
      raw.disconnect();
    }
  });

  after(async () => {
    for (const n of nodes) await n.stop();
    nodes = [];
    await cleanupTempDirs();
  });

  it('is detected, and locks keys in every slot through the cluster', async () => {
    const service = new RedisLockService(options(nodes.map((n) => n.addr), { retry: { maxAttempts: 3, initialDelayMs: 50, maxDelayMs: 500, jitter: true } }));
    const other = new RedisLockService(options([nodes[1]!.addr]));
    try {
      await service.check();
      assert.equal(service.topology, 'cluster');
      await other.check();
      assert.equal(other.topology, 'cluster', 'one node named alone is a seed of its cluster too');
      // Keys spread over the slots of all three nodes.
      for (let i = 0; i < 12; i++) {
        const lock = await service.acquire(`slot-${i}`, 10_000);
        assert.equal(await other.tryAcquire(`slot-${i}`, 10_000), undefined, `slot-${i} excluded`);
        await lock.release();
        const again = await other.tryAcquire(`slot-${i}`, 10_000);
        assert.ok(again, `slot-${i} free after release`);
        await again.release();
      }
    } finally {
      await service.close();
      await other.close();
    }
  });

  it('refuses a mix of cluster nodes and plain servers', async () => {
    const plain = await startRedis();
    nodes.push(plain);
    const mixed = new RedisLockService(options([nodes[0]!.addr, plain.addr]));
    await assert.rejects(mixed.check(), /mixes Redis Cluster nodes .* and plain Redis servers/);
    await mixed.close();
  });
});
