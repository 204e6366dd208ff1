// `ncps migrate from-go [--dry-run] [--force] [--go-database-url=URL] [--remove-go-files]`: the
// takeover `serve` and `migrate up` do by themselves on start-up, on demand, with a summary of what
// was taken over and what was skipped and why. --remove-go-files removes what it kept for the Go
// ncps (chunk files, narinfo files) once the operator will not go back.

import { existingTarget, GoStillRunning, openGoSource, sameDatabase, stillRunningMessage } from '../migrate/go/takeover';
import { formatReport, skippedCount } from '../migrate/go/report';
import { NotTakenOver, removeGoFiles } from '../migrate/go/cleanup';
import { commandConfig, commandLogger, openConfiguredStorage } from './common';
import { goDatabaseUrl, ourDatabaseUrl, takeOverConfiguredGoDatabase } from './go-takeover';
import { redactDatabaseUrl } from '../db/open';

export const FROM_GO_SUMMARY = 'Take over a Go ncps database and data directory (serve and migrate up do it by themselves).';

export async function migrateFromGo(argv: string[]): Promise<number> {
  const config = commandConfig('migrate from-go', FROM_GO_SUMMARY, argv);
  if (!config) return 0;
  const logger = commandLogger(config);
  const dryRun = config.get<boolean>('dry-run');
  const force = config.get<boolean>('force');
  const storage = openConfiguredStorage(config);
  await storage.check?.();
  const out = process.stdout;

  if (config.get<boolean>('remove-go-files')) return removeFiles();

  try {
    const report = await takeOverConfiguredGoDatabase(config, storage, logger, { dryRun, force });
    if (!report) {
      process.stderr.write(`ncps migrate from-go: no Go ncps database at ${redactDatabaseUrl(goDatabaseUrl(config))}\n`);
      return 1;
    }
    out.write(`${dryRun ? 'dry run: ' : ''}${formatReport(report)}`);
    if (!dryRun && !report.upToDate && skippedCount(report) > 0) {
      out.write('Skipped records stay in the Go database as they were; see the reasons above.\n');
    }
    return 0;
  } catch (error) {
    if (error instanceof GoStillRunning) {
      process.stderr.write(`ncps migrate from-go: ${error.message}\n`);
      return 1;
    }
    throw error;
  }

  async function removeFiles(): Promise<number> {
    const source = await openGoSource(goDatabaseUrl(config!));
    if (!source) {
      process.stderr.write(`ncps migrate from-go: no Go ncps database at ${redactDatabaseUrl(goDatabaseUrl(config!))}\n`);
      return 1;
    }
    const targetUrl = ourDatabaseUrl(config!);
    const pool = { maxOpenConns: config!.get<number>('cache.database.pool.max-open-conns'), maxIdleConns: config!.get<number>('cache.database.pool.max-idle-conns') };
    const db = await existingTarget({ targetUrl, pool }, sameDatabase(goDatabaseUrl(config!), targetUrl));
    if (!db) {
      await source.close();
      process.stderr.write('ncps migrate from-go: the Go ncps database has not been taken over yet: run ncps migrate from-go first\n');
      return 1;
    }
    try {
      const live = await source.liveClients();
      if (live.length > 0 && !force) {
        process.stderr.write(`ncps migrate from-go: ${stillRunningMessage(source.describe, live)}\n`);
        return 1;
      }
      const result = await removeGoFiles({ source, db, storage, logger, dryRun });
      const verb = dryRun ? 'would remove' : 'removed';
      out.write(
        `${dryRun ? 'dry run: ' : ''}${verb} ${result.chunksRemoved} chunk files (${result.chunksKept} kept: NARs not taken over use them) ` +
          `and ${result.narInfoFilesRemoved} narinfo files (${result.narInfoFilesKept} kept: not taken over)\n`,
      );
      if (!dryRun) out.write(`The Go ncps database itself is still there (${source.describe}); drop it when you are sure (see docs/upgrading.md).\n`);
      return 0;
    } catch (error) {
      if (error instanceof NotTakenOver) {
        process.stderr.write(`ncps migrate from-go: ${error.message}\n`);
        return 1;
      }
      throw error;
    } finally {
      await db.close();
      await source.close();
    }
  }
}
