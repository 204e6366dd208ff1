// `ncps migrate-narinfo`, option 2 of the upgrading guide: moves the narinfo files an older ncps
// kept in storage into the database in bulk, deleting each file once its row is committed.
// Checked with a closure made by the real Nix client (served afterwards to the real Nix client),
// and with thousands of synthetic files for dry runs, kill -9 and resume, invalid files, the
// live-server refusal and the progress log lines.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { LATEST_SCHEMA_VERSION } from '../../src/db/migrations';
import { generateSecretKey, parseSecretKey } from '../../src/nix';
import { substituteAndVerify, teardown } from '../helpers/fixture';
import { request } from '../helpers/http';
import {
  createV1Database,
  legacyNarInfoPath,
  listLegacyNarInfoFiles,
  makeLegacyDataDir,
  narInfoHashesInDb,
  randomStoreHash,
  schemaVersionsInDb,
  syntheticNarInfo,
  withSqlite,
  writeLegacyNarInfo,
  writeSyntheticLegacyNarInfos,
  type LegacyDataDir,
} from '../helpers/legacy';
import { freePort, NCPS_BUNDLE, REPO_ROOT, runNcps, startNcps, type NcpsProcess } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir, nixAvailable, sleep } from '../helpers/nix';
import type { RunResult } from '../helpers/proc';

const skipNix = nixAvailable() ? false : 'nix-bin not installed';
// Several suites may run at once on two cores: be generous.
const TIMEOUT = 300_000;
const HOOK_TIMEOUT = 600_000;
const UNRELATED_KEY = generateSecretKey('unrelated-upstream-1').publicKey.text;

function runDiag(r: RunResult): string {
  return `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}\n--- stdout\n${r.stdout.slice(-6000)}\n--- stderr\n${r.stderr.slice(-4000)}`;
}

/** Most data directories here are an old ncps's store without a database of this ncps yet. */
function migrateNarinfo(args: string[], timeoutMs = 240_000): Promise<RunResult> {
  return runNcps(['migrate-narinfo', '--create-database', ...args], { timeoutMs });
}

interface Summary {
  dryRun: boolean;
  total: number;
  migrated: number;
  already: number;
  failed: number;
}

/** Parses the summary line migrate-narinfo prints at the end. */
function summary(r: RunResult): Summary {
  const m =
    /^(dry run: )?(\d+) legacy narinfo files: (?:would migrate|migrated) (\d+), already in the database (\d+), failed (\d+)$/m.exec(r.stdout);
  assert.ok(m, `no summary line in the output:\n${runDiag(r)}`);
  return { dryRun: Boolean(m[1]), total: Number(m[2]), migrated: Number(m[3]), already: Number(m[4]), failed: Number(m[5]) };
}

interface ProgressLine {
  msg: string;
  done: number;
  total: number;
  failed: number;
  ratePerSecond: number;
  etaSeconds: number | null;
}

/** The progress log lines (JSON, one every 5 s and a last one at the end) of a non-TTY run. */
function progressLines(r: RunResult): ProgressLine[] {
  const lines: ProgressLine[] = [];
  for (const text of (r.stdout + '\n' + r.stderr).split('\n')) {
    if (!text.startsWith('{')) continue;
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(text) as Record<string, unknown>;
    } catch {
      continue;
    }
    if (typeof line.msg === 'string' && /progress/.test(line.msg)) lines.push(line as unknown as ProgressLine);
  }
  return lines;
}

function assertProgressLine(line: ProgressLine, expected: { total: number; failed: number; final: boolean }): void {
  assert.equal(typeof line.done, 'number', JSON.stringify(line));
  assert.equal(line.total, expected.total, JSON.stringify(line));
  assert.equal(typeof line.failed, 'number', JSON.stringify(line));
  assert.equal(typeof line.ratePerSecond, 'number', JSON.stringify(line));
  assert.ok(line.ratePerSecond >= 0, JSON.stringify(line));
  assert.ok(line.etaSeconds === null || (typeof line.etaSeconds === 'number' && line.etaSeconds >= 0), JSON.stringify(line));
  if (expected.final) {
    assert.equal(line.done, expected.total, `last progress line: ${JSON.stringify(line)}`);
    assert.equal(line.failed, expected.failed, `last progress line: ${JSON.stringify(line)}`);
    if (expected.total > 0) assert.equal(line.etaSeconds, 0, `nothing left at the end: ${JSON.stringify(line)}`);
  }
}

