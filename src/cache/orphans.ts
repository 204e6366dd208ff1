// The orphan sweep: files in storage that no database record needs. They come from a `nix copy`
// interrupted between a NAR and its narinfo, a crash between a commit to storage and the database,
// or listings uploaded for paths that never arrived. Nothing else would ever remove them, and the
// size limit (which counts database records) would not see them.
//
// A file is only an orphan once it is older than a grace period: `nix copy` uploads each NAR (and
// listing) before its narinfo. The upload of a narinfo and the removal of its NAR take the same
// per-file lock, so a narinfo can never be committed for a NAR that is being removed. Files older
// than the database itself are never touched: they were not written through it (a store taken
// over from the Go ncps with a new database, say), and are reused when their paths come back.

import type { Database } from '../db/database';
import type { Locker } from '../lock/locker';
import { migratableLegacyNarInfosLeft } from '../migrate/narinfo';
import { legacyFilesKeptForGo } from '../migrate/go/state';
import { dropAuxFile } from './aux-files';
import type { Storage, StoredFileInfo } from '../storage/storage';
import type { Logger } from '../telemetry/logger';
import type { Metrics } from '../telemetry/metrics';

/** Files younger than this are never removed: a `nix copy` may still be on its way to the narinfo. */
export const ORPHAN_GRACE_MS = 60 * 60 * 1000;

const BATCH = 500;
const MTIME_PRECISION_MS = 2_000;

/** The ages that decide whether an unrecorded file is an orphan (see the header). */
export interface OrphanAges {
  /** Files modified before this are older than the database: not written through it, kept. */
  since: number;
  /** Files modified after this are young: their narinfo may still come. */
  cutoff: number;
}

export async function orphanAges(db: Database, now: number, graceMs = ORPHAN_GRACE_MS): Promise<OrphanAges> {
  // Storage clocks are coarse (S3 keeps whole seconds): allow for that.
  return { since: ((await db.createdAt()) ?? now) - MTIME_PRECISION_MS, cutoff: now - graceMs };
}

/** What the sweep makes of a file no record needs, by its modification time. */
export function unrecordedFileAge(modifiedAt: number, ages: OrphanAges): 'young' | 'older-than-database' | 'orphan' {
  if (modifiedAt > ages.cutoff) return 'young';
  if (modifiedAt < ages.since) return 'older-than-database';
  return 'orphan';
}

/** The lock a narinfo upload holds while it checks and records its NAR. */
export function narFileLockKey(name: string): string {
  return `nar-file:${name}`;
}

export interface OrphanSweepOptions {
  db: Database;
  storage: Storage;
  locker: Locker;
  logger: Logger;
  metrics: Metrics;
  lockTtlMs: number;
  graceMs?: number;
  dryRun?: boolean;
}

export interface SweepResult {
  /** Why nothing was looked at, when nothing was. */
  skipped?: string;
  scanned: number;
  /** Unrecorded files older than the database: kept. */
  olderThanDatabase: number;
  /** Legacy narinfo files that can never be migrated, moved to the quarantine (or, in a dry run, that would be). */
  quarantined: number;
  /** Removed (or, in a dry run, that would be). */
  nars: { files: number; bytes: number };
  listings: { files: number; bytes: number };
}

function emptyResult(): SweepResult {
  return { scanned: 0, olderThanDatabase: 0, quarantined: 0, nars: { files: 0, bytes: 0 }, listings: { files: 0, bytes: 0 } };
}

export class OrphanSweeper {
  constructor(private readonly options: OrphanSweepOptions) {}

  /** What the sweep in progress (or the last one) has looked at and removed so far. */
  progress: SweepResult = emptyResult();

