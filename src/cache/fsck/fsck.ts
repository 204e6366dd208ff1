// `ncps fsck`: proves that the database and storage agree and (with --verify-content) that the
// stored bytes are right, and repairs what is not. Three steps, as in the Go ncps:
//
// 1. check: the checks beside what they check (nar-files, narinfos, small-files) report findings;
// 2. second look: the cache may be live, so every finding is looked at again once the walk is
//    done, and what an operation in flight explained meanwhile is dropped;
// 3. repair (--repair): one finding at a time, under the locks the server takes for the same
//    things, looked at once more, then fixed and logged.
//
// A running server may still answer a narinfo it memoised just before a repair for MEMO_TTL_MS;
// the repair waits that long before it returns when a server is live, so that afterwards no
// server serves what was repaired.

import type { Database } from '../../db/database';
import { LEASE_STALE_MS } from '../../lock/lease';
import { acquireWithin, type Lock, type Locker } from '../../lock/locker';
import type { SecretKey } from '../../nix';
import type { Storage } from '../../storage/storage';
import type { Logger } from '../../telemetry/logger';
import { hasLegacyNarInfos } from '../../migrate/narinfo';
import { MEMO_TTL_MS } from '../narinfo-memo';
import { emptyCounts, SILENT_PROGRESS, type CheckedCounts, type FsckContext, type ProgressSink } from './context';
import { checkNarFiles } from './nar-files';
import { checkNarInfos } from './narinfos';
import { PROBLEM_KINDS, PROBLEM_ORDER, type Finding, type ProblemKind } from './problems';
import { checkSmallFiles } from './small-files';

export { PROBLEM_KINDS, PROBLEM_ORDER, type Finding, type ProblemKind } from './problems';
export type { CheckedCounts, PhaseProgress, ProgressSink } from './context';

export interface FsckOptions {
  db: Database;
  storage: Storage;
  locker: Locker;
  logger: Logger;
  /** The key narinfos are served with; undefined when they are served unsigned. */
  signingKey: SecretKey | undefined;
  verifyContent: boolean;
  /** With verifyContent: skip NARs verified less than this long ago (0: verify all). */
  verifiedSinceMs: number;
  lockTtlMs: number;
  /** How long a repair waits for a lock a server holds (a download in flight) before leaving it for the next run. */
  lockWaitMs?: number;
  progress?: ProgressSink;
}

export interface FsckReport {
  findings: Finding[];
  counts: CheckedCounts;
  notes: string[];
  /** Name of the key signatures were checked against, if any. */
  signingKeyName: string | undefined;
  verifyContent: boolean;
  verifiedSinceMs: number;
}

export type RepairStatus =
  /** Fixed. */
  | 'repaired'
  /** No longer a problem when looked at under the locks (fixed by something else meanwhile). */
  | 'resolved'
  /** A lock stayed taken (a download in flight, say): left for the next run. */
  | 'busy'
  | 'failed'
  /** Nothing --repair can do about it. */
  | 'unrepairable';

export interface RepairResult {
  finding: Finding;
  status: RepairStatus;
  error?: string;
}