function defaultDb(dataDir: string): string {
  return path.join(dataDir, 'db', 'db.sqlite');
}

// ---------------------------------------------------------------------------------------------

describe('migrate-narinfo on a data directory made by the real Nix client', { skip: skipNix }, () => {
  let legacy: LegacyDataDir;
  let ncps: NcpsProcess | undefined;

  before(
    async () => {
      legacy = await makeLegacyDataDir({ label: 'mig-cli' });
    },
    { timeout: HOOK_TIMEOUT },
  );

  after(() => teardown(ncps), { timeout: HOOK_TIMEOUT });

  it('--dry-run reports the count and changes nothing', { timeout: TIMEOUT }, async () => {
    const r = await migrateNarinfo([`--cache-storage-local=${legacy.dataDir}`, '--dry-run']);
    assert.equal(r.code, 0, runDiag(r));
    const s = summary(r);
    assert.deepEqual(s, { dryRun: true, total: legacy.hashes.length, migrated: legacy.hashes.length, already: 0, failed: 0 }, runDiag(r));
    assert.deepEqual(await listLegacyNarInfoFiles(legacy.dataDir), legacy.hashes, 'every file still there');
    const dbFile = defaultDb(legacy.dataDir);
    assert.equal(existsSync(dbFile), false, 'a dry run creates no database');
    assertProgressLine(progressLines(r).at(-1)!, { total: legacy.hashes.length, failed: 0, final: true });
  });

  it('migrates every file into the database (explicit --cache-database-url) and deletes them', { timeout: TIMEOUT }, async () => {
    const dbFile = defaultDb(legacy.dataDir);
    const r = await migrateNarinfo([`--cache-database-url=sqlite:${dbFile}`, `--cache-storage-local=${legacy.dataDir}`]);
    assert.equal(r.code, 0, runDiag(r));
    assert.deepEqual(summary(r), { dryRun: false, total: legacy.hashes.length, migrated: legacy.hashes.length, already: 0, failed: 0 });
    assert.deepEqual(await listLegacyNarInfoFiles(legacy.dataDir), [], 'no legacy file left');
    assert.deepEqual(narInfoHashesInDb(dbFile), legacy.hashes);
    withSqlite(dbFile, (db) => {
      for (const name of legacy.narNames) {
        const row = db.prepare<[string], { stored_at: number | null }>('SELECT stored_at FROM nar_files WHERE name = ?').get(name);
        assert.ok(row && row.stored_at !== null, `${name} should be recorded as stored`);
      }
    });
  });

  it('finds nothing to do when run again (database at its default place)', { timeout: TIMEOUT }, async () => {
    const r = await migrateNarinfo([`--cache-storage-local=${legacy.dataDir}`]);
    assert.equal(r.code, 0, runDiag(r));
    assert.deepEqual(summary(r), { dryRun: false, total: 0, migrated: 0, already: 0, failed: 0 });
  });

  it('leaves a database the server serves every path from, signed by the old key', { timeout: TIMEOUT }, async () => {
    ncps = await startNcps({
      upstreams: [`http://127.0.0.1:${await freePort()}`],
      publicKeys: [UNRELATED_KEY],
      dataDir: legacy.dataDir,
      extraArgs: [`--cache-database-url=sqlite:${defaultDb(legacy.dataDir)}`],
      readyTimeoutMs: 60_000,
    });
    assert.equal(await ncps.publicKey(), legacy.oldKey.publicKey);
    await substituteAndVerify(legacy.closure, { substituter: ncps.url, trustedPublicKey: legacy.oldKey.publicKey, ncps });
    assert.deepEqual(await listLegacyNarInfoFiles(legacy.dataDir), []);
    assert.ok(!existsSync(path.join(legacy.dataDir, 'store', 'narinfo')) || (await listLegacyNarInfoFiles(legacy.dataDir)).length === 0);
  });
});

// ---------------------------------------------------------------------------------------------

