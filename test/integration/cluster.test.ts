// Three ncps instances as one cache: a real PostgreSQL, a real S3 server (s3rver), a real Redis,
// one throttled upstream. Defends: one signing key for all, one upstream download per NAR for the
// whole cluster, identical bytes everywhere, a node killed mid-download leaves nothing partial and
// its lock expires, and a Redis restart is survived.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { encodeNix32, generateSecretKey, narInfoFingerprint, parseNarInfo, signFingerprint } from '../../src/nix';
import { downloadHashed, request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { postgresAvailable, startPostgres, type PostgresServer } from '../helpers/postgres';
import { cleanupTempDirs, makeTempDir, sleep } from '../helpers/proc';
import { redisAvailable, startRedis, type RedisServer } from '../helpers/redis';
import { ncpsS3Args, s3rverAvailable, startS3rver, type S3rverInstance } from '../helpers/s3';
import { startStaticCache, type StaticCache } from '../helpers/static-cache';

const skip = !postgresAvailable() ? 'PostgreSQL not installed' : !redisAvailable() ? 'redis-server not installed' : !s3rverAvailable() ? 's3rver not installed' : false;
const MiB = 1024 * 1024;
const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz';
const upstreamKey = generateSecretKey('cluster-upstream-1');

interface SyntheticPath {
  hash: string;
  narName: string;
  sha256: string;
}

/** Writes a signed narinfo and an uncompressed NAR of `size` random bytes into `dir`. */
function addPath(dir: string, size: number): SyntheticPath {
  const hash = Array.from(randomBytes(32), (b) => NIX32[b % 32]).join('');
  const nar = randomBytes(size);
  const digest = createHash('sha256').update(nar).digest();
  const narName = `${encodeNix32(digest)}.nar`;
  mkdirSync(path.join(dir, 'nar'), { recursive: true });
  writeFileSync(path.join(dir, 'nar', narName), nar);
  const text = [
    `StorePath: /nix/store/${hash}-cluster`,
    `URL: nar/${narName}`,
    'Compression: none',
    `FileHash: sha256:${encodeNix32(digest)}`,
    `FileSize: ${size}`,
    `NarHash: sha256:${encodeNix32(digest)}`,
    `NarSize: ${size}`,
    'References: ',
    '',
  ].join('\n');
  const sig = signFingerprint(upstreamKey, narInfoFingerprint(parseNarInfo(text)));
  writeFileSync(path.join(dir, `${hash}.narinfo`), `${text}Sig: ${sig}\n`);
  return { hash, narName, sha256: digest.toString('hex') };
}

/** Objects s3rver holds for a key prefix (its data directory mirrors the bucket's keys). */
function s3Objects(s3: S3rverInstance, prefix: string): string[] {
  const root = path.join(s3.dir, s3.bucket, prefix);
  if (!existsSync(root)) return [];
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) walk(path.join(dir, entry.name));
      else out.push(path.join(dir, entry.name));
    }
  };
  walk(root);
  return out;
}

