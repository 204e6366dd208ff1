// The orphan sweep: NARs whose narinfo never arrived and listings of paths that are not there are
// removed once they are older than an hour — by `ncps sweep-orphans` and before the server's LRU
// clean-ups — while recorded files, young files, files older than the database and stores with
// unmigrated narinfo files are left alone. Deleting or evicting a narinfo takes its listing along.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { rm, utimes } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { generateSecretKey } from '../../src/nix';
import { request } from '../helpers/http';
import { legacyNarInfoPath, narPath, randomStoreHash, syntheticNarInfo, withSqlite, writeLegacyNarInfo } from '../helpers/legacy';
import { runNcps, startNcps, type NcpsProcess } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir, sleep } from '../helpers/nix';
import { put, uploadNar } from '../helpers/upload';

const TIMEOUT = 120_000;
const HOUR = 60 * 60 * 1000;
const TWO_HOURS_AGO = new Date(Date.now() - 2 * HOUR);
const A_DAY_AGO = new Date(Date.now() - 24 * HOUR);

interface Uploaded {
  hash: string;
  narName: string;
  narFile: string;
  listingFile: string;
}

function listingPath(dataDir: string, hash: string): string {
  return path.join(dataDir, 'store', 'ls', hash.slice(0, 1), hash.slice(0, 2), `${hash}.ls`);
}

/** PUTs a NAR (and, unless told not to, its narinfo and listing) the way `nix copy` does. */
async function upload(ncps: NcpsProcess, opts: { narinfo: boolean; listing: boolean }): Promise<Uploaded> {
  const hash = randomStoreHash();
  const { narName, narinfo } = await uploadNar(ncps, 4096 + Math.floor(Math.random() * 4096));
  if (opts.listing) await put(ncps, `/upload/${hash}.ls`, '{"version":1,"root":{"type":"regular","size":1}}');
  if (opts.narinfo) await put(ncps, `/upload/${hash}.narinfo`, narinfo(hash));
  return { hash, narName, narFile: narPath(ncps.dataDir, narName), listingFile: listingPath(ncps.dataDir, hash) };
}

async function backdate(...files: string[]): Promise<void> {
  for (const file of files) await utimes(file, TWO_HOURS_AGO, TWO_HOURS_AGO);
}

/** Files older than the database are never swept: make this one look three hours old. */
function ageDatabase(dataDir: string): void {
  withSqlite(path.join(dataDir, 'db.sqlite'), (db) => db.prepare('UPDATE schema_migrations SET applied_at = ?').run(Date.now() - 3 * HOUR));
}

function sweep(dataDir: string, ...args: string[]) {
  return runNcps(['sweep-orphans', `--cache-storage-local=${dataDir}`, `--cache-database-url=sqlite:${path.join(dataDir, 'db.sqlite')}`, ...args]);
}

const WRITE_ARGS = ['--cache-allow-put-verb', '--cache-allow-delete-verb'];