describe('migrate-narinfo --dry-run on a database that is not at the latest schema yet', () => {
  after(() => cleanupTempDirs());

  it('checks the files without migrating the schema (schema-1 database)', { timeout: TIMEOUT }, async () => {
    const dataDir = await makeTempDir('mig-dry-v1');
    const dbFile = defaultDb(dataDir);
    await mkdir(path.dirname(dbFile), { recursive: true });
    createV1Database(dbFile);
    const { hashes } = await writeSyntheticLegacyNarInfos(dataDir, 7);
    const r = await migrateNarinfo([`--cache-storage-local=${dataDir}`, '--dry-run']);
    assert.equal(r.code, 0, runDiag(r));
    assert.deepEqual(summary(r), { dryRun: true, total: hashes.length, migrated: hashes.length, already: 0, failed: 0 }, runDiag(r));
    assert.deepEqual(schemaVersionsInDb(dbFile), [1], 'the dry run leaves the schema alone');
    assert.deepEqual(await listLegacyNarInfoFiles(dataDir), hashes);

    // The real run migrates the schema and the files.
    const real = await migrateNarinfo([`--cache-storage-local=${dataDir}`]);
    assert.equal(real.code, 0, runDiag(real));
    assert.deepEqual(summary(real), { dryRun: false, total: hashes.length, migrated: hashes.length, already: 0, failed: 0 });
    assert.equal(Math.max(...schemaVersionsInDb(dbFile)), LATEST_SCHEMA_VERSION);
    assert.deepEqual(narInfoHashesInDb(dbFile), hashes);
  });
});

// ---------------------------------------------------------------------------------------------

describe('migrate-narinfo beside a live server (no Redis)', () => {
  let dataDir: string;
  let dbFile: string;
  let ncps: NcpsProcess | undefined;
  let first: string[];

  before(
    async () => {
      dataDir = await makeTempDir('mig-live');
      dbFile = path.join(dataDir, 'db.sqlite');
      first = (await writeSyntheticLegacyNarInfos(dataDir, 20)).hashes;
      ncps = await startNcps({ upstreams: [`http://127.0.0.1:${await freePort()}`], publicKeys: [UNRELATED_KEY], dataDir, readyTimeoutMs: 60_000 });
    },
    { timeout: HOOK_TIMEOUT },
  );
  after(async () => {
    await ncps?.stop();
    await cleanupTempDirs();
  });

  const flags = () => [`--cache-storage-local=${dataDir}`, `--cache-database-url=sqlite:${dbFile}`];

  it('refuses while a server uses the database, naming it', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    const r = await migrateNarinfo(flags());
    assert.notEqual(r.code, 0, runDiag(r));
    assert.match(r.stderr, /an ncps server is using this database/, runDiag(r));
    assert.match(r.stderr, new RegExp(`pid ${ncps.proc.pid}\\b`), runDiag(r));
    assert.match(r.stderr, /--force/);
    assert.deepEqual(await listLegacyNarInfoFiles(dataDir), first, 'nothing touched');
    assert.deepEqual(narInfoHashesInDb(dbFile), []);
  });

  it('refuses too when Redis addresses are given but the lock backend is local (nothing coordinates)', { timeout: TIMEOUT }, async () => {
    const r = await migrateNarinfo([...flags(), `--cache-redis-addrs=127.0.0.1:${await freePort()}`, '--cache-lock-backend=local']);
    assert.notEqual(r.code, 0, runDiag(r));
    assert.match(r.stderr, /an ncps server is using this database/, runDiag(r));
    assert.deepEqual(await listLegacyNarInfoFiles(dataDir), first, 'nothing touched');
  });

  it('--dry-run is allowed (it changes nothing)', { timeout: TIMEOUT }, async () => {
    const r = await migrateNarinfo([...flags(), '--dry-run']);
    assert.equal(r.code, 0, runDiag(r));
    assert.equal(summary(r).total, first.length);
    assert.deepEqual(await listLegacyNarInfoFiles(dataDir), first);
  });

  it('runs with --force', { timeout: TIMEOUT }, async () => {
    const r = await migrateNarinfo([...flags(), '--force']);
    assert.equal(r.code, 0, runDiag(r));
    assert.deepEqual(summary(r), { dryRun: false, total: first.length, migrated: first.length, already: 0, failed: 0 });
    assert.deepEqual(await listLegacyNarInfoFiles(dataDir), []);
    assert.deepEqual(narInfoHashesInDb(dbFile), first);
    // The live server serves them from the database.
    assert.ok(ncps);
    const res = await request(ncps.url, `/${first[0]}.narinfo`);
    assert.equal(res.status, 200, res.text);
  });

  it('runs without --force once the server stopped', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    assert.equal(await ncps.stop(), 0);
    ncps = undefined;
    const more = (await writeSyntheticLegacyNarInfos(dataDir, 5, { writeKey: false })).hashes;
    const r = await migrateNarinfo(flags());
    assert.equal(r.code, 0, runDiag(r));
    assert.deepEqual(summary(r), { dryRun: false, total: 5, migrated: 5, already: 0, failed: 0 });
    assert.deepEqual(narInfoHashesInDb(dbFile), [...first, ...more].sort());
  });
});

