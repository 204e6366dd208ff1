// Taking over a Go ncps deployment, one per release line (v0.5, v0.7, v0.8, v0.9 with CDC chunks,
// v0.10 with pins and build traces), on SQLite and PostgreSQL, and a MySQL source on a real
// MariaDB. Each time: this ncps starts on the Go ncps's data directory and database with no
// upstream reachable, takes it over by itself, and the real Nix client substitutes every stored
// closure trusting only the Go ncps's key. Pins, build traces, signatures, sizes and last-use
// times come along; the Go database is byte-for-byte (SQLite) or row-for-row as it was.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { S3Storage } from '../../src/storage/s3';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openDatabase } from '../../src/db/open';
import { sqliteFileBesideGo } from '../../src/db/beside-go';
import type { Database } from '../../src/db/database';
import { generateSecretKey, NixHash, parseBuildTraceValue, parseNarInfo } from '../../src/nix';
import { substituteAndVerify, teardown } from '../helpers/fixture';
import { buildGoFixture, GO_GENERATIONS, goDatabaseDigest, makeGoMaterial, type GoEngineTarget, type GoFixture, type GoMaterial } from '../helpers/go-fixture';
import { request } from '../helpers/http';
import { mariadbAvailable, mariadbUnavailableReason, startMariadb, type MariadbServer } from '../helpers/mariadb';
import { freePort, runNcps, startNcps, type NcpsProcess } from '../helpers/ncps';
import { nixAvailable } from '../helpers/nix';
import { ncpsS3Args, s3rverAvailable, startS3rver } from '../helpers/s3';
import { postgresAvailable, postgresUnavailableReason, startPostgres, type PostgresServer } from '../helpers/postgres';

const skip = nixAvailable() ? false : 'nix-bin not installed';
const TIMEOUT = 300_000;
const POOL = { maxOpenConns: 2, maxIdleConns: 0 };
/** Some key ncps requires for upstreams; nothing it serves is signed by it. */
const UNRELATED_KEY = generateSecretKey('unrelated-upstream-1').publicKey.text;

/** The JSON log records of a process whose message is `msg`. */
function logRecords(logs: string, msg: string): Array<Record<string, unknown>> {
  return logs
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return {};
      }
    })
    .filter((r) => r.msg === msg);
}

/** Our database after the takeover, as the server itself finds it. */
function ourDatabase(fixture: GoFixture, url = fixture.databaseUrl): Database {
  return openDatabase(url, POOL);
}

async function servedPins(ncps: NcpsProcess): Promise<string[]> {
  const r = await request(ncps.url, '/pins');
  assert.equal(r.status, 200, r.text);
  // Either shape: the Go ncps's array of hashes, or objects with a hash.
  return (JSON.parse(r.text) as Array<string | { hash: string }>).map((p) => (typeof p === 'string' ? p : p.hash)).sort();
}

/**
 * Everything "How it is checked" asks of one takeover: start with no upstream, key unchanged,
 * records with their times and sizes, narinfos with all their fields and signatures, pins, build
 * traces, every closure substituted by the real Nix client, the Go data untouched.
 */
