// RedisLocker against a real redis-server: mutual exclusion across two "nodes", expiry of a dead
// holder's lock, refresh, token-checked release/extend, key prefix, auth, unreachable Redis
// (error or degraded mode), and a Redis restart.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { LockUnavailableError, RedisLocker, type RedisLockerOptions } from '../../src/lock/redis';
import { withLock, type LockLogger } from '../../src/lock/locker';
import { createLogger } from '../../src/telemetry/logger';
import { cleanupTempDirs, freePort, sleep } from '../helpers/proc';
import { redisAvailable, startRedis, type RedisServer } from '../helpers/redis';

const skip = redisAvailable() ? false : 'redis-server not installed';

interface Captured extends LockLogger {
  lines: { level: string; msg: string; obj: object }[];
  count(level: string, pattern: RegExp): number;
}

function captureLogger(): Captured {
  const lines: Captured['lines'] = [];
  const log = (level: string) => (obj: object, msg?: string) => lines.push({ level, msg: msg ?? '', obj });
  return {
    lines,
    warn: log('warn'),
    info: log('info'),
    debug: log('debug'),
    count: (level, pattern) => lines.filter((l) => l.level === level && pattern.test(l.msg)).length,
  };
}

function baseOptions(addrs: string[], overrides: Partial<RedisLockerOptions> = {}): RedisLockerOptions {
  return {
    addrs,
    db: 0,
    useTls: false,
    keyPrefix: 'ncps:lock:',
    retry: { maxAttempts: 3, initialDelayMs: 20, maxDelayMs: 200, jitter: true },
    allowDegradedMode: false,
    connectWaitMs: 500,
    ...overrides,
  };
}

describe('RedisLocker client options', () => {
  it('applies TLS, credentials and db to a standalone client', () => {
    const withTls = RedisLocker.clientOptions(baseOptions(['redis.example:6380'], { useTls: true, username: 'u', password: 'p', db: 3 }));
    assert.equal(withTls.mode, 'standalone');
    assert.ok(withTls.mode === 'standalone');
    assert.deepEqual(withTls.options.tls, {});
    assert.equal(withTls.options.host, 'redis.example');
    assert.equal(withTls.options.port, 6380);
    assert.equal(withTls.options.username, 'u');
    assert.equal(withTls.options.password, 'p');
    assert.equal(withTls.options.db, 3);

    const plain = RedisLocker.clientOptions(baseOptions(['127.0.0.1:6379']));
    assert.ok(plain.mode === 'standalone');
    assert.equal(plain.options.tls, undefined);
  });

  it('uses a Cluster client for several addresses, with TLS in redisOptions', () => {
    const cluster = RedisLocker.clientOptions(baseOptions(['a.example:7000', 'b.example:7001', '[::1]:7002'], { useTls: true, password: 'p' }));
    assert.ok(cluster.mode === 'cluster');
    assert.deepEqual(cluster.nodes, [
      { host: 'a.example', port: 7000 },
      { host: 'b.example', port: 7001 },
      { host: '::1', port: 7002 },
    ]);
    assert.deepEqual(cluster.options.redisOptions?.tls, {});
    assert.equal(cluster.options.redisOptions?.password, 'p');
    assert.equal(typeof cluster.options.dnsLookup, 'function', 'TLS keeps host names for certificate checks');

    const plain = RedisLocker.clientOptions(baseOptions(['a.example:7000', 'b.example:7001']));
    assert.ok(plain.mode === 'cluster');
    assert.equal(plain.options.redisOptions?.tls, undefined);
  });
});