// ---------------------------------------------------------------------------------------------

describe('migrate-narinfo killed with SIGKILL and run again', () => {
  const N = 3000;
  let dataDir: string;
  let dbFile: string;
  let hashes: string[];

  before(
    async () => {
      dataDir = await makeTempDir('mig-kill');
      dbFile = defaultDb(dataDir);
      hashes = (await writeSyntheticLegacyNarInfos(dataDir, N)).hashes;
    },
    { timeout: HOOK_TIMEOUT },
  );
  after(() => cleanupTempDirs());

  /** Rows so far (0 while the database or its tables do not exist yet). */
  function rowCount(db: BetterSqlite3.Database | undefined): number {
    if (!db) return 0;
    try {
      return db.prepare<[], { n: number }>('SELECT count(*) AS n FROM narinfos').get()!.n;
    } catch {
      return 0;
    }
  }

  it('loses nothing, duplicates nothing, and finishes on the second run', { timeout: TIMEOUT }, async () => {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (!/^(CACHE_|NCPS_|OTEL_|PROMETHEUS_|REDIS_)|^(SERVER_ADDR|LOG_LEVEL|NETRC_FILE|NOTIFY_SOCKET)$/.test(k)) env[k] = v;
    }
    const child = spawn(process.execPath, [NCPS_BUNDLE, 'migrate-narinfo', '--create-database', `--cache-storage-local=${dataDir}`, '--concurrency=4'], {
      cwd: REPO_ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr.on('data', (b: Buffer) => (output += b.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('exit', (code, signal) => resolve({ code, signal })),
    );
    let exitedEarly = false;
    void exited.then(() => (exitedEarly = true));

    // Kill it as soon as some rows are committed.
    let db: BetterSqlite3.Database | undefined;
    let seen = 0;
    const deadline = Date.now() + 120_000;
    try {
      while (!exitedEarly && Date.now() < deadline) {
        if (!db && existsSync(dbFile)) db = new BetterSqlite3(dbFile, { fileMustExist: true });
        seen = rowCount(db);
        if (seen > 0) break;
        await sleep(5);
      }
      child.kill('SIGKILL');
    } finally {
      db?.close();
    }
    const { signal } = await exited;
    assert.equal(signal, 'SIGKILL', `migrate-narinfo should still have been running when killed (rows seen: ${seen}):\n${output.slice(-3000)}`);

    const inDb = new Set(narInfoHashesInDb(dbFile));
    const left = await listLegacyNarInfoFiles(dataDir);
    assert.ok(inDb.size > 0, 'some were migrated before the kill');
    assert.ok(left.length > 0, `all ${N} were done before the kill: use more files`);
    const union = new Set([...inDb, ...left]);
    assert.equal(union.size, N, `after the kill every hash is in the database or still a file (lost: ${hashes.filter((h) => !union.has(h)).slice(0, 5).join(' ')})`);
    for (const hash of left) assert.ok(hashes.includes(hash));
    withSqlite(dbFile, (d) => assert.equal(d.pragma('integrity_check', { simple: true }), 'ok'));
    const both = left.filter((h) => inDb.has(h)).length;

    const r = await migrateNarinfo([`--cache-storage-local=${dataDir}`, '--concurrency=4']);
    assert.equal(r.code, 0, runDiag(r));
    assert.deepEqual(summary(r), { dryRun: false, total: left.length, migrated: left.length - both, already: both, failed: 0 });
    assert.deepEqual(await listLegacyNarInfoFiles(dataDir), [], 'no legacy file left');

    withSqlite(dbFile, (d) => {
      const dup = d.prepare('SELECT hash, count(*) AS n FROM narinfos GROUP BY hash HAVING n > 1').all();
      assert.deepEqual(dup, [], 'every hash has exactly one row');
      const sigs = d
        .prepare('SELECT n.hash, count(s.signature) AS k FROM narinfos n LEFT JOIN narinfo_signatures s ON s.narinfo_id = n.id GROUP BY n.id HAVING k <> 1')
        .all();
      assert.deepEqual(sigs.slice(0, 5), [], 'each narinfo keeps exactly its one signature');
      const orphans = d.prepare('SELECT count(*) AS n FROM narinfo_references r LEFT JOIN narinfos n ON n.id = r.narinfo_id WHERE n.id IS NULL').get() as { n: number };
      assert.equal(orphans.n, 0);
    });
    assert.deepEqual(narInfoHashesInDb(dbFile), hashes, 'the set of hashes in the database is the generated set');

    // Non-TTY progress: JSON log lines, at least the final one.
    const lines = progressLines(r);
    assert.ok(lines.length >= 1, `no progress log line:\n${runDiag(r)}`);
    for (const line of lines) assertProgressLine(line, { total: left.length, failed: 0, final: false });
    assertProgressLine(lines.at(-1)!, { total: left.length, failed: 0, final: true });
    assert.doesNotMatch(r.stderr, /\r/, 'no terminal progress bar when stderr is not a terminal');
  });
});

// ---------------------------------------------------------------------------------------------

describe('migrate-narinfo with invalid legacy files', () => {
  let dataDir: string;
  let dbFile: string;
  let valid: string[];
  const bad: Record<string, string> = {};
  let ncps: NcpsProcess | undefined;

  before(
    async () => {
      dataDir = await makeTempDir('mig-invalid');
      dbFile = defaultDb(dataDir);
      const made = await writeSyntheticLegacyNarInfos(dataDir, 5);
      valid = made.hashes;
      bad.garbage = randomStoreHash();
      await writeLegacyNarInfo(dataDir, bad.garbage, 'this is not a narinfo\n\x00\x01 at all\n');
      // A valid, signed narinfo for one store path, filed under another path's hash.
      bad.otherPath = randomStoreHash();
      await writeLegacyNarInfo(dataDir, bad.otherPath, syntheticNarInfo(randomStoreHash(), made.key));
      // Right store path, but a NAR URL ncps could never serve.
      bad.badUrl = randomStoreHash();
      const text = syntheticNarInfo(bad.badUrl, made.key).replace(/^URL: .*$/m, 'URL: ../../../etc/passwd');
      await writeLegacyNarInfo(dataDir, bad.badUrl, text);
    },
    { timeout: HOOK_TIMEOUT },
  );
  after(async () => {
    await ncps?.stop();
    await cleanupTempDirs();
  });

  it('counts them as failed, lists them, leaves them in place, exits non-zero', { timeout: TIMEOUT }, async () => {
    const badHashes = Object.values(bad);
    const r = await migrateNarinfo([`--cache-storage-local=${dataDir}`]);
    assert.notEqual(r.code, 0, runDiag(r));
    assert.deepEqual(summary(r), { dryRun: false, total: valid.length + badHashes.length, migrated: valid.length, already: 0, failed: badHashes.length });
    for (const hash of badHashes) {
      assert.match(r.stdout, new RegExp(`^\\s*failed: .*${hash}`, 'm'), `the summary should list ${hash}:\n${runDiag(r)}`);
      assert.ok(existsSync(legacyNarInfoPath(dataDir, hash)), `${hash}.narinfo must stay in place`);
    }
    assert.match(r.stdout, new RegExp(`failed: ${bad.otherPath}\\.narinfo is for another store path`));
    assert.deepEqual(await listLegacyNarInfoFiles(dataDir), [...badHashes].sort());
    assert.deepEqual(narInfoHashesInDb(dbFile), valid, 'only the valid ones are in the database');
    assertProgressLine(progressLines(r).at(-1)!, { total: valid.length + badHashes.length, failed: badHashes.length, final: true });

    // A second run fails the same way and touches nothing else.
    const again = await migrateNarinfo([`--cache-storage-local=${dataDir}`]);
    assert.notEqual(again.code, 0, runDiag(again));
    assert.deepEqual(summary(again), { dryRun: false, total: badHashes.length, migrated: 0, already: 0, failed: badHashes.length });
  });

  it('the server does not serve them either (404), and leaves them in place', { timeout: TIMEOUT }, async () => {
    ncps = await startNcps({
      upstreams: [`http://127.0.0.1:${await freePort()}`],
      publicKeys: [UNRELATED_KEY],
      dataDir,
      extraArgs: [`--cache-database-url=sqlite:${dbFile}`],
      readyTimeoutMs: 60_000,
    });
    for (const [kind, hash] of Object.entries(bad)) {
      const res = await request(ncps.url, `/${hash}.narinfo`);
      assert.equal(res.status, 404, `${kind} legacy file served for ${hash}: ${res.status}\n${res.text}`);
      assert.ok(existsSync(legacyNarInfoPath(dataDir, hash)));
    }
    const res = await request(ncps.url, `/${valid[0]}.narinfo`);
    assert.equal(res.status, 200);
    assert.equal(parseSecretKey(readFileSync(path.join(dataDir, 'config', 'cache.key'), 'utf8')).publicKey.text, await ncps.publicKey());
  });
});

// ---------------------------------------------------------------------------------------------

describe('migrate-narinfo progress when not on a terminal', () => {
  let dataDir: string;
  after(() => cleanupTempDirs());

  it('logs JSON progress lines with done, total, failed, ratePerSecond and etaSeconds', { timeout: TIMEOUT }, async (t) => {
    dataDir = await makeTempDir('mig-progress');
    const { hashes } = await writeSyntheticLegacyNarInfos(dataDir, 3000);
    // Concurrency 1 slows it down enough that longer runs show a periodic line too.
    const started = Date.now();
    const r = await migrateNarinfo([`--cache-storage-local=${dataDir}`, '--concurrency=1']);
    const seconds = (Date.now() - started) / 1000;
    assert.equal(r.code, 0, runDiag(r));
    const lines = progressLines(r);
    t.diagnostic(`${hashes.length} files, process ${seconds.toFixed(1)} s: ${lines.length} progress line(s); last ${JSON.stringify(lines.at(-1))}`);
    assert.ok(lines.length >= 1, runDiag(r));
    for (const line of lines) {
      assert.match(line.msg, /^migrating: progress$/);
      assertProgressLine(line, { total: hashes.length, failed: 0, final: false });
    }
    assertProgressLine(lines.at(-1)!, { total: hashes.length, failed: 0, final: true });
    // The interval is 5 s. Lines before the last come every 5 s, and a migration phase (from
    // 'looking for legacy narinfo files' to the last line) clearly longer than that (listing the files comes first) shows one.
    const times = lines.map((l) => Date.parse((l as unknown as { time: string }).time));
    for (let i = 1; i < times.length - 1; i++) {
      const gap = times[i]! - times[i - 1]!;
      assert.ok(gap > 4000 && gap < 7000, `periodic progress lines ${gap} ms apart, expected about 5000`);
    }
    const looking = r.stdout.split('\n').find((l) => l.includes('"looking for legacy narinfo files"'));
    const phase = looking ? (times.at(-1)! - Date.parse((JSON.parse(looking) as { time: string }).time)) / 1000 : 0;
    if (phase > 7.5) assert.ok(lines.length >= 2, `a ${phase.toFixed(1)} s migration logged only ${lines.length} progress line(s)`);
    // done never goes backwards.
    for (let i = 1; i < lines.length; i++) assert.ok(lines[i]!.done >= lines[i - 1]!.done);
    await rm(dataDir, { recursive: true, force: true });
  });
});
