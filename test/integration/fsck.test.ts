// `ncps fsck` on a real cache damaged on purpose: filled through the real Nix client from a signed
// upstream, then a NAR file deleted, one truncated, one with a flipped byte, a narinfo record
// removed (its NAR record left unused), a NAR file added, and a narinfo signed by an old key under
// the serving key's name. fsck must report each exactly (and the flipped byte only with
// --verify-content), change nothing under --dry-run, fix each with --repair, and find nothing the
// second time; the real Nix client then substitutes everything again from upstream. Once on local
// storage with SQLite, once on s3rver with PostgreSQL. A last test runs fsck --repair beside a live
// server under client load, coordinated through Redis.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { encodeNix32, narInfoFingerprint, parseNarInfo, parseSecretKey, signFingerprint, verifySignature, parsePublicKey } from '../../src/nix';
import { assertClosureValid, startSignedCache, substituteAndVerify, teardown, type SignedCache } from '../helpers/fixture';
import { downloadHashed, request } from '../helpers/http';
import { narPath, withSqlite } from '../helpers/legacy';
import { runNcps, startNcps, type NcpsProcess } from '../helpers/ncps';
import { buildClosure, generateKeyPair, makeTempDir, nixAvailable, sleep, type Closure, type KeyPair } from '../helpers/nix';
import { postgresAvailable, startPostgres } from '../helpers/postgres';
import type { RunResult } from '../helpers/proc';
import { redisAvailable, startRedis, type RedisServer } from '../helpers/redis';
import { ncpsS3Args, s3rverAvailable, startS3rver } from '../helpers/s3';

const TIMEOUT = 300_000;
const HOUR = 60 * 60 * 1000;
const KEY_NAME = 'ncps-fsck-1';

// ---- where the cache lives: local storage + SQLite, or s3rver + PostgreSQL ----------------------

interface Backend {
  name: string;
  /** Storage and database flags, for serve and fsck alike. */
  args: string[];
  /** SQL with $1, $2… placeholders. */
  sql<R = Record<string, unknown>>(query: string, params?: unknown[]): Promise<R[]>;
  readNar(name: string): Promise<Buffer | undefined>;
  /** Writes (or overwrites) a NAR file; `modifiedAt` sets its modification time. */
  writeNar(name: string, data: Buffer, modifiedAt?: Date): Promise<void>;
  deleteNar(name: string): Promise<void>;
  /** File names under store/quarantine/nar. */
  quarantined(): Promise<string[]>;
  stop(): Promise<void>;
}

async function localBackend(): Promise<Backend> {
  const dataDir = await makeTempDir('fsck-local');
  const dbFile = path.join(dataDir, 'db.sqlite');
  return {
    name: 'local storage, SQLite',
    args: [`--cache-storage-local=${dataDir}`, `--cache-database-url=sqlite:${dbFile}`],
    async sql<R>(query: string, params: unknown[] = []) {
      // $n becomes SQLite's ?, with the values in the order of their places.
      const order: number[] = [];
      const text = query.replace(/\$(\d+)/g, (_, n: string) => (order.push(Number(n) - 1), '?'));
      const values = order.map((i) => params[i]);
      return withSqlite(dbFile, (db) => {
        const stmt = db.prepare(text);
        return (stmt.reader ? stmt.all(...values) : (stmt.run(...values), [])) as R[];
      });
    },
    readNar: (name) => readFile(narPath(dataDir, name)).catch(() => undefined),
    async writeNar(name, data, modifiedAt) {
      const file = narPath(dataDir, name);
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, data);
      if (modifiedAt) await utimes(file, modifiedAt, modifiedAt);
    },
    deleteNar: (name) => rm(narPath(dataDir, name)),
    async quarantined() {
      const dir = path.join(dataDir, 'store', 'quarantine', 'nar');
      return existsSync(dir) ? readdirSync(dir).sort() : [];
    },
    async stop() {},
  };
}