describe('RedisLocker (redis-server)', { skip, timeout: 120_000 }, () => {
  let server: RedisServer;
  let raw: Redis;
  const lockers: RedisLocker[] = [];

  function locker(overrides: Partial<RedisLockerOptions> = {}, addrs = [server.addr]): RedisLocker {
    const l = new RedisLocker(baseOptions(addrs, overrides));
    lockers.push(l);
    return l;
  }

  before(async () => {
    server = await startRedis();
    raw = new Redis({ host: server.host, port: server.port, maxRetriesPerRequest: null });
    raw.on('error', () => undefined);
  });

  after(async () => {
    await Promise.all(lockers.map((l) => l.close().catch(() => undefined)));
    raw?.disconnect();
    await server?.stop();
    await cleanupTempDirs();
  });

  it('excludes holders on two nodes under contention', async () => {
    const nodeA = locker();
    const nodeB = locker();
    const counterKey = 'test:shared-counter';
    await raw.del(counterKey);
    let inside = 0;
    let maxInside = 0;
    const cycle = async (node: RedisLocker) => {
      await withLock(node, 'excl', 10_000, async () => {
        inside++;
        maxInside = Math.max(maxInside, inside);
        // A non-atomic read-modify-write on a shared Redis value: only safe under the lock.
        const value = Number((await raw.get(counterKey)) ?? '0');
        await sleep(2 + Math.random() * 8);
        await raw.set(counterKey, String(value + 1));
        inside--;
      });
    };
    await Promise.all(Array.from({ length: 20 }, (_, i) => cycle(i % 2 === 0 ? nodeA : nodeB)));
    assert.equal(maxInside, 1, 'two holders were inside at once');
    assert.equal(await raw.get(counterKey), '20', 'lost updates: the lock did not exclude');
    assert.equal(nodeA.acquisitions + nodeB.acquisitions, 20);
    assert.equal(nodeA.failures + nodeB.failures, 0);
    assert.equal(await raw.exists('ncps:lock:excl'), 0, 'released locks leave no key');
  });

  it('frees the lock of a holder that died after its TTL', async () => {
    const dying = locker();
    const other = locker();
    await dying.acquire('dead', 800);
    // The holder "crashes": its connection goes away without releasing, so refreshing stops.
    dying.client.disconnect();
    const started = Date.now();
    const lock = await other.acquire('dead', 5_000);
    const waited = Date.now() - started;
    assert.ok(waited >= 300, `acquired after ${waited} ms: the dead holder's lock was not respected`);
    assert.ok(waited < 4_000, `acquired only after ${waited} ms`);
    await lock.release();
  });

  it('refresh keeps a long-held lock alive past its TTL', async () => {
    const holderNode = locker();
    const otherNode = locker();
    const lock = await holderNode.acquire('long', 500);
    await sleep(1_700); // more than three TTLs
    assert.equal(lock.lost, false);
    assert.equal(await otherNode.tryAcquire('long', 500), undefined, 'the lock expired while held');
    const ttl = await raw.pttl('ncps:lock:long');
    assert.ok(ttl > 0 && ttl <= 500, `PTTL ${ttl}`);
    await lock.release();
    const next = await otherNode.tryAcquire('long', 500);
    assert.ok(next, 'free after release');
    await next.release();
  });

  it('release never deletes another holder\'s lock', async () => {
    const nodeA = locker();
    const nodeB = locker();
    const lockA = await nodeA.acquire('steal', 3_000);
    // A's lock vanishes (as if it expired while A stalled) and B takes it.
    await raw.del('ncps:lock:steal');
    const lockB = await nodeB.acquire('steal', 3_000);
    const tokenB = await raw.get('ncps:lock:steal');
    assert.ok(tokenB);
    await lockA.release();
    assert.equal(await raw.get('ncps:lock:steal'), tokenB, "A's release deleted B's lock");
    assert.equal(await nodeA.tryAcquire('steal', 3_000), undefined);
    await lockB.release();
    assert.equal(await raw.exists('ncps:lock:steal'), 0);
  });

  it('refresh never extends another holder\'s lock and reports the loss', async () => {
    const node = locker();
    const failuresBefore = node.failures;
    const lock = await node.acquire('extend', 600);
    await raw.set('ncps:lock:extend', 'someone-else', 'PX', 10_000);
    await sleep(500); // at least one refresh (every 200 ms)
    assert.equal(lock.lost, true);
    assert.equal(lock.signal.aborted, true);
    assert.equal(node.failures, failuresBefore + 1);
    const ttl = await raw.pttl('ncps:lock:extend');
    assert.ok(ttl > 8_000, `the other holder's TTL was changed to ${ttl} ms`);
    await lock.release();
    assert.equal(await raw.get('ncps:lock:extend'), 'someone-else');
    await raw.del('ncps:lock:extend');
  });

  it('tryAcquire takes a free lock and returns undefined for a held one', async () => {
    const nodeA = locker();
    const nodeB = locker();
    const lock = await nodeA.tryAcquire('lru', 5_000);
    assert.ok(lock);
    const started = Date.now();
    assert.equal(await nodeB.tryAcquire('lru', 5_000), undefined);
    assert.ok(Date.now() - started < 500, 'tryAcquire does not wait');
    await lock.release();
    const again = await nodeB.tryAcquire('lru', 5_000);
    assert.ok(again);
    await again.release();
  });

  it('prefixes keys', async () => {
    const standard = locker();
    const custom = locker({ keyPrefix: 'other:prefix:' });
    const a = await standard.acquire('prefix-test', 5_000);
    const b = await custom.acquire('prefix-test', 5_000);
    assert.equal(await raw.exists('ncps:lock:prefix-test'), 1);
    assert.equal(await raw.exists('other:prefix:prefix-test'), 1);
    assert.equal(await raw.exists('prefix-test'), 0);
    await a.release();
    await b.release();
    assert.equal(await raw.exists('ncps:lock:prefix-test'), 0);
    assert.equal(await raw.exists('other:prefix:prefix-test'), 0);
  });

  it('check() passes when Redis answers (and takes ncps\'s pino logger)', async () => {
    const pinoLogger: LockLogger = createLogger('silent');
    await locker({ logger: pinoLogger }).check();
  });

  it('gives up on an unreachable Redis after maxAttempts with LockUnavailableError', async () => {
    const port = await freePort(); // nobody listens here
    const logger = captureLogger();
    const node = locker({ logger, retry: { maxAttempts: 4, initialDelayMs: 20, maxDelayMs: 100, jitter: false } }, [`127.0.0.1:${port}`]);
    const started = Date.now();
    await assert.rejects(node.acquire('x', 5_000), (error: Error) => {
      assert.ok(error instanceof LockUnavailableError, `got ${error.name}`);
      assert.match(error.message, /unreachable after 4 attempt/);
      assert.match(error.message, /ECONNREFUSED/);
      return true;
    });
    assert.ok(Date.now() - started < 8_000, 'bounded time');
    assert.equal(logger.count('debug', /attempt failed/), 3, 'exactly maxAttempts attempts');
    assert.equal(node.failures, 1);
    assert.equal(node.acquisitions, 0);
    await assert.rejects(node.tryAcquire('x', 5_000), LockUnavailableError);
    await assert.rejects(node.check(), LockUnavailableError);
  });

  it('falls back to in-process locks in degraded mode, warning once', async () => {
    const port = await freePort();
    const logger = captureLogger();
    const node = locker({ logger, allowDegradedMode: true }, [`127.0.0.1:${port}`]);
    const first = await node.acquire('degraded', 5_000);
    assert.equal(first.degraded, true);
    // The in-process lock still excludes within this process.
    let secondHeld = false;
    const second = node.acquire('degraded', 5_000).then((l) => {
      secondHeld = true;
      return l;
    });
    await sleep(100);
    assert.equal(secondHeld, false, 'the local fallback lock did not exclude');
    assert.equal(await node.tryAcquire('degraded', 5_000), undefined);
    await first.release();
    const lock2 = await second;
    assert.equal(secondHeld, true);
    await lock2.release();
    const third = await node.tryAcquire('degraded-2', 5_000);
    assert.ok(third?.degraded);
    await third.release();
    assert.equal(logger.count('warn', /degraded mode/), 1, 'one warning for the outage');
    assert.equal(node.acquisitions, 3);
    assert.equal(node.degradedAcquisitions, 3);
  });

  it('survives a redis-server restart', async () => {
    const logger = captureLogger();
    const node = locker({ logger, retry: { maxAttempts: 20, initialDelayMs: 50, maxDelayMs: 500, jitter: true } });
    const before = await node.acquire('restart-before', 5_000);
    await before.release();
    const held = await node.acquire('held-across', 900);

    await server.stop();
    // An acquire during the outage keeps retrying (bounded by maxAttempts) …
    const during = node.acquire('during-outage', 5_000);
    await sleep(400);
    await server.restart(); // … and succeeds once Redis is back.
    const lock = await during;
    assert.equal(lock.degraded, false);
    assert.equal(await raw.exists('ncps:lock:during-outage'), 1);
    await lock.release();

    const after = await node.acquire('after-restart', 5_000);
    assert.equal(await raw.exists('ncps:lock:after-restart'), 1);
    await after.release();

    // The restarted server forgot the held lock (no persistence): its holder learns it lost it.
    await sleep(1_000);
    assert.equal(held.lost, true);
    await held.release();
  });

  it('leaves degraded mode when Redis comes back', async () => {
    const logger = captureLogger();
    const node = locker({ logger, allowDegradedMode: true });
    await (await node.acquire('recover', 5_000)).release();
    await server.stop();
    const local = await node.acquire('recover', 5_000);
    assert.equal(local.degraded, true);
    await local.release();
    await server.restart();
    let lock = await node.acquire('recover', 5_000);
    for (let i = 0; lock.degraded && i < 50; i++) {
      // ioredis reconnects on its own schedule; until then the in-process fallback is used.
      await lock.release();
      await sleep(100);
      lock = await node.acquire('recover', 5_000);
    }
    assert.equal(lock.degraded, false);
    assert.equal(await raw.exists('ncps:lock:recover'), 1);
    await lock.release();
    assert.equal(logger.count('warn', /degraded mode/), 1);
    assert.equal(logger.count('info', /reachable again/), 1);
  });
});