describe('three instances sharing PostgreSQL, S3 and Redis', { skip, timeout: 300_000 }, () => {
  let pg: PostgresServer;
  let s3: S3rverInstance;
  let redis: RedisServer;
  let upstream: StaticCache;
  let upstreamDir: string;
  const nodes: NcpsProcess[] = [];

  const nodeArgs = (databaseUrl: string) => [
    `--cache-database-url=${databaseUrl}`,
    ...ncpsS3Args(s3),
    `--cache-redis-addrs=${redis.addr}`,
    // Short, so a killed node's lock frees quickly; live holders keep refreshing it.
    '--cache-lock-download-ttl=3s',
    // Longer than that TTL: a killed holder's lock expires before anyone gives up waiting for it.
    '--cache-lock-download-wait=10s',
    '--log-level=info',
  ];

  before(async () => {
    [pg, s3, redis] = await Promise.all([startPostgres(), startS3rver(), startRedis()]);
    upstreamDir = await makeTempDir('cluster-upstream');
    writeFileSync(path.join(upstreamDir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
    upstream = await startStaticCache(upstreamDir, { bytesPerSecond: 8 * MiB });
    const databaseUrl = await pg.createDatabase('cluster');
    // Started together on an empty database: migrations and the signing key must happen once.
    nodes.push(
      ...(await Promise.all(
        [0, 1, 2].map(() => startNcps({ upstreams: [upstream.url], publicKeys: [upstreamKey.publicKey.text], extraArgs: nodeArgs(databaseUrl) })),
      )),
    );
  });

  after(async () => {
    await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
    await Promise.all([upstream?.stop(), redis?.stop(), s3?.stop(), pg?.stop()].map((p) => p?.catch(() => undefined)));
    await cleanupTempDirs();
  });

  it('signs with one key on every node', async () => {
    const keys = await Promise.all(nodes.map((n) => n.publicKey()));
    assert.equal(new Set(keys).size, 1, `keys: ${keys.join(', ')}`);
  });

  it('downloads a NAR once for 30 clients spread over the nodes, with identical bytes', async () => {
    const item = addPath(upstreamDir, 24 * MiB);
    const narinfo = await request(nodes[0]!.url, `/${item.hash}.narinfo`);
    assert.equal(narinfo.status, 200);
    const downloads = await Promise.all(
      Array.from({ length: 30 }, (_, i) => downloadHashed(nodes[i % 3]!.url, `/nar/${item.narName}`, { timeoutMs: 120_000 })),
    );
    for (const d of downloads) {
      assert.equal(d.status, 200);
      assert.equal(d.sha256, item.sha256);
    }
    assert.equal(upstream.count('GET', `/nar/${item.narName}`), 1, 'one upstream download for the whole cluster');
    assert.equal(s3Objects(s3, 'store/nar').filter((f) => f.includes(item.narName)).length > 0, true, 'the NAR is in the bucket');
  });

  it('streams from upstream when another instance holds the lock too long, and stores once it is free', async () => {
    const item = addPath(upstreamDir, 4 * MiB);
    const client = new Redis({ host: redis.host, port: redis.port });
    const lockKey = `ncps:lock:download:${item.narName}`;
    try {
      // A holder that never finishes (a stuck or dead instance whose lock has not expired yet).
      await client.set(lockKey, 'another-instance', 'PX', 120_000);
      const started = Date.now();
      assert.equal((await request(nodes[0]!.url, `/${item.hash}.narinfo`)).status, 200);
      const d = await downloadHashed(nodes[0]!.url, `/nar/${item.narName}`, { timeoutMs: 60_000 });
      assert.equal(d.status, 200);
      assert.equal(d.sha256, item.sha256);
      assert.ok(Date.now() - started >= 9_000, 'it waited for the lock first (--cache-lock-download-wait=10s)');
      assert.equal(upstream.count('GET', `/nar/${item.narName}`), 1);
      await sleep(500);
      assert.equal(s3Objects(s3, 'store/nar').some((f) => f.includes(item.narName)), false, 'not stored while the lock is held');
      assert.equal(await client.get(lockKey), 'another-instance', "the other instance's lock is left alone");

      await client.del(lockKey);
      const again = await downloadHashed(nodes[1]!.url, `/nar/${item.narName}`, { timeoutMs: 60_000 });
      assert.equal(again.sha256, item.sha256);
      assert.equal(upstream.count('GET', `/nar/${item.narName}`), 2);
      // Stored once node 1's upload to S3 has completed (its log says so; s3rver's files on disk
      // can show up before the object is whole).
      const stored = () => nodes[1]!.logs().split('\n').some((l) => l.includes(item.narName) && l.includes('NAR downloaded and stored'));
      const deadline = Date.now() + 15_000;
      while (!stored() && Date.now() < deadline) await sleep(100);
      assert.ok(stored(), `node 1 stored the NAR:\n${nodes[1]!.logs().slice(-3000)}`);
      const third = await downloadHashed(nodes[2]!.url, `/nar/${item.narName}`, { timeoutMs: 60_000 });
      assert.equal(third.sha256, item.sha256);
      assert.equal(upstream.count('GET', `/nar/${item.narName}`), 2, 'stored once the lock was free, then served from S3');
    } finally {
      client.disconnect();
    }
  });

  it('survives a node killed mid-download: nothing partial is visible and its lock expires', async () => {
    const item = addPath(upstreamDir, 32 * MiB);
    const victim = nodes[2]!;
    assert.equal((await request(victim.url, `/${item.hash}.narinfo`)).status, 200); // starts the prefetch on the victim
    const deadline = Date.now() + 10_000;
    while (upstream.count('GET', `/nar/${item.narName}`) === 0 && Date.now() < deadline) await sleep(50);
    await sleep(700);
    await victim.stop('SIGKILL');
    nodes.pop();
    assert.equal(s3Objects(s3, 'store/nar').some((f) => f.includes(item.narName)), false, 'no partial object in the bucket');

    const d = await downloadHashed(nodes[0]!.url, `/nar/${item.narName}`, { timeoutMs: 120_000 });
    assert.equal(d.status, 200);
    assert.equal(d.sha256, item.sha256);
    assert.equal(upstream.count('GET', `/nar/${item.narName}`), 2, 'the killed download, then one more after its lock expired');
    const again = await downloadHashed(nodes[1]!.url, `/nar/${item.narName}`, { timeoutMs: 60_000 });
    assert.equal(again.sha256, item.sha256);
    assert.equal(upstream.count('GET', `/nar/${item.narName}`), 2, 'served from S3 afterwards');
  });

  it('keeps serving and coordinating across a Redis restart', async () => {
    await redis.restart();
    const item = addPath(upstreamDir, 4 * MiB);
    const narinfo = await request(nodes[1]!.url, `/${item.hash}.narinfo`);
    assert.equal(narinfo.status, 200);
    const downloads = await Promise.all(
      Array.from({ length: 6 }, (_, i) => downloadHashed(nodes[i % 2]!.url, `/nar/${item.narName}`, { timeoutMs: 60_000 })),
    );
    for (const d of downloads) assert.equal(d.sha256, item.sha256);
    assert.equal(upstream.count('GET', `/nar/${item.narName}`), 1);
    for (const node of nodes) assert.equal((await request(node.url, '/healthz')).status, 200);
  });
});
