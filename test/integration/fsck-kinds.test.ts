// The kinds of problem the Nix-client damage test (fsck.test.ts) does not make, checked against a
// real SQLite database and local storage, through the same checkCache/repairFindings the command
// runs: a narinfo pointing at no NAR record, a NAR stored but not counted, a NAR that was never
// stored and cannot be fetched, small files missing, of the wrong size, unparseable, unrecorded or
// orphaned, a NAR whose decompressor is not installed, and what a store with legacy narinfo files
// leaves unjudged. Each is found exactly, repaired, and a second check is clean.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rm, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { checkCache, repairFindings, type FsckOptions } from '../../src/cache/fsck/fsck';
import { SqliteDatabase } from '../../src/db/sqlite';
import { LocalLocker } from '../../src/lock/local';
import { encodeNix32, generateSecretKey, parseNarInfo, signNarInfo, type SecretKey } from '../../src/nix';
import { LocalStorage } from '../../src/storage/local';
import { createLogger } from '../../src/telemetry/logger';
import { randomStoreHash, withSqlite, writeLegacyNarInfo, syntheticNarInfo } from '../helpers/legacy';
import { NCPS_BUNDLE, runNcps } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir, run } from '../helpers/proc';

const HOUR = 3600_000;

/** `script` gives the command a terminal (util-linux; Debian's bsdutils). */
const haveScript = (() => {
  try {
    return require('node:child_process').spawnSync('script', ['--version']).status === 0;
  } catch {
    return false;
  }
})();