async function checkTakeover(fixture: GoFixture, target: GoEngineTarget, options: { ourUrl?: string; extraArgs?: string[] } = {}): Promise<void> {
  const goBefore = await goDatabaseDigest(fixture, target);
  const ncps = await startNcps({
    upstreams: [`http://127.0.0.1:${await freePort()}`],
    publicKeys: [UNRELATED_KEY],
    dataDir: fixture.dataDir,
    hostname: 'not-the-go-key-name',
    readyTimeoutMs: 120_000,
    extraArgs: [`--cache-database-url=${options.ourUrl ?? fixture.databaseUrl}`, ...(options.extraArgs ?? [])],
  });
  try {
    const took = logRecords(ncps.logs(), 'took over the Go ncps database');
    assert.equal(took.length, 1, `the server takes the Go database over by itself:\n${ncps.logs().slice(-4000)}`);
    const skipped = took[0]!.skipped as Record<string, number>;
    const expectedSkips = [...fixture.broken.values()].sort();
    assert.deepEqual(
      Object.entries(skipped).flatMap(([reason, n]) => Array.from({ length: n }, () => expectedSkips.find((e) => reason.startsWith(e)) ?? reason)).sort(),
      expectedSkips,
      `skipped: ${JSON.stringify(skipped)}`,
    );
    assert.equal(await ncps.publicKey(), fixture.publicKey, 'the public key is the Go ncps key, byte for byte');

    // Before any client touches them: the records as the takeover wrote them.
    const db = ourDatabase(fixture, options.ourUrl);
    try {
      const lru = new Map((await db.leastRecentlyUsedNarInfos(100_000)).map((r) => [r.hash, r.lastAccessedAt]));
      const pinnedClosure = new Set<string>();
      for (const [hash, lastAccess] of fixture.lastAccess) {
        if (fixture.broken.has(hash)) continue;
        // Pinned closures are left out of the LRU order; the others keep the Go ncps's last use.
        if (lru.has(hash)) assert.equal(lru.get(hash), lastAccess, `last use of ${hash}`);
        else pinnedClosure.add(hash);
      }
      if (fixture.pins.length === 0) assert.equal(pinnedClosure.size, 0);
      const stats = await db.storeStats();
      assert.equal(stats.narInfoCount, fixture.narInfos.size, 'every narinfo the Go ncps could serve, and nothing else');
      let bytes = 0;
      for (const hash of fixture.narInfos.keys()) {
        const served = (await db.getNarInfo(hash))!;
        const record = (await db.getNarFile(served.url.slice('nar/'.length)))!;
        assert.ok(record.storedAt !== undefined, `${hash}: its NAR counts as stored (the size limit sees it)`);
        assert.equal(record.fileSize, served.fileSize, `${hash}: record and narinfo agree on the size`);
        bytes += record.fileSize!;
      }
      assert.ok(stats.storedBytes >= bytes && bytes > 0, `stored bytes ${stats.storedBytes} cover the NARs (${bytes})`);
    } finally {
      await db.close();
    }

    let oldNames = 0;
    for (const [hash, goNarInfo] of fixture.narInfos) {
      const r = await request(ncps.url, `/${hash}.narinfo`);
      assert.equal(r.status, 200, `${hash}.narinfo: ${r.text}`);
      const served = parseNarInfo(r.text);
      assert.equal(served.storePath, goNarInfo.storePath);
      assert.equal(served.narHash.toNix32(), goNarInfo.narHash.toNix32());
      assert.equal(served.narSize, goNarInfo.narSize);
      assert.deepEqual([...served.references].sort(), [...goNarInfo.references].sort());
      assert.equal(served.deriver, goNarInfo.deriver);
      assert.equal(served.system, goNarInfo.system);
      assert.equal(served.ca, goNarInfo.ca);
      for (const sig of goNarInfo.sigs) assert.ok(served.sigs.includes(sig), `${hash}: signature ${sig.split(':')[0]} kept`);
      if (served.url !== goNarInfo.url) {
        // A client holding the Go ncps's narinfo asks for the NAR by its old name: same NAR.
        const old = await request(ncps.url, `/${goNarInfo.url}`);
        assert.equal(old.status, 200, `${goNarInfo.url}: ${old.text.slice(0, 200)}`);
        assert.equal(NixHash.of('sha256', old.body).toNix32(), goNarInfo.narHash.toNix32(), `${goNarInfo.url} is the NAR`);
        assert.equal(Number(old.headers['content-length']), goNarInfo.narSize);
        oldNames++;
      }
    }
    // From v0.9 on, chunked (and, in v0.10, .nar.zst-kept) NARs are served under a new name.
    if (fixture.generation === 'v0.9' || fixture.generation === 'v0.10') assert.ok(oldNames >= 3, `${oldNames} NARs asked for by their Go name`);
    for (const closure of fixture.closures) {
      await substituteAndVerify(closure, { substituter: ncps.url, trustedPublicKey: fixture.publicKey, ncps, what: `${fixture.generation}/${fixture.engine} ${closure.top}` });
    }
    assert.deepEqual(await servedPins(ncps), [...fixture.pins].sort());
    for (const trace of fixture.buildTraces) {
      const r = await request(ncps.url, `/build-trace-v2/${trace.drvPath}/${trace.outputName}.doi`);
      assert.equal(r.status, 200, r.text);
      const value = parseBuildTraceValue(r.text);
      assert.equal(value.outPath, trace.outPath);
      for (const sig of trace.signatures) assert.ok(value.signatures.includes(sig), `build trace signature ${sig.split(':')[0]} kept`);
    }
  } finally {
    assert.equal(await ncps.stop(), 0);
  }
  assert.equal(await goDatabaseDigest(fixture, target), goBefore, 'the Go database is as it was');
  for (const rel of [...fixture.chunkFiles, ...fixture.narInfoFiles]) assert.ok(existsSync(path.join(fixture.dataDir, rel)), `${rel} is kept for the Go ncps`);
  if (fixture.generation === 'v0.5') assert.ok(existsSync(path.join(fixture.dataDir, 'config', 'cache.key')));
}