  async run(now = Date.now()): Promise<SweepResult> {
    const { locker, storage, logger, lockTtlMs, dryRun } = this.options;
    const result = (this.progress = emptyResult());
    const lock = await locker.tryAcquire('orphan-sweep', lockTtlMs);
    if (!lock) return { ...result, skipped: 'a sweep is already running elsewhere' };
    try {
      // NARs of narinfo files an older ncps kept in storage have no record until those files are
      // migrated: until then, no NAR can be told to be an orphan. A file that can never be
      // migrated must not hold the sweep up for good: it goes to the quarantine.
      const quarantined = (hash: string, reason: string, movedTo: string | undefined) => {
        result.quarantined++;
        logger.warn({ hash, reason, movedTo, dryRun: dryRun ?? false }, dryRun ? 'legacy narinfo file cannot be migrated: it would be moved to the quarantine' : 'legacy narinfo file cannot be migrated: moved to the quarantine');
      };
      // (Files a Go takeover kept for the Go ncps are in the database already.)
      const keptForGo = await legacyFilesKeptForGo(this.options.db);
      if (!keptForGo && (await migratableLegacyNarInfosLeft(storage, quarantined, { dryRun: dryRun ?? false }))) {
        logger.info('orphan sweep skipped: storage still holds narinfo files from an older ncps (run ncps migrate-narinfo)');
        return { ...result, skipped: 'legacy narinfo files are not migrated yet' };
      }
      const ages = await orphanAges(this.options.db, now, this.options.graceMs);
      await this.sweep(storage.listNars(), ages, result, result.nars, (batch) => this.unknownNars(batch), (file) => this.removeNar(file));
      await this.sweep(
        storage.listAuxFiles('ls'),
        ages,
        result,
        result.listings,
        (batch) => this.unknownListings(batch),
        async (file) => {
          if (!this.options.dryRun) await dropAuxFile(this.options.db, storage, 'ls', file.name);
          return true;
        },
      );
    } finally {
      await lock.release();
    }
    const removed = result.nars.files + result.listings.files;
    if (removed > 0 || this.options.dryRun) {
      logger.info({ ...result, dryRun: this.options.dryRun ?? false }, this.options.dryRun ? 'orphan sweep (dry run)' : 'orphan sweep removed files');
    }
    return result;
  }

  private async sweep(
    files: AsyncIterable<StoredFileInfo>,
    ages: OrphanAges,
    result: SweepResult,
    tally: { files: number; bytes: number },
    unknown: (batch: StoredFileInfo[]) => Promise<StoredFileInfo[]>,
    remove: (file: StoredFileInfo) => Promise<boolean>,
  ): Promise<void> {
    const { metrics, dryRun } = this.options;
    let batch: StoredFileInfo[] = [];
    const flush = async () => {
      for (const file of await unknown(batch)) {
        if (unrecordedFileAge(file.modifiedAt, ages) === 'older-than-database') {
          result.olderThanDatabase++;
          continue;
        }
        if (!(await remove(file))) continue;
        tally.files++;
        tally.bytes += file.size;
        if (!dryRun) {
          metrics.orphanFilesRemoved.inc({ kind: file.name.endsWith('.ls') ? 'listing' : 'nar' });
          metrics.orphanBytesRemoved.inc(file.size);
        }
      }
      batch = [];
    };
    for await (const file of files) {
      result.scanned++;
      if (unrecordedFileAge(file.modifiedAt, ages) === 'young') continue;
      batch.push(file);
      if (batch.length >= BATCH) await flush();
    }
    await flush();
  }

  private async unknownNars(batch: StoredFileInfo[]): Promise<StoredFileInfo[]> {
    const known = await this.options.db.knownNarFiles(batch.map((f) => f.name));
    return batch.filter((f) => !known.has(f.name));
  }

  private async unknownListings(batch: StoredFileInfo[]): Promise<StoredFileInfo[]> {
    const withHash = batch.filter((f) => /^[0-9a-df-np-sv-z]{32}\.ls$/.test(f.name));
    const known = await this.options.db.knownNarInfos(withHash.map((f) => f.name.slice(0, 32)));
    return withHash.filter((f) => !known.has(f.name.slice(0, 32)));
  }

  /** Removes a NAR unless a narinfo upload holds it or a record appeared since the batch was read. */
  private async removeNar(file: StoredFileInfo): Promise<boolean> {
    const { db, storage, locker, lockTtlMs, dryRun } = this.options;
    if (dryRun) return true;
    const lock = await locker.tryAcquire(narFileLockKey(file.name), lockTtlMs);
    if (!lock) return false;
    try {
      if ((await db.knownNarFiles([file.name])).size > 0) return false;
      await storage.deleteNar(file.name);
      return true;
    } finally {
      await lock.release();
    }
  }
}