/** Checks everything; changes nothing but the verified times of NARs whose bytes matched. */
export async function checkCache(options: FsckOptions): Promise<FsckReport> {
  const found: Finding[] = [];
  const ctx: FsckContext = {
    db: options.db,
    storage: options.storage,
    logger: options.logger,
    now: Date.now(),
    progress: options.progress ?? SILENT_PROGRESS,
    counts: emptyCounts(),
    notes: [],
    found: (finding) => found.push(finding),
  };
  const legacyNarInfos = await hasLegacyNarInfos(options.storage);
  await checkNarInfos(ctx, { signingKey: options.signingKey });
  await checkNarFiles(ctx, { verifyContent: options.verifyContent, verifiedSinceMs: options.verifiedSinceMs, legacyNarInfos });
  await checkSmallFiles(ctx, { verifyContent: options.verifyContent, legacyNarInfos });

  const findings: Finding[] = [];
  const second = ctx.progress.phase('looking again at what was found', found.length);
  try {
    for (const finding of found) {
      second.tick();
      let still = true;
      try {
        still = await finding.recheck();
      } catch (error) {
        options.logger.warn({ kind: finding.kind, subject: finding.subject, err: (error as Error).message }, 'fsck: could not look again; kept as found');
      }
      if (still) findings.push(finding);
    }
  } finally {
    second.end();
  }
  findings.sort((a, b) => PROBLEM_ORDER.indexOf(a.kind) - PROBLEM_ORDER.indexOf(b.kind) || a.subject.localeCompare(b.subject));
  for (const finding of findings) {
    options.logger.warn(
      { kind: finding.kind, subject: finding.subject, bytes: finding.bytes, ...(finding.detail ? { detail: finding.detail } : {}) },
      `fsck found: ${PROBLEM_KINDS[finding.kind].label}`,
    );
  }
  return {
    findings,
    counts: ctx.counts,
    notes: ctx.notes,
    signingKeyName: options.signingKey?.name,
    verifyContent: options.verifyContent,
    verifiedSinceMs: options.verifiedSinceMs,
  };
}

/** Kinds whose repair changes or removes what a server may have memoised. */
const TOUCHES_NARINFOS: ReadonlySet<ProblemKind> = new Set(['narinfo-without-nar', 'narinfo-signature', 'nar-missing', 'nar-size', 'nar-content']);

/** Repairs the findings one by one; every repair (and every one left undone) is logged. */
export async function repairFindings(options: FsckOptions, findings: readonly Finding[]): Promise<RepairResult[]> {
  const { locker, logger, lockTtlMs } = options;
  const lockWaitMs = options.lockWaitMs ?? 60_000;
  const results: RepairResult[] = [];
  const progress = (options.progress ?? SILENT_PROGRESS).phase('repairing', findings.length);
  try {
    for (const finding of findings) {
      progress.tick();
      const info = PROBLEM_KINDS[finding.kind];
      const about = { kind: finding.kind, subject: finding.subject, ...(finding.detail ? { detail: finding.detail } : {}) };
      if (!finding.repair) {
        results.push({ finding, status: 'unrepairable' });
        logger.warn(about, `fsck cannot repair: ${info.label}`);
        continue;
      }
      const held: Lock[] = [];
      try {
        let busy: string | undefined;
        for (const key of [...finding.locks].sort()) {
          const lock = await acquireWithin(locker, key, lockTtlMs, lockWaitMs);
          if (!lock) {
            busy = key;
            break;
          }
          held.push(lock);
        }
        if (busy) {
          results.push({ finding, status: 'busy' });
          logger.warn({ ...about, lock: busy }, `fsck left for the next run (lock held elsewhere): ${info.label}`);
          continue;
        }
        if (!(await finding.recheck())) {
          results.push({ finding, status: 'resolved' });
          logger.info(about, `fsck: no longer a problem: ${info.label}`);
          continue;
        }
        const fields = await finding.repair();
        results.push({ finding, status: 'repaired' });
        logger.info({ ...about, bytes: finding.bytes, ...fields }, `fsck repaired: ${info.label}: ${info.repair}`);
      } catch (error) {
        results.push({ finding, status: 'failed', error: (error as Error).message });
        logger.error({ ...about, err: (error as Error).message }, `fsck could not repair: ${info.label}`);
      } finally {
        for (const lock of held.reverse()) await lock.release().catch(() => undefined);
      }
    }
  } finally {
    progress.end();
  }
  if (results.some((r) => r.status === 'repaired' && TOUCHES_NARINFOS.has(r.finding.kind))) {
    const live = await options.db.liveLeases(Date.now() - LEASE_STALE_MS).catch(() => []);
    if (live.length > 0) {
      logger.info({ ms: MEMO_TTL_MS }, 'fsck: waiting for the servers\' memoised narinfos to expire');
      await new Promise((resolve) => setTimeout(resolve, MEMO_TTL_MS + 100));
    }
  }
  return results;
}