describe('taking over a Go ncps deployment', { skip, timeout: 40 * 60_000 }, () => {
  let material: GoMaterial;
  let pgServer: PostgresServer | undefined;
  let mariadb: MariadbServer | undefined;

  before(async () => {
    material = await makeGoMaterial('take');
    if (postgresAvailable()) pgServer = await startPostgres();
    if (mariadbAvailable()) mariadb = await startMariadb();
  }, { timeout: 600_000 });
  after(() => teardown(mariadb, pgServer), { timeout: 120_000 });

  for (const generation of GO_GENERATIONS) {
    it(`${generation} on SQLite: taken over in place, beside the untouched Go file`, { timeout: TIMEOUT }, async () => {
      const fixture = await buildGoFixture(material, generation, { kind: 'sqlite' });
      await checkTakeover(fixture, { kind: 'sqlite' });
      assert.ok(existsSync(sqliteFileBesideGo(fixture.databaseUrl.replace(/^sqlite:/, ''))));
    });
  }

  for (const generation of GO_GENERATIONS) {
    it(`${generation} on PostgreSQL: taken over in place, the Go tables left in their schema`, { timeout: TIMEOUT }, async (t) => {
      if (!pgServer) return t.skip(`PostgreSQL unavailable: ${postgresUnavailableReason()}`);
      const target: GoEngineTarget = { kind: 'postgres', server: pgServer };
      const fixture = await buildGoFixture(material, generation, target);
      await checkTakeover(fixture, target);
      const name = decodeURIComponent(new URL(fixture.databaseUrl).pathname.slice(1));
      const schemas = await pgServer.query<{ s: string }>(name, `SELECT DISTINCT table_schema AS s FROM information_schema.tables WHERE table_name = 'narinfos' ORDER BY 1`);
      assert.deepEqual(schemas.map((r) => r.s), ['ncps_ts', 'public']);
    });
  }

  it('v0.10 on MariaDB: a MySQL source taken over into a SQLite database of ours', { timeout: TIMEOUT }, async (t) => {
    if (!mariadb) return t.skip(`MariaDB unavailable: ${mariadbUnavailableReason()}`);
    const target: GoEngineTarget = { kind: 'mysql', server: mariadb };
    const fixture = await buildGoFixture(material, 'v0.10', target);
    const ourUrl = `sqlite:${path.join(fixture.dataDir, 'db', 'ncps.sqlite')}`;
    // Pointing this ncps at MySQL itself is refused, with the way to do it.
    const refused = await runNcps(['serve', `--cache-storage-local=${fixture.dataDir}`, `--cache-database-url=${fixture.databaseUrl}`]);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /--go-database-url/);
    await checkTakeover(fixture, target, { ourUrl, extraArgs: [`--go-database-url=${fixture.databaseUrl}`] });
  });

  it('v0.9 with its storage in S3 (s3rver): chunks read from the bucket, and kept there', { timeout: TIMEOUT }, async (t) => {
    if (!s3rverAvailable()) return t.skip('s3rver unavailable');
    const fixture = await buildGoFixture(material, 'v0.9', { kind: 'sqlite' });
    const s3 = await startS3rver({ bucket: 'go-ncps' });
    const client = new S3Client(S3Storage.clientConfig({ bucket: s3.bucket, endpoint: s3.endpoint, region: s3.region, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, forcePathStyle: true, tempDir: fixture.dataDir }));
    try {
      // The Go ncps's bucket holds the same keys as its local layout: store/nar, store/chunk, …
      const walk = async (dir: string): Promise<string[]> =>
        (await readdir(dir, { withFileTypes: true })).flatMap((e) => (e.isDirectory() ? [] : [path.join(dir, e.name)])).concat(
          ...(await Promise.all((await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => walk(path.join(dir, e.name))))),
        );
      for (const file of await walk(path.join(fixture.dataDir, 'store'))) {
        const key = path.relative(fixture.dataDir, file).split(path.sep).join('/');
        await client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: key, Body: await readFile(file) }));
      }
      await checkTakeover(fixture, { kind: 'sqlite' }, {
        extraArgs: ncpsS3Args(s3),
      });
      for (const rel of fixture.chunkFiles) {
        const key = rel.split(path.sep).join('/');
        // Throws when the object is gone.
        await client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key }));
      }
    } finally {
      client.destroy();
      await s3.stop();
    }
  });

  it('migrate from-go --dry-run says what it would take over and writes nothing', { timeout: TIMEOUT }, async () => {
    const fixture = await buildGoFixture(material, 'v0.9', { kind: 'sqlite' });
    const goBefore = await goDatabaseDigest(fixture, { kind: 'sqlite' });
    const r = await runNcps(['migrate', 'from-go', '--dry-run', `--cache-storage-local=${fixture.dataDir}`, `--cache-database-url=${fixture.databaseUrl}`], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /dry run: Go ncps database sqlite:.* \(v0\.9\):/);
    // A dry run does not read chunks: the NAR whose chunk is gone is found only when reassembled.
    const wouldTake = fixture.narInfos.size + 1;
    assert.match(r.stdout, new RegExp(`narinfos: would take over ${wouldTake} \\(${wouldTake} from the database`));
    assert.match(r.stdout, /CDC-chunked NARs: would reassemble 4 /);
    assert.match(r.stdout, /1 × NAR not in storage/);
    assert.match(r.stdout, /signing key: would take over go-ncps-1:/);
    assert.equal(existsSync(sqliteFileBesideGo(fixture.databaseUrl.replace(/^sqlite:/, ''))), false, 'no database of ours was created');
    assert.equal(await goDatabaseDigest(fixture, { kind: 'sqlite' }), goBefore);
    // migrate status on the Go database explains rather than opening it.
    const status = await runNcps(['migrate', 'status', `--cache-storage-local=${fixture.dataDir}`, `--cache-database-url=${fixture.databaseUrl}`]);
    assert.equal(status.code, 1);
    assert.match(status.stderr, /ncps serve and ncps migrate up take it over/);
  });
});
