// `ncps migrate-narinfo`: moves every narinfo file an older ncps kept in storage into the
// database, in bulk. Safe to interrupt at any point and run again: each file is deleted only after
// its row is committed, and a row that exists already is not inserted twice.
//
// Without Redis it must not run beside a live server on the same database (both would migrate the
// same files without coordination), so it looks for fresh server leases and refuses unless --force.
// With Redis it takes the same per-hash locks as the servers' background migration.

import type { Locker } from '../lock/locker';
import { InvalidLegacyNarInfo, LegacyNarInfoMigrator } from '../migrate/narinfo';
import { Progress } from '../migrate/progress';
import { storedSigningKey } from '../cache/signing-key';
import { legacyFilesKeptForGo } from '../migrate/go/state';
import { GoStillRunning } from '../migrate/go/takeover';
import { takeOverConfiguredGoDatabase } from './go-takeover';
import { Metrics } from '../telemetry/metrics';
import { openDatabase } from '../db/open';
import {
  commandConfig,
  commandLogger,
  createLocker,
  describeDatabase,
  openConfiguredDatabase,
  openConfiguredStorage,
  refuseBesideLiveServer,
  requireExistingCache,
  startConfiguredOpenTelemetry,
} from './common';

const SUMMARY = 'Move narinfo files kept in storage by older ncps versions into the database.';

async function migrateNarinfo(argv: string[]): Promise<number> {
  const config = commandConfig('migrate-narinfo', SUMMARY, argv);
  if (!config) return 0;
  const logger = commandLogger(config);
  const dryRun = config.get<boolean>('dry-run');
  const concurrency = Math.max(1, config.get<number>('concurrency'));

  // A mistyped path must not become an empty cache: a new database only when asked for (or, for
  // a dry run, a throwaway one in memory, so nothing is created at all).
  const { databaseMissing } = requireExistingCache(config, 'migrate-narinfo', {
    storage: true,
    database: dryRun || config.get<boolean>('create-database') ? 'may-be-missing' : 'required',
  });
  const storage = openConfiguredStorage(config);
  if (!dryRun) {
    // Run before the server (NixOS's offline unit does), it takes a Go ncps database over first,
    // as the server would.
    try {
      await takeOverConfiguredGoDatabase(config, storage, logger);
    } catch (error) {
      if (!(error instanceof GoStillRunning)) throw error;
      process.stderr.write(`ncps migrate-narinfo: ${error.message}\n`);
      return 1;
    }
  }
  const db = databaseMissing && dryRun ? openDatabase('sqlite::memory:', { maxOpenConns: 0, maxIdleConns: 0 }) : openConfiguredDatabase(config);
  if (databaseMissing && !dryRun) logger.info({ database: describeDatabase(config) }, 'creating a new database (--create-database)');
  const locker: Locker & { check?(): Promise<void> } = createLocker(config, logger);
  const metrics = new Metrics({ maxSizeBytes: 0 });
  // ncps_migration_* go out over OTLP when asked (the upgrading guide's "progress monitoring and
  // metrics with OpenTelemetry"); the final export happens at shutdown.
  const otel = await startConfiguredOpenTelemetry(config, metrics, logger, 5_000);
  try {
    await storage.check?.();
    await locker.check?.();
    let databaseReady = true;
    if (!dryRun) {
      const applied = await db.migrate();
      if (applied.length > 0) logger.info({ versions: applied }, 'database schema migrated');
    } else if ((await db.schemaStatus!()).pending.length > 0) {
      databaseReady = false;
      logger.warn('the database schema is not migrated yet (serve or migrate up will do it): the dry run only checks the files');
    }
    if (databaseReady && (await legacyFilesKeptForGo(db))) {
      process.stdout.write(
        "nothing to migrate: the narinfo files in storage are the Go ncps's, taken over into the database and kept for going back to it " +
          '(ncps migrate from-go --remove-go-files removes them)\n',
      );
      return 0;
    }
    // The key the servers sign with, when it is kept in the database: migrated rows then carry it.
    const signingKey = databaseReady ? await storedSigningKey(db) : undefined;

    if (!dryRun && (await refuseBesideLiveServer(config, db, 'migrate-narinfo'))) return 1;

    logger.info({ storage: storage.describe, database: describeDatabase(config), dryRun, concurrency }, 'looking for legacy narinfo files');
    const hashes: string[] = [];
    for await (const hash of storage.listLegacyNarInfos()) hashes.push(hash);

    const migrator = new LegacyNarInfoMigrator({ db, storage, locker, lockTtlMs: 60_000, dryRun, databaseReady, signingKey });
    const counts = { done: 0, failed: 0, total: hashes.length, migrated: 0, already: 0 };
    const failures: string[] = [];
    const progress = new Progress(dryRun ? 'checking' : 'migrating', () => counts, logger);
    progress.start();
    let next = 0;
    const worker = async () => {
      while (next < hashes.length) {
        const hash = hashes[next++]!;
        const labels = { migration_type: 'narinfo-to-db', operation: 'migrate' };
        const timer = metrics.migrationDuration.startTimer(labels);
        try {
          const { outcome } = await migrator.migrate(hash);
          if (outcome === 'migrated') counts.migrated++;
          else counts.already++;
          metrics.migrationObjects.labels({ ...labels, result: 'success' }).inc();
        } catch (error) {
          counts.failed++;
          metrics.migrationObjects.labels({ ...labels, result: 'failure' }).inc();
          const message = error instanceof InvalidLegacyNarInfo ? error.message : `${hash}: ${(error as Error).message}`;
          failures.push(message);
          logger.warn({ hash, err: message }, 'could not migrate a legacy narinfo file');
        } finally {
          timer();
          counts.done++;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(1, hashes.length)) }, worker));
    progress.stop();

    const verb = dryRun ? 'would migrate' : 'migrated';
    process.stdout.write(
      `${dryRun ? 'dry run: ' : ''}${counts.total} legacy narinfo files: ${verb} ${counts.migrated}, ` +
        `already in the database ${counts.already}, failed ${counts.failed}\n`,
    );
    for (const failure of failures.slice(0, 20)) process.stdout.write(`  failed: ${failure}\n`);
    if (failures.length > 20) process.stdout.write(`  … and ${failures.length - 20} more (see the log)\n`);
    return counts.failed > 0 ? 1 : 0;
  } finally {
    await otel?.shutdown();
    await locker.close();
    await db.close();
  }
}

export const migrateNarinfoCommand = { summary: SUMMARY, run: migrateNarinfo };