async function s3Backend(): Promise<Backend> {
  const [s3, pg] = await Promise.all([startS3rver(), startPostgres()]);
  const url = await pg.createDatabase('fsck');
  const dbName = decodeURIComponent(new URL(url).pathname.slice(1));
  const client = new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
  const narKey = (name: string) => `store/nar/${name.slice(0, 1)}/${name.slice(0, 2)}/${name}`;
  return {
    name: 's3rver, PostgreSQL',
    args: [
      ...ncpsS3Args(s3),
      `--cache-database-url=${url}`,
    ],
    sql: <R>(query: string, params: unknown[] = []) => pg.query(dbName, query, params) as Promise<R[]>,
    async readNar(name) {
      try {
        const r = await client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: narKey(name) }));
        return Buffer.from(await r.Body!.transformToByteArray());
      } catch {
        return undefined;
      }
    },
    async writeNar(name, data, modifiedAt) {
      await client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: narKey(name), Body: data }));
      // S3 cannot set a modification time; s3rver reports its object file's.
      if (modifiedAt) await utimes(path.join(s3.dir, s3.bucket, path.dirname(narKey(name)), `${name}._S3rver_object`), modifiedAt, modifiedAt);
    },
    deleteNar: async (name) => void (await client.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: narKey(name) }))),
    async quarantined() {
      const page = await client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: 'store/quarantine/nar/' }));
      return (page.Contents ?? []).map((o) => path.basename(o.Key!)).sort();
    },
    async stop() {
      client.destroy();
      await Promise.all([s3.stop(), pg.stop()]);
    },
  };
}

// ---- running fsck --------------------------------------------------------------------------

interface FsckRun extends RunResult {
  /** `kind subject` of every "fsck found" log line, sorted. */
  found: string[];
  /** `kind subject` of every "fsck repaired" log line, sorted. */
  repaired: string[];
}