function sh(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

interface Cache {
  dir: string;
  db: SqliteDatabase;
  storage: LocalStorage;
  key: SecretKey;
  options(extra?: Partial<FsckOptions>): FsckOptions;
  /** A stored, uncompressed store path; returns its hash and NAR name. */
  addPath(opts?: { stored?: boolean; upstream?: boolean; compression?: 'none' | 'xz' }): Promise<{ hash: string; nar: string }>;
  sql(query: string, ...params: unknown[]): void;
}

async function cache(): Promise<Cache> {
  const dir = await makeTempDir('fsck-kinds');
  const db = new SqliteDatabase(path.join(dir, 'db.sqlite'));
  await db.migrate();
  const storage = new LocalStorage(dir);
  const key = generateSecretKey('kinds-1');
  const logger = createLogger('silent' as never);
  return {
    dir,
    db,
    storage,
    key,
    options: (extra = {}) => ({ db, storage, locker: new LocalLocker(), logger, signingKey: key, verifyContent: true, verifiedSinceMs: 0, lockTtlMs: 60_000, ...extra }),
    async addPath(opts = {}) {
      const hash = randomStoreHash();
      const bytes = randomBytes(1000 + Math.floor(Math.random() * 1000));
      const digest = encodeNix32(createHash('sha256').update(bytes).digest());
      const compression = opts.compression ?? 'none';
      const nar = `${digest}.nar${compression === 'xz' ? '.xz' : ''}`;
      const text = [
        `StorePath: /nix/store/${hash}-kinds`,
        `URL: nar/${nar}`,
        `Compression: ${compression}`,
        `FileHash: sha256:${digest}`,
        `FileSize: ${bytes.length}`,
        `NarHash: sha256:${digest}`,
        `NarSize: ${bytes.length}`,
        'References: ',
        '',
      ].join('\n');
      const narInfo = signNarInfo(parseNarInfo(text), key);
      await db.putNarInfo(hash, narInfo, {
        name: nar,
        compression,
        fileHash: `sha256:${digest}`,
        fileSize: bytes.length,
        narHash: `sha256:${digest}`,
        narSize: bytes.length,
        ...(opts.upstream ? { upstreamUrl: `http://upstream.invalid/nar/${nar}` } : {}),
      });
      if (opts.stored ?? true) {
        const temp = path.join(storage.tempDir, `${nar}.part`);
        await writeFile(temp, bytes);
        await storage.putNarFromFile(nar, temp);
        await db.markNarFileStored(nar, bytes.length);
      }
      return { hash, nar };
    },
    sql(query, ...params) {
      withSqlite(path.join(dir, 'db.sqlite'), (raw) => raw.prepare(query).run(...params));
    },
  };
}

const found = (findings: Array<{ kind: string; subject: string }>) => findings.map((f) => `${f.kind} ${f.subject}`).sort();

after(() => cleanupTempDirs());

describe('fsck: the other kinds of problem', () => {
  it('each is found exactly, repaired, and the second check is clean', async () => {
    const c = await cache();
    try {
      await c.addPath(); // intact
      const dangling = await c.addPath();
      c.sql('UPDATE narinfos SET nar_file_id = NULL WHERE hash = ?', dangling.hash);
      const unmarked = await c.addPath();
      c.sql('UPDATE nar_files SET stored_at = NULL WHERE name = ?', unmarked.nar);
      const unfetchable = await c.addPath({ stored: false });
      const later = await c.addPath({ stored: false, upstream: true }); // fetched on demand: fine

      // Small files, with their records.
      const put = async (kind: 'ls' | 'log' | 'realisations' | 'build-trace-v2', name: string, data: string, size = Buffer.byteLength(data)) => {
        await c.storage.putAuxFile(kind, name, Buffer.from(data));
        await c.db.putAuxFile({ kind, name, size });
      };
      const logName = `${randomStoreHash()}-kinds.drv`;
      await put('log', logName, 'build log');
      await c.storage.deleteAuxFile('log', logName);
      const realisation = `${'ab'.repeat(32)}!out.doi`;
      await put('realisations', realisation, '{"id":"x"}', 3);
      const trace = `${randomStoreHash()}-kinds.drv/out.doi`;
      await put('build-trace-v2', trace, '{not json');
      // Listings: one of a path that is there (unrecorded), one of a path that is not (two hours
      // old: an orphan), one of a path that is not but only just written (not judged yet).
      const listed = await c.addPath();
      await c.storage.putAuxFile('ls', `${listed.hash}.ls`, Buffer.from('{"version":1}'));
      const orphan = `${randomStoreHash()}.ls`;
      await c.storage.putAuxFile('ls', orphan, Buffer.from('{"version":1}'));
      const old = new Date(Date.now() - 2 * HOUR);
      await utimes(path.join(c.dir, 'store', 'ls', orphan[0]!, orphan.slice(0, 2), orphan), old, old);
      await c.storage.putAuxFile('ls', `${randomStoreHash()}.ls`, Buffer.from('{"version":1}'));
      c.sql('UPDATE schema_migrations SET applied_at = ?', Date.now() - 3 * HOUR);
      // Records naming files outside ncps's layout: only the records go, storage is not touched.
      const outside = path.join(await makeTempDir('fsck-outside'), 'not-ours');
      await writeFile(outside, 'not ours');
      // Storage puts `<name>` at store/<kind>/<name[0]>/<name[0..1]>/<name>: from store/ on.
      const escape = path.relative(path.join(c.dir, 'store'), outside);
      assert.ok(escape.startsWith('../'));
      c.sql(
        `INSERT INTO nar_files (name, compression, nar_hash, nar_size, stored_at, created_at, last_accessed_at) VALUES (?, 'none', 'sha256:x', 8, 1, 1, 1)`,
        escape,
      );
      c.sql(
        `INSERT INTO narinfos (hash, store_path, url, nar_hash, nar_size, nar_file_id, created_at, last_accessed_at)
         VALUES (?, ?, 'nar/x.nar', 'sha256:${'0'.repeat(52)}', 8, (SELECT id FROM nar_files WHERE name = ?), 1, 1)`,
        'z'.repeat(32),
        `/nix/store/${'z'.repeat(32)}-escape`,
        escape,
      );
      // (As a listing that is not JSON, it would be removed, were storage looked at for it.)
      await c.db.putAuxFile({ kind: 'ls', name: escape, size: 8 });

      const report = await checkCache(c.options());
      assert.deepEqual(
        found(report.findings),
        [
          `narinfo-without-nar ${dangling.hash}`,
          `nar-record-unused ${dangling.nar}`,
          `nar-unmarked ${unmarked.nar}`,
          `nar-missing ${unfetchable.nar}`,
          `small-file-missing log/${logName}`,
          `small-file-size realisations/${realisation}`,
          `small-file-unreadable build-trace-v2/${trace}`,
          `small-file-unrecorded ls/${listed.hash}.ls`,
          `listing-orphaned ls/${orphan}`,
          `nar-missing ${escape}`,
          `narinfo-signature ${'z'.repeat(32)}`,
          `small-file-missing ls/${escape}`,
        ].sort(),
      );
      assert.equal(report.findings.find((f) => f.subject === unfetchable.nar)?.detail, 'never stored, and no upstream to fetch it from');
      assert.equal(report.findings.find((f) => f.subject === escape)?.detail, 'not a NAR file name ncps serves');
      assert.equal(report.counts.unrecordedYoung, 1, 'the young listing is not judged yet');
      assert.ok(!found(report.findings).some((f) => f.includes(later.nar)), 'a NAR fetched on demand is not missing');

      const results = await repairFindings(c.options(), report.findings);
      assert.deepEqual(results.map((r) => r.status), report.findings.map(() => 'repaired'), JSON.stringify(results.map((r) => [r.finding.kind, r.status, r.error])));
      assert.equal((await c.db.getNarFile(unmarked.nar))?.storedAt !== undefined, true, 'counted as stored');
      assert.equal(await c.db.getNarInfo(dangling.hash), undefined);
      assert.equal(await c.storage.statNar(dangling.nar), undefined, 'the unused NAR record went with its file');
      assert.equal(await c.db.getNarInfo(unfetchable.hash), undefined, 'a narinfo whose NAR cannot be had is a miss now');
      assert.equal(await c.storage.statAuxFile('build-trace-v2', trace), undefined);
      assert.equal(await c.storage.statAuxFile('ls', orphan), undefined);
      assert.ok(await c.storage.statAuxFile('ls', `${listed.hash}.ls`), 'a listing of a path that is there is kept, and recorded');
      assert.ok(existsSync(outside), 'nothing outside the storage directory was touched');
      assert.equal(await c.db.getNarFile(escape), undefined);

      const again = await checkCache(c.options());
      assert.deepEqual(found(again.findings), []);
      assert.equal(again.counts.narsVerified, 3, 'intact, unmarked (now counted) and listed NARs verified');
    } finally {
      await c.db.close();
    }
  });

  it('a NAR whose decompressor cannot run is reported as unverifiable, and nothing is repaired about it', async () => {
    const c = await cache();
    const emptyPath = await makeTempDir('no-tools');
    const saved = process.env.PATH;
    try {
      const xz = await c.addPath({ compression: 'xz' });
      process.env.PATH = emptyPath;
      const report = await checkCache(c.options());
      process.env.PATH = saved;
      assert.deepEqual(found(report.findings), [`nar-unverifiable ${xz.nar}`]);
      assert.match(report.findings[0]!.detail ?? '', /cannot run xz/);
      const [result] = await repairFindings(c.options(), report.findings);
      assert.equal(result?.status, 'unrepairable');
      assert.ok(await c.storage.statNar(xz.nar), 'the file stays');
    } finally {
      process.env.PATH = saved;
      await c.db.close();
    }
  });

  it('signatures are not checked without a serving key; unrecorded files wait while legacy narinfo files are there', async () => {
    const c = await cache();
    try {
      const p = await c.addPath();
      c.sql(`UPDATE narinfo_signatures SET signature = 'other-1:' || signature WHERE narinfo_id = (SELECT id FROM narinfos WHERE hash = ?)`, p.hash);
      const unsigned = await checkCache(c.options({ signingKey: undefined, verifyContent: false }));
      assert.deepEqual(found(unsigned.findings), []);
      assert.equal(unsigned.signingKeyName, undefined);
      const signed = await checkCache(c.options({ verifyContent: false }));
      assert.deepEqual(found(signed.findings), [`narinfo-signature ${p.hash}`]);

      // A NAR nothing records, old enough to be an orphan, beside a legacy narinfo file.
      const name = `${encodeNix32(randomBytes(32))}.nar.xz`;
      const file = path.join(c.dir, 'store', 'nar', name[0]!, name.slice(0, 2), name);
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, randomBytes(100));
      const old = new Date(Date.now() - 2 * HOUR);
      await utimes(file, old, old);
      c.sql('UPDATE schema_migrations SET applied_at = ?', Date.now() - 3 * HOUR);
      const legacyHash = randomStoreHash();
      await writeLegacyNarInfo(c.dir, legacyHash, syntheticNarInfo(legacyHash, c.key));
      const waiting = await checkCache(c.options({ verifyContent: false }));
      assert.ok(!found(waiting.findings).some((f) => f.startsWith('nar-unrecorded')), found(waiting.findings).join('\n'));
      assert.ok(waiting.notes.some((n) => /1 NAR files without a record were not judged: storage still holds narinfo files/.test(n)), waiting.notes.join('\n'));
      await rm(path.join(c.dir, 'store', 'narinfo'), { recursive: true });
      const judged = await checkCache(c.options({ verifyContent: false }));
      assert.ok(found(judged.findings).includes(`nar-unrecorded ${name}`));
      assert.ok(existsSync(file), 'a check alone removes nothing');
    } finally {
      await c.db.close();
    }
  });
});

