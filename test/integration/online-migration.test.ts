// Online narinfo migration, as the upgrading guide describes it: `ncps migrate-narinfo` with Redis
// runs beside a live server that keeps answering clients. The server migrates the paths clients
// ask for (background migration), the command migrates the rest, both take the same per-hash Redis
// locks, no request fails, and every path ends up in the database exactly once.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { narInfoHashesInDb, listLegacyNarInfoFiles, writeSyntheticLegacyNarInfos } from '../helpers/legacy';
import { request } from '../helpers/http';
import { runNcps, startNcps, type NcpsProcess } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir } from '../helpers/proc';
import { redisAvailable, startRedis, type RedisServer } from '../helpers/redis';
import path from 'node:path';

const skip = redisAvailable() ? false : 'redis-server not installed';

describe('online narinfo migration with Redis', { skip, timeout: 300_000 }, () => {
  let redis: RedisServer;
  let ncps: NcpsProcess;
  let dataDir: string;
  let hashes: string[];

  before(async () => {
    redis = await startRedis();
    dataDir = await makeTempDir('online-migration');
    ({ hashes } = await writeSyntheticLegacyNarInfos(dataDir, 1500));
    ncps = await startNcps({
      dataDir,
      upstreams: ['http://127.0.0.1:9'],
      publicKeys: ['test-1:Zz8UoMw3ADmHtIaF4dp1kXJj5xHCn2D8bnEJnqC0lKM='],
      extraArgs: [`--cache-redis-addrs=${redis.addr}`, '--prometheus-enabled'],
    });
  });

  after(async () => {
    await ncps?.stop();
    await redis?.stop();
    await cleanupTempDirs();
  });

  it('migrates everything while the server answers every request', async () => {
    // Clients keep asking for legacy paths, in a loop, for as long as the migration runs.
    let running = true;
    const failures: string[] = [];
    let served = 0;
    const client = async (offset: number) => {
      for (let i = offset; running; i += 4) {
        const hash = hashes[i % hashes.length]!;
        const res = await request(ncps.url, `/${hash}.narinfo`).catch((error: Error) => ({ status: 0, text: error.message }));
        if (res.status !== 200) failures.push(`${hash}: ${res.status} ${res.text.slice(0, 80)}`);
        else served++;
      }
    };
    const clients = [0, 1, 2, 3].map(client);

    const migration = await runNcps(
      [
        'migrate-narinfo',
        `--cache-storage-local=${dataDir}`,
        // The same database as the server (startNcps puts it at DATADIR/db.sqlite).
        `--cache-database-url=sqlite:${path.join(dataDir, 'db.sqlite')}`,
        `--cache-redis-addrs=${redis.addr}`,
        '--concurrency=4',
      ],
      { timeoutMs: 240_000 },
    );
    running = false;
    await Promise.all(clients);

    assert.equal(migration.code, 0, `${migration.stdout}\n${migration.stderr}`);
    assert.deepEqual(failures, [], 'no client request failed during the migration');
    assert.ok(served > 100, `clients were served throughout (${served} answers)`);
    assert.deepEqual(await listLegacyNarInfoFiles(dataDir), [], 'no legacy file is left');
    const inDb = narInfoHashesInDb(path.join(dataDir, 'db.sqlite'));
    assert.equal(inDb.length, hashes.length, 'each path is in the database exactly once');
    assert.deepEqual([...inDb].sort(), hashes);

    const metrics = (await request(ncps.url, '/metrics')).text;
    const background = Number(/^ncps_background_migration_objects_total\{[^}]*result="success"[^}]*\} (\d+)$/m.exec(metrics)?.[1]);
    assert.ok(background >= 0);
    const counts = /migrated (\d+), already in the database (\d+), failed 0/.exec(migration.stdout);
    assert.ok(counts, migration.stdout);
    assert.equal(Number(counts[1]) + background, hashes.length, 'the server and the command together migrated each path once');
  });
});
