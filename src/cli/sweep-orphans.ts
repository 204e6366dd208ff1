// `ncps sweep-orphans`: removes files from storage that no database record needs (NARs whose
// narinfo never arrived, listings of paths that are gone), older than an hour and younger than
// the database. The server does
// the same before its LRU clean-ups when --cache-max-size is set; this is for stores without a
// size limit, or to see what a sweep would remove (--dry-run).

import { OrphanSweeper } from '../cache/orphans';
import { QUARANTINE_PREFIX } from '../storage/storage';
import { Progress } from '../migrate/progress';
import { Metrics } from '../telemetry/metrics';
import { formatBytes } from './format';
import {
  commandConfig,
  commandLogger,
  createLocker,
  describeDatabase,
  openConfiguredDatabase,
  openConfiguredStorage,
  refuseBesideLiveServer,
  refuseUnmigratedSchema,
  requireExistingCache,
} from './common';

const SUMMARY = 'Remove files from storage that no database record needs (older than an hour).';

async function sweepOrphans(argv: string[]): Promise<number> {
  const config = commandConfig('sweep-orphans', SUMMARY, argv);
  if (!config) return 0;
  const logger = commandLogger(config);
  const dryRun = config.get<boolean>('dry-run');

  requireExistingCache(config, 'sweep-orphans', { storage: true, database: 'required' });
  const storage = openConfiguredStorage(config);
  const db = openConfiguredDatabase(config);
  const locker = createLocker(config, logger);
  try {
    await storage.check?.();
    await locker.check?.();
    if (await refuseUnmigratedSchema(db, 'sweep-orphans')) return 1;
    // A server's uploads take per-file locks that only Redis shares with this process.
    if (!dryRun && (await refuseBesideLiveServer(config, db, 'sweep-orphans'))) return 1;
    logger.info({ storage: storage.describe, database: describeDatabase(config), dryRun }, 'looking for orphaned files');
    const sweeper = new OrphanSweeper({ db, storage, locker, logger, metrics: new Metrics({ maxSizeBytes: 0 }), lockTtlMs: 60_000, dryRun });
    // Walking a large bucket takes a while: show how far it got (files looked at, so far).
    const progress = new Progress('looking at files in storage', () => ({ done: sweeper.progress.scanned, failed: 0, total: undefined }), logger);
    progress.start();
    const result = await sweeper.run().finally(() => progress.stop());
    if (result.quarantined > 0) {
      process.stdout.write(
        `${dryRun ? 'would move' : 'moved'} ${result.quarantined} legacy narinfo files that cannot be migrated to ${QUARANTINE_PREFIX}/ (see the log for why)\n`,
      );
    }
    if (result.skipped) {
      process.stdout.write(`nothing swept: ${result.skipped}\n`);
      return 1;
    }
    const verb = dryRun ? 'would remove' : 'removed';
    process.stdout.write(
      `${dryRun ? 'dry run: ' : ''}${result.scanned} files looked at; ${verb} ${result.nars.files} NARs ` +
        `(${formatBytes(result.nars.bytes)}) and ${result.listings.files} listings (${formatBytes(result.listings.bytes)})\n`,
    );
    if (result.olderThanDatabase > 0) {
      process.stdout.write(`kept ${result.olderThanDatabase} unrecorded files older than the database (not written through it)\n`);
    }
    return 0;
  } finally {
    await locker.close();
    await db.close();
  }
}

export const sweepOrphansCommand = { summary: SUMMARY, run: sweepOrphans };