describe('ncps fsck, the command', () => {
  it('refuses a storage directory or database that does not exist and an unreadable key file (exit 2), and an unmigrated database (exit 1)', async () => {
    const dir = await makeTempDir('fsck-refusals');
    const missing = await runNcps(['fsck', `--cache-storage-local=${path.join(dir, 'nope')}`]);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /--cache-storage-local .*nope does not exist .*ncps fsck works on an existing cache and does not create one/);
    assert.equal(existsSync(path.join(dir, 'nope')), false, 'nothing created');
    const noDb = await runNcps(['fsck', `--cache-storage-local=${dir}`]);
    assert.equal(noDb.code, 2, noDb.stderr);
    assert.match(noDb.stderr, /there is no SQLite database at .*db\.sqlite.*ncps fsck does not create one/);

    const blank = path.join(dir, 'blank.sqlite');
    await writeFile(blank, '');
    const unmigrated = await runNcps(['fsck', `--cache-storage-local=${dir}`, `--cache-database-url=sqlite:${blank}`]);
    assert.equal(unmigrated.code, 1, unmigrated.stderr);
    assert.match(unmigrated.stderr, /not migrated yet; run ncps migrate up/);
    // A key file it cannot read: a configuration mistake, before anything is opened.
    const badKey = await runNcps(['fsck', `--cache-storage-local=${dir}`, `--cache-database-url=sqlite:${blank}`, `--cache-secret-key-path=${path.join(dir, 'no-key')}`]);
    assert.equal(badKey.code, 2, badKey.stderr);
    assert.match(badKey.stderr, /cannot read --cache-secret-key-path/);
  });

  it('on a terminal it draws a bar per phase and asks before repairing: no changes nothing, yes repairs', { skip: haveScript ? false : 'script (util-linux) not installed' }, async () => {
    const c = await cache();
    const p = await c.addPath();
    c.sql('UPDATE nar_files SET stored_at = NULL WHERE name = ?', p.nar);
    await c.db.close();
    const args = ['fsck', `--cache-storage-local=${c.dir}`, `--cache-database-url=sqlite:${path.join(c.dir, 'db.sqlite')}`];
    const command = [process.execPath, NCPS_BUNDLE, ...args].map(sh).join(' ');
    const onTerminal = (answer: string) => run('script', ['-q', '-e', '-c', command, '/dev/null'], { input: `${answer}\n`, timeoutMs: 60_000 });
    const stored = () => withSqlite(path.join(c.dir, 'db.sqlite'), (db) => db.prepare('SELECT stored_at FROM nar_files WHERE name = ?').get(p.nar) as { stored_at: number | null });

    const no = await onTerminal('n');
    assert.equal(no.code, 1, no.stdout);
    assert.match(no.stdout, /Repair this problem\? \[y\/N\]/);
    assert.match(no.stdout, /\rchecking NAR records \[#{30}\] 1\/1/, `a bar for the phase:\n${JSON.stringify(no.stdout)}`);
    assert.match(no.stdout, /^1 problem found\r?$/m);
    assert.match(no.stdout, /Nothing changed\./);
    assert.equal(stored().stored_at, null, 'no: nothing changed');

    const yes = await onTerminal('y');
    assert.equal(yes.code, 0, yes.stdout);
    assert.match(yes.stdout, /1 problem found, 1 repaired/);
    assert.notEqual(stored().stored_at, null, 'yes: repaired');

    const piped = await runNcps(args);
    assert.equal(piped.code, 0, piped.stdout + piped.stderr);
    assert.doesNotMatch(piped.stderr, /\r/, 'no bar when not on a terminal');
  });
});