describe('RedisLocker with a password (redis-server --requirepass)', { skip, timeout: 60_000 }, () => {
  let server: RedisServer;
  const lockers: RedisLocker[] = [];

  before(async () => {
    server = await startRedis({ password: 'correct horse' });
  });

  after(async () => {
    await Promise.all(lockers.map((l) => l.close().catch(() => undefined)));
    await server?.stop();
    await cleanupTempDirs();
  });

  it('authenticates with the right password', async () => {
    const node = new RedisLocker(baseOptions([server.addr], { password: 'correct horse' }));
    lockers.push(node);
    await node.check();
    const lock = await node.acquire('auth', 5_000);
    await lock.release();
  });

  it('fails clearly (and quickly) with a wrong or missing password', async () => {
    for (const password of ['wrong', undefined]) {
      const node = new RedisLocker(baseOptions([server.addr], { password, retry: { maxAttempts: 5, initialDelayMs: 200, maxDelayMs: 1_000, jitter: false } }));
      lockers.push(node);
      const started = Date.now();
      await assert.rejects(node.acquire('auth', 5_000), (error: Error) => {
        assert.ok(error instanceof LockUnavailableError, `got ${error.name}: ${error.message}`);
        assert.match(error.message, /rejected the credentials/);
        assert.match(error.message, password ? /WRONGPASS/ : /NOAUTH/);
        return true;
      });
      assert.ok(Date.now() - started < 1_500, 'credential errors are not retried');
    }
  });
});
