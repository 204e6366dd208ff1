// `ncps fsck`: checks that the database and storage agree (and, with --verify-content, that the
// stored bytes are right), prints a summary, and with --repair fixes what it found. Exit status as
// in the Go ncps: 0 when consistent (or when --repair fixed everything found), 1 when problems
// are left, 2 for usage mistakes. On a terminal without --repair or --dry-run it asks first.
//
// The checks live beside what they check (src/cache/fsck/); this only wires them up.

import { createInterface } from 'node:readline/promises';
import { checkCache, repairFindings, type FsckOptions, type ProgressSink } from '../cache/fsck/fsck';
import { readSecretKeyFile, servingSigningKey } from '../cache/signing-key';
import { ConfigError } from '../config/load';
import type { SecretKey } from '../nix';
import { Progress } from '../migrate/progress';
import type { Logger } from '../telemetry/logger';
import { formatSummary, problemsLeft } from './fsck-summary';
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

const SUMMARY = 'Check that the database and storage agree (and the stored bytes are right); --repair fixes what is not.';

/**
 * A redrawn bar per phase on a terminal (each phase's last state stays on screen), log lines every
 * few seconds otherwise, and none for a phase over before the first one was due.
 */
function progressSink(logger: Logger): ProgressSink {
  const lastReport = process.stderr.isTTY ? 'always' : 'after-progress';
  return {
    phase(label, total) {
      const counts = { done: 0, failed: 0, total };
      const progress = new Progress(label, () => counts, logger, process.stderr, lastReport);
      progress.start();
      return {
        tick: (n = 1) => void (counts.done += n),
        end: () => progress.stop(),
      };
    },
  };
}

async function askToRepair(count: number): Promise<boolean> {
  const prompt = createInterface({ input: process.stdin, output: process.stdout });
  try {
    const answer = await prompt.question(`\nRepair ${count === 1 ? 'this problem' : `these ${count} problems`}? [y/N]: `);
    return /^(y|yes)$/i.test(answer.trim());
  } finally {
    prompt.close();
  }
}

async function fsck(argv: string[]): Promise<number> {
  const config = commandConfig('fsck', SUMMARY, argv);
  if (!config) return 0;
  const logger = commandLogger(config);
  const dryRun = config.get<boolean>('dry-run');
  const repair = config.get<boolean>('repair');
  const verifyContent = config.get<boolean>('verify-content');
  const verifiedSinceMs = config.get<number>('verified-since');
  if (verifiedSinceMs > 0 && !verifyContent) logger.warn('--verified-since only matters with --verify-content: the other checks always look at everything');
  // A check has nothing to look at in a store that does not exist: refused rather than created.
  requireExistingCache(config, 'fsck', { storage: true, database: 'required' });
  // Signatures are checked (and repaired) with the key the server signs with: a key file that
  // cannot be read is a configuration mistake, found before anything is opened.
  const signNarinfo = config.get<boolean>('cache.sign-narinfo');
  const secretKeyPath = config.get<string>('cache.secret-key-path');
  let fileKey: SecretKey | undefined;
  if (signNarinfo && secretKeyPath) {
    try {
      fileKey = readSecretKeyFile(secretKeyPath);
    } catch (error) {
      throw new ConfigError((error as Error).message);
    }
  }

  const storage = openConfiguredStorage(config);
  const db = openConfiguredDatabase(config);
  const locker = createLocker(config, logger);
  try {
    await storage.check?.();
    await locker.check?.();
    if (await refuseUnmigratedSchema(db, 'fsck')) return 1;
    // Repairs take the locks a server takes for the same files; only Redis shares them with it.
    const mayRepair = async (): Promise<boolean> => !(await refuseBesideLiveServer(config, db, 'fsck --repair'));
    if (repair && !dryRun && !(await mayRepair())) return 1;

    const lockTtlMs = config.get<number>('cache.lock.download-lock-ttl');
    const running = await locker.tryAcquire('fsck', lockTtlMs);
    if (!running) {
      process.stderr.write('ncps fsck: another ncps fsck is running on this cache.\n');
      return 1;
    }
    try {
      const signingKey = signNarinfo ? (fileKey ?? (await servingSigningKey({ secretKeyPath: '', db, storage }))) : undefined;
      const options: FsckOptions = {
        db,
        storage,
        locker,
        logger,
        signingKey,
        verifyContent,
        verifiedSinceMs,
        lockTtlMs,
        progress: progressSink(logger),
      };
      logger.info(
        { storage: storage.describe, database: describeDatabase(config), verifyContent, verifiedSinceMs, repair, dryRun, keyName: signingKey?.name ?? null },
        'fsck: checking the cache',
      );
      const report = await checkCache(options);
      if (report.findings.length === 0 || dryRun) {
        process.stdout.write(formatSummary(report, undefined, dryRun ? 'dry-run' : 'report'));
        return report.findings.length === 0 ? 0 : 1;
      }
      if (!repair) {
        // As the Go ncps: on a terminal, ask; otherwise report and leave it.
        if (!(process.stdin.isTTY && process.stdout.isTTY)) {
          process.stdout.write(formatSummary(report, undefined, 'report'));
          return 1;
        }
        process.stdout.write(formatSummary(report, undefined, 'ask'));
        if (!(await askToRepair(report.findings.length))) {
          process.stdout.write('Nothing changed.\n');
          return 1;
        }
        if (!(await mayRepair())) return 1;
      }
      const repairs = await repairFindings(options, report.findings);
      process.stdout.write(formatSummary(report, repairs, 'repaired'));
      return problemsLeft(report, repairs) === 0 ? 0 : 1;
    } finally {
      await running.release();
    }
  } finally {
    await locker.close();
    await db.close();
  }
}

export const fsckCommand = { summary: SUMMARY, run: fsck };