describe('orphan sweep', { timeout: 10 * TIMEOUT }, () => {
  let dataDir: string;
  let ncps: NcpsProcess | undefined;
  let kept: Uploaded;
  let orphanNar: Uploaded;
  let orphanListing: Uploaded;
  let youngOrphan: Uploaded;
  let foreign: Uploaded;

  before(async () => {
    dataDir = await makeTempDir('orphans');
    const migrated = await runNcps(['migrate', 'up', `--cache-storage-local=${dataDir}`, `--cache-database-url=sqlite:${path.join(dataDir, 'db.sqlite')}`]);
    assert.equal(migrated.code, 0, migrated.stderr);
    ageDatabase(dataDir);
    ncps = await startNcps({ upstreams: [], publicKeys: [], dataDir, extraArgs: WRITE_ARGS });
    kept = await upload(ncps, { narinfo: true, listing: true });
    orphanNar = await upload(ncps, { narinfo: false, listing: false });
    orphanListing = await upload(ncps, { narinfo: false, listing: true });
    youngOrphan = await upload(ncps, { narinfo: false, listing: false });
    // As if it came with a store taken over from another ncps: older than this database.
    foreign = await upload(ncps, { narinfo: false, listing: false });
    await utimes(foreign.narFile, A_DAY_AGO, A_DAY_AGO);
    await backdate(kept.narFile, kept.listingFile, orphanNar.narFile, orphanListing.listingFile);
  });

  after(async () => {
    await ncps?.stop();
    await cleanupTempDirs();
  });

  it('refuses to run beside a live server without Redis, unless only a dry run', { timeout: TIMEOUT }, async () => {
    const r = await sweep(dataDir);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /an ncps server is using this database/);
    assert.ok(existsSync(orphanNar.narFile), 'nothing was removed');
    const dry = await sweep(dataDir, '--dry-run');
    assert.equal(dry.code, 0, dry.stdout + dry.stderr);
    // Old so far: one orphan NAR and one orphan listing (the other orphan NARs are young).
    assert.match(dry.stdout, /dry run: \d+ files looked at; would remove 1 NARs \([^)]+\) and 1 listings/);
    for (const f of [orphanNar.narFile, orphanListing.listingFile, orphanListing.narFile]) assert.ok(existsSync(f), `${f} is still there`);
  });

  it('removes old unrecorded NARs and listings, and nothing else', { timeout: TIMEOUT }, async () => {
    await ncps!.stop();
    ncps = undefined;
    await backdate(orphanListing.narFile);
    const r = await sweep(dataDir);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /removed 2 NARs \([^)]+\) and 1 listings/);
    assert.equal(existsSync(orphanNar.narFile), false, 'old NAR without narinfo removed');
    assert.equal(existsSync(orphanListing.narFile), false);
    assert.equal(existsSync(orphanListing.listingFile), false, 'listing of a path that is not there removed');
    assert.ok(existsSync(youngOrphan.narFile), 'a NAR younger than an hour may still get its narinfo: kept');
    assert.ok(existsSync(kept.narFile) && existsSync(kept.listingFile), 'recorded NAR and listing kept');
    assert.ok(existsSync(foreign.narFile), 'a NAR older than the database was not written through it: kept');
    assert.match(r.stdout, /kept 1 unrecorded files older than the database/);

    ncps = await startNcps({ upstreams: [], publicKeys: [], dataDir, extraArgs: WRITE_ARGS });
    assert.equal((await request(ncps.url, `/${kept.hash}.narinfo`)).status, 200);
    assert.equal((await request(ncps.url, `/nar/${kept.narName}`)).status, 200);
    assert.equal((await request(ncps.url, `/${kept.hash}.ls`)).status, 200);
  });

  it('deleting a narinfo removes its listing too', { timeout: TIMEOUT }, async () => {
    assert.equal((await request(ncps!.url, `/${kept.hash}.narinfo`, { method: 'DELETE' })).status, 204);
    assert.equal(existsSync(kept.listingFile), false);
    assert.equal(existsSync(kept.narFile), false);
  });

  it('does nothing while storage holds narinfo files an older ncps left', { timeout: TIMEOUT }, async () => {
    await ncps!.stop();
    ncps = undefined;
    const legacyHash = randomStoreHash();
    await writeLegacyNarInfo(dataDir, legacyHash, syntheticNarInfo(legacyHash, generateSecretKey('old-ncps')));
    await backdate(youngOrphan.narFile);
    const r = await sweep(dataDir);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /nothing swept: legacy narinfo files are not migrated yet/);
    assert.ok(existsSync(youngOrphan.narFile), 'the NAR may belong to an unmigrated narinfo: kept');
    await rm(legacyNarInfoPath(dataDir, legacyHash));
  });

  const garbageHash = randomStoreHash();

  it('is not held up by a legacy narinfo file that can never be migrated (a dry run says it would quarantine it)', { timeout: TIMEOUT }, async () => {
    await writeLegacyNarInfo(dataDir, garbageHash, 'this is not a narinfo\n');
    const dry = await sweep(dataDir, '--dry-run');
    assert.equal(dry.code, 0, dry.stdout + dry.stderr);
    assert.match(dry.stdout, /would move 1 legacy narinfo files that cannot be migrated to store\/quarantine\/narinfo\//);
    assert.match(dry.stdout, /would remove 1 NARs/);
    assert.ok(existsSync(legacyNarInfoPath(dataDir, garbageHash)), 'a dry run moves nothing');
    assert.ok(existsSync(youngOrphan.narFile), 'a dry run removes nothing');
  });

  it('runs before the server\'s LRU clean-up, and counts what it removed', { timeout: TIMEOUT }, async () => {
    ncps = await startNcps({
      upstreams: [],
      publicKeys: [],
      dataDir,
      extraArgs: [...WRITE_ARGS, '--prometheus-enabled', '--cache-max-size=1G', '--cache-lru-schedule=*/1 * * * * *'],
    });
    const deadline = Date.now() + 30_000;
    while (existsSync(youngOrphan.narFile) && Date.now() < deadline) await sleep(200);
    assert.equal(existsSync(youngOrphan.narFile), false, `the LRU run swept the orphan:\n${ncps.logs().slice(-3000)}`);
    // The unmigratable legacy file went to the quarantine instead of blocking the sweep.
    assert.equal(existsSync(legacyNarInfoPath(dataDir, garbageHash)), false);
    assert.ok(existsSync(path.join(dataDir, 'store', 'quarantine', 'narinfo', `${garbageHash}.narinfo`)));
    assert.match(ncps.logs(), /"level":"warn".*"hash":"[0-9a-z]{32}".*"reason":"[^"]+".*"msg":"legacy narinfo file cannot be migrated: moved to the quarantine"/);
    const metrics = (await request(ncps.url, '/metrics')).text;
    assert.match(metrics, /^ncps_orphan_files_removed_total\{kind="nar"\} 1$/m);
  });
});