function logLines(stdout: string): Array<Record<string, unknown>> {
  return stdout
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

async function runFsck(args: string[], ...flags: string[]): Promise<FsckRun> {
  const r = await runNcps(['fsck', ...args, ...flags], { timeoutMs: 180_000 });
  const lines = logLines(r.stdout);
  const pick = (prefix: string) =>
    lines
      .filter((l) => String(l.msg).startsWith(prefix))
      .map((l) => `${String(l.kind)} ${String(l.subject)}`)
      .sort();
  return { ...r, found: pick('fsck found: '), repaired: pick('fsck repaired: ') };
}

function diag(r: RunResult): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout.slice(-6000)}\n--- stderr\n${r.stderr.slice(-3000)}`;
}

/** What fsck printed for people (the summary table), without the log lines. */
function summaryOf(r: RunResult): string {
  return r.stdout
    .split('\n')
    .filter((line) => !line.startsWith('{'))
    .join('\n');
}

/** The summary row of a kind of problem: its label, then the found count. */
function row(stdout: string, label: string): string | undefined {
  return stdout.split('\n').find((line) => line.trimStart().startsWith(label));
}

// ---- the cache under test ------------------------------------------------------------------

interface PathRecord {
  storePath: string;
  hash: string;
  nar: string;
}

async function records(backend: Backend): Promise<Map<string, PathRecord>> {
  const rows = await backend.sql<{ hash: string; store_path: string; name: string }>(
    'SELECT n.hash, n.store_path, f.name FROM narinfos n JOIN nar_files f ON f.id = n.nar_file_id',
  );
  return new Map(rows.map((r) => [r.store_path, { storePath: r.store_path, hash: r.hash, nar: r.name }]));
}

async function storedCount(backend: Backend): Promise<number> {
  const [row] = await backend.sql<{ n: number | string }>('SELECT count(*) AS n FROM nar_files WHERE stored_at IS NOT NULL');
  return Number(row!.n);
}

async function waitForStored(backend: Backend, count: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  while ((await storedCount(backend)) < count) {
    assert.ok(Date.now() < deadline, `fewer than ${count} NARs stored after a minute`);
    await sleep(200);
  }
}

function nix32Name(): string {
  return encodeNix32(randomBytes(32));
}

const skipNix = nixAvailable() ? false : 'the Nix client is not installed';

for (const make of [localBackend, s3Backend]) {
  const isS3 = make === s3Backend;
  const skip = skipNix || (isS3 && (!s3rverAvailable() ? 's3rver not installed' : !postgresAvailable() ? 'PostgreSQL not installed' : false));

  describe(`fsck on a damaged cache (${isS3 ? 's3rver, PostgreSQL' : 'local storage, SQLite'})`, { skip, timeout: 6 * TIMEOUT }, () => {
    let backend: Backend;
    let upstream: SignedCache;
    let ncps: NcpsProcess | undefined;
    let serveKey: KeyPair;
    let oldKey: KeyPair;
    let a: Closure;
    let b: Closure;
    let paths: Map<string, PathRecord>;
    let serveArgs: string[];
    const fsck = (...flags: string[]) => runFsck(serveArgs, ...flags);
    const start = () =>
      startNcps({ upstreams: [upstream.url], publicKeys: [upstream.key.publicKey], hostname: 'ncps-fsck', extraArgs: serveArgs });
    const via = () => ({ substituter: ncps!.url, trustedPublicKey: serveKey.publicKey, ncps });
    const nar = (storePath: string) => paths.get(storePath)!.nar;
    const hash = (storePath: string) => paths.get(storePath)!.hash;
    let added: string;

    before(async () => {
      backend = await make();
      const keys = await makeTempDir('fsck-keys');
      serveKey = await generateKeyPair(KEY_NAME, keys);
      oldKey = await generateKeyPair(KEY_NAME, await makeTempDir('fsck-old-key'));
      serveArgs = [...backend.args, `--cache-secret-key-path=${serveKey.secretKeyFile}`];
      upstream = await startSignedCache({ label: `fsck-${isS3 ? 's3' : 'local'}` });
      [a, b] = [await buildClosure({ label: 'fsck-a' }), await buildClosure({ label: 'fsck-b' })];
      await upstream.publish(a);
      await upstream.publish(b);
      ncps = await start();
      await substituteAndVerify(a, { ...via(), what: 'closure a' });
      await substituteAndVerify(b, { ...via(), what: 'closure b' });
      await waitForStored(backend, 6);
      paths = await records(backend);
      assert.equal(paths.size, 6);
    }, { timeout: TIMEOUT });

    after(async () => {
      await teardown(ncps, upstream);
      await backend?.stop();
    }, { timeout: TIMEOUT });

    it('finds nothing wrong with an intact cache, also beside the live server, which it will not repair without Redis', { timeout: TIMEOUT }, async () => {
      const live = await fsck();
      assert.equal(live.code, 0, diag(live));
      assert.match(live.stdout, /^consistent: no problems found$/m);
      assert.match(live.stdout, /6 narinfos, 6 NAR records/);
      assert.match(live.stdout, new RegExp(`checked against the serving key ${KEY_NAME}`));
      const refused = await fsck('--repair');
      assert.equal(refused.code, 1, diag(refused));
      assert.match(refused.stderr, /an ncps server is using this database/);

      await ncps!.stop();
      ncps = undefined;
      const verified = await fsck('--verify-content');
      assert.equal(verified.code, 0, diag(verified));
      assert.match(verified.stdout, /NAR contents: 6 verified/);
      const [v] = await backend.sql<{ n: number | string }>('SELECT count(*) AS n FROM nar_files WHERE verified_at IS NOT NULL');
      assert.equal(Number(v!.n), 6, 'each verified NAR has its verified time');
      const sliced = await fsck('--verify-content', '--verified-since=1h');
      assert.equal(sliced.code, 0, diag(sliced));
      assert.match(sliced.stdout, /NAR contents: 0 verified, 6 skipped \(verified within 1h00m\)/);
    });

    it('reports each kind of damage exactly; the flipped byte only with --verify-content', { timeout: TIMEOUT }, async () => {
      // Unrecorded files older than the database are never judged (not written through it): the
      // database must be older than the added file.
      await backend.sql('UPDATE schema_migrations SET applied_at = $1', [Date.now() - 3 * HOUR]);
      // a: leaf deleted, mid truncated, top with a flipped byte.
      await backend.deleteNar(nar(a.leaf));
      const mid = (await backend.readNar(nar(a.mid)))!;
      await backend.writeNar(nar(a.mid), mid.subarray(0, Math.floor(mid.length / 2)));
      const top = Buffer.from((await backend.readNar(nar(a.top)))!);
      top[Math.floor(top.length / 2)] ^= 0x01;
      await backend.writeNar(nar(a.top), top);
      // b: the leaf's narinfo record removed (its NAR record and file left), the mid's narinfo
      // signed by an old key under the serving key's name.
      const leafId = `(SELECT id FROM narinfos WHERE hash = $1)`;
      await backend.sql(`DELETE FROM narinfo_references WHERE narinfo_id = ${leafId}`, [hash(b.leaf)]);
      await backend.sql(`DELETE FROM narinfo_signatures WHERE narinfo_id = ${leafId}`, [hash(b.leaf)]);
      await backend.sql('DELETE FROM narinfos WHERE hash = $1', [hash(b.leaf)]);
      const served = await narInfoFromUpstream(upstream, hash(b.mid));
      const oldSig = signFingerprint(parseSecretKey(oldKey.secretKey), narInfoFingerprint(served));
      await backend.sql(
        `UPDATE narinfo_signatures SET signature = $1 WHERE signature LIKE '${KEY_NAME}:%' AND narinfo_id = (SELECT id FROM narinfos WHERE hash = $2)`,
        [oldSig, hash(b.mid)],
      );
      // A NAR file nothing records, two hours old.
      added = `${nix32Name()}.nar.xz`;
      await backend.writeNar(added, randomBytes(5000), new Date(Date.now() - 2 * HOUR));

      const expected = [
        `nar-missing ${nar(a.leaf)}`,
        `nar-size ${nar(a.mid)}`,
        `nar-record-unused ${nar(b.leaf)}`,
        `nar-unrecorded ${added}`,
        `narinfo-signature ${hash(b.mid)}`,
      ].sort();
      const r = await fsck();
      assert.equal(r.code, 1, diag(r));
      assert.deepEqual(r.found, expected, diag(r));
      assert.match(row(r.stdout, 'NAR missing from storage') ?? '', /\s1\s+\d/);
      assert.match(row(r.stdout, 'NAR bytes not matching') ?? '', /\s-\s+-$/, 'not checked without --verify-content');
      assert.match(row(r.stdout, 'total') ?? '', /^\s*total\s+5\s/);
      assert.match(r.stdout, /5 problems found; nothing changed \(run with --repair to fix\)/);

      const content = await fsck('--verify-content');
      assert.equal(content.code, 1, diag(content));
      assert.deepEqual(content.found, [...expected, `nar-content ${nar(a.top)}`].sort(), diag(content));
      assert.match(content.stdout, /bytes not matching FileHash\/NarHash\s+1\s/);
    });

    it('changes nothing under --dry-run, even with --repair', { timeout: TIMEOUT }, async () => {
      const before = await snapshot();
      const r = await fsck('--verify-content', '--repair', '--dry-run');
      assert.equal(r.code, 1, diag(r));
      assert.equal(r.found.length, 6, diag(r));
      assert.deepEqual(r.repaired, []);
      assert.match(r.stdout, /6 problems found; dry run, nothing changed/);
      assert.deepEqual(await snapshot(), before);
    });

    it('--repair fixes each, logging every repair; a second fsck finds nothing', { timeout: TIMEOUT }, async (t) => {
      const r = await fsck('--verify-content', '--repair');
      for (const line of summaryOf(r).split('\n')) t.diagnostic(line);
      assert.equal(r.code, 0, diag(r));
      assert.deepEqual(r.repaired, r.found, diag(r));
      assert.equal(r.repaired.length, 6);
      assert.match(r.stdout, /6 problems found, 6 repaired$/m);
      // Wrong bytes are quarantined, never served again; the added and unused files are gone.
      const quarantined = await backend.quarantined();
      assert.deepEqual(quarantined.map((f) => f.replace(/\.\d{8}T\d{6}Z$/, '')).sort(), [nar(a.mid), nar(a.top)].sort());
      assert.equal(await backend.readNar(nar(a.top)), undefined);
      assert.equal(await backend.readNar(added), undefined);
      assert.equal(await backend.readNar(nar(b.leaf)), undefined);
      // Records of a's paths are gone (they become misses); b's mid is signed by the serving key.
      const left = await records(backend);
      assert.deepEqual([...left.keys()].sort(), [b.mid, b.top].sort());
      const mid = await narInfoFromDb(backend, hash(b.mid));
      const pub = parsePublicKey(serveKey.publicKey);
      assert.ok(mid.sigs.some((s) => verifySignature(s, narInfoFingerprint(mid), [pub])), `re-signed: ${mid.sigs.join(' ')}`);
      assert.ok(mid.sigs.some((s) => s.startsWith(upstream.key.publicKey.split(':')[0]!)), 'the upstream signature stays');

      const again = await fsck('--verify-content');
      assert.equal(again.code, 0, diag(again));
      assert.deepEqual(again.found, []);
      assert.match(again.stdout, /^consistent: no problems found$/m);
    });

    it('the real Nix client then substitutes everything from upstream again, and fsck stays clean', { timeout: TIMEOUT }, async () => {
      ncps = await start();
      const ra = await substituteAndVerify(a, { ...via(), what: 'closure a after repair' });
      await assertClosureValid(ra.storeRoot, a);
      await substituteAndVerify(b, { ...via(), what: 'closure b after repair' });
      await waitForStored(backend, 6);
      const r = await fsck('--verify-content');
      assert.equal(r.code, 0, diag(r));
      assert.match(r.stdout, /NAR contents: 6 verified/);
    });

    async function snapshot() {
      const counts = await backend.sql('SELECT (SELECT count(*) FROM narinfos) AS narinfos, (SELECT count(*) FROM nar_files) AS nars, (SELECT count(*) FROM narinfo_signatures) AS sigs');
      const sigs = await backend.sql('SELECT signature FROM narinfo_signatures ORDER BY signature');
      const files: Record<string, string> = {};
      for (const name of [nar(a.mid), nar(a.top), nar(b.leaf), added]) {
        const data = await backend.readNar(name);
        files[name] = data ? createHash('sha256').update(data).digest('hex') : 'absent';
      }
      return { counts: JSON.stringify(counts), sigs: JSON.stringify(sigs), files, quarantined: await backend.quarantined() };
    }
  });
}

describe('fsck --repair beside a live server under client load (Redis locks)', { skip: skipNix || (redisAvailable() ? false : 'redis-server not installed'), timeout: 3 * TIMEOUT }, () => {
  let backend: Backend;
  let redis: RedisServer;
  let upstream: SignedCache;
  let ncps: NcpsProcess | undefined;
  let serveKey: KeyPair;
  let c: Closure;
  let args: string[];

  before(async () => {
    backend = await localBackend();
    redis = await startRedis();
    serveKey = await generateKeyPair(KEY_NAME, await makeTempDir('fsck-live-key'));
    args = [...backend.args, `--cache-secret-key-path=${serveKey.secretKeyFile}`, `--cache-redis-addrs=${redis.addr}`];
    upstream = await startSignedCache({ label: 'fsck-live' });
    c = await buildClosure({ label: 'fsck-live', leafBytes: 256 * 1024 });
    await upstream.publish(c);
    ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [upstream.key.publicKey], hostname: 'ncps-fsck', extraArgs: args });
    await substituteAndVerify(c, { substituter: ncps.url, trustedPublicKey: serveKey.publicKey, ncps });
    await waitForStored(backend, 3);
  }, { timeout: TIMEOUT });

  after(async () => {
    await teardown(ncps, upstream, redis);
    await backend?.stop();
  }, { timeout: TIMEOUT });

  it('reports and repairs exactly the damage while clients keep reading; afterwards no wrong byte is served', { timeout: TIMEOUT }, async (t) => {
    const paths = await records(backend);
    const nar = (p: string) => paths.get(p)!.nar;
    const hash = (p: string) => paths.get(p)!.hash;
    // The leaf's NAR deleted (nobody reads it during the load, so the server does not fetch it
    // again by itself), a byte of the mid's NAR flipped (served as it is until fsck repairs it).
    await backend.deleteNar(nar(c.leaf));
    const mid = Buffer.from((await backend.readNar(nar(c.mid)))!);
    mid[Math.floor(mid.length / 2)] ^= 0x01;
    await backend.writeNar(nar(c.mid), mid);

    // Client load, bounded: 4 clients reading every narinfo and the NARs of mid and top, until
    // fsck is done (at most 90 s, at most 5000 requests).
    let fsckDone = 0;
    const deadline = Date.now() + 90_000;
    let requests = 0;
    const failures: string[] = [];
    let servedNars = 0;
    const client = async () => {
      while (!fsckDone && Date.now() < deadline && requests < 5000) {
        for (const p of [c.top, c.mid, c.leaf]) {
          requests++;
          const info = await request(ncps!.url, `/${hash(p)}.narinfo`);
          if (info.status >= 500) failures.push(`narinfo ${p}: ${info.status}`);
          if (info.status !== 200 || p === c.leaf) continue;
          const narInfo = parseNarInfo(info.text);
          requests++;
          const got = await downloadHashed(ncps!.url, `/${narInfo.url}`);
          if (got.status >= 500) failures.push(`NAR ${p}: ${got.status}`);
          if (got.status !== 200) continue;
          servedNars++;
        }
      }
    };
    const load = Promise.all(Array.from({ length: 4 }, client));
    const r = await runFsck(args, '--verify-content', '--repair');
    fsckDone = Date.now();
    await load;
    // Reads for a few seconds once fsck has returned: none may get the wrong bytes.
    let wrongAfterRepair = 0;
    const tail = Date.now() + 3_000;
    const after = Date.now();
    while (Date.now() < tail) {
      for (const p of [c.top, c.mid]) {
        const info = await request(ncps!.url, `/${hash(p)}.narinfo`);
        assert.equal(info.status, 200, `narinfo ${p} after the repair`);
        const narInfo = parseNarInfo(info.text);
        const got = await downloadHashed(ncps!.url, `/${narInfo.url}`);
        if (got.status === 200 && !Buffer.from(got.sha256, 'hex').equals(narInfo.fileHash!.digest)) wrongAfterRepair++;
        assert.notEqual(got.status, 500);
      }
    }
    t.diagnostic(`${requests} requests during fsck, ${servedNars} NARs served; ${Date.now() - after} ms of reads after it`);
    for (const line of summaryOf(r).split('\n')) t.diagnostic(line);

    assert.equal(r.code, 0, diag(r));
    const expected = [`nar-content ${nar(c.mid)}`, `nar-missing ${nar(c.leaf)}`].sort();
    assert.deepEqual(r.found, expected, diag(r));
    assert.deepEqual(r.repaired, expected, diag(r));
    assert.deepEqual(failures, []);
    assert.equal(wrongAfterRepair, 0, 'no wrong byte served once fsck returned');
    assert.deepEqual((await backend.quarantined()).map((f) => f.replace(/\.\d{8}T\d{6}Z$/, '')), [nar(c.mid)]);

    // The real client gets the whole closure again; fsck (beside the server) finds nothing.
    await substituteAndVerify(c, { substituter: ncps!.url, trustedPublicKey: serveKey.publicKey, ncps, what: 'after the live repair' });
    await waitForStored(backend, 3);
    const again = await runFsck(args, '--verify-content');
    assert.equal(again.code, 0, diag(again));
    assert.deepEqual(again.found, []);
  });
});

/** The narinfo as the upstream serves it (what the fingerprint of ours is made from). */
async function narInfoFromUpstream(upstream: SignedCache, hash: string) {
  const r = await request(upstream.url, `/${hash}.narinfo`);
  assert.equal(r.status, 200);
  return parseNarInfo(r.text);
}

async function narInfoFromDb(backend: Backend, hash: string) {
  const [row] = await backend.sql<Record<string, unknown>>(
    'SELECT store_path, url, compression, file_hash, file_size, nar_hash, nar_size FROM narinfos WHERE hash = $1',
    [hash],
  );
  assert.ok(row, `narinfo ${hash} in the database`);
  const refs = await backend.sql<{ reference: string }>(
    'SELECT reference FROM narinfo_references WHERE narinfo_id = (SELECT id FROM narinfos WHERE hash = $1) ORDER BY position',
    [hash],
  );
  const sigs = await backend.sql<{ signature: string }>(
    'SELECT signature FROM narinfo_signatures WHERE narinfo_id = (SELECT id FROM narinfos WHERE hash = $1) ORDER BY position',
    [hash],
  );
  const text = [
    `StorePath: ${String(row.store_path)}`,
    `URL: ${String(row.url)}`,
    ...(row.compression ? [`Compression: ${String(row.compression)}`] : []),
    ...(row.file_hash ? [`FileHash: ${String(row.file_hash)}`, `FileSize: ${String(row.file_size)}`] : []),
    `NarHash: ${String(row.nar_hash)}`,
    `NarSize: ${String(row.nar_size)}`,
    `References: ${refs.map((r) => r.reference).join(' ')}`,
    ...sigs.map((s) => `Sig: ${s.signature}`),
    '',
  ].join('\n');
  return parseNarInfo(text);
}
