// Taking over a Go ncps deployment: its database and what it left in storage become this ncps's,
// and the Go ncps's own data stays as it was, so going back to it remains possible.
//
//   detect (detect.ts) → read (source.ts, one reader per engine) → map (map.ts) → write (write.ts,
//   dechunk.ts) → report (report.ts)
//
// This file only orders those steps and keeps them safe: one takeover at a time per database
// (instances starting together wait for the first, then find the work done), a state in our
// settings that says whether the last takeover finished (a killed one is resumed on the next
// start; nothing is served before it finished, as the callers run this before they listen), and
// a refusal to take over while a Go ncps still uses its database.

import { existsSync } from 'node:fs';
import { UnsupportedDatabaseError, type Database } from '../../db/database';
import { describeDatabaseInUse, openDatabase, redactDatabaseUrl, sqlitePathFromUrl, type PoolSettings } from '../../db/open';
import { sqliteFileBesideGo } from '../../db/beside-go';
import type { SecretKey } from '../../nix';
import type { Storage } from '../../storage/storage';
import type { Logger } from '../../telemetry/logger';
import { Progress } from '../progress';
import { lockFile, type TakeoverLock } from './lock';
import { emptyReport, reportFields, skippedCount, type TakeoverReport } from './report';
import { GoSource, type LiveClient } from './source';
import { openSqliteReader } from './sqlite-reader';
import { readTakeoverState, writeTakeoverState, type TakeoverState } from './state';
import { GoWriter, type Counts } from './write';

/** A Go ncps still uses the database: taking it over now would lose what it writes next. */
export class GoStillRunning extends Error {}

export interface TakeoverOptions {
  /** The Go ncps's database: --go-database-url, or the configured database itself (in place). */
  sourceUrl: string;
  /** This ncps's database (--cache-database-url). */
  targetUrl: string;
  pool: PoolSettings;
  storage: Storage;
  logger: Logger;
  dryRun?: boolean;
  /** Take over although other clients are connected to the Go database. */
  force?: boolean;
  /** Where the progress bar goes on a terminal; false for none. Default stderr. */
  progress?: NodeJS.WriteStream | false;
  /** --cache-secret-key-path's key, when given. */
  configuredKey?: SecretKey;
}

/**
 * Takes over the Go ncps database at `sourceUrl` (again, if the Go ncps wrote to it since the
 * last time); undefined when there is none there. Throws GoStillRunning while a Go ncps uses it.
 */
export async function takeOverGoDatabase(options: TakeoverOptions): Promise<TakeoverReport | undefined> {
  const source = await openGoSource(options.sourceUrl);
  if (!source) return undefined;
  try {
    return await takeOver(source, options);
  } finally {
    await source.close();
  }
}

/** The Go ncps database at a URL, read-only; undefined when there is none (or it is not the Go ncps's). */
export async function openGoSource(url: string): Promise<GoSource | undefined> {
  if (/^sqlite3?:/i.test(url)) {
    const file = sqlitePathFromUrl(url);
    if (file === ':memory:' || !existsSync(file)) return undefined;
    return GoSource.open(openSqliteReader(file));
  }
  if (/^postgres(ql)?:\/\//i.test(url)) {
    const { openPostgresReader } = require('./postgres-reader') as typeof import('./postgres-reader');
    return GoSource.open(await openPostgresReader(url));
  }
  if (/^mysql(\+unix)?:/i.test(url)) {
    const { openMysqlReader } = require('./mysql-reader') as typeof import('./mysql-reader');
    return GoSource.open(await openMysqlReader(url));
  }
  throw new UnsupportedDatabaseError(`cannot read a Go ncps database at "${redactDatabaseUrl(url)}": expected sqlite:, postgresql:// or mysql://`);
}

function isPostgres(url: string): boolean {
  return /^postgres(ql)?:\/\//i.test(url);
}

/** Same database? Then ours goes beside the Go ncps's tables in it. */
export function sameDatabase(a: string, b: string): boolean {
  if (/^sqlite3?:/i.test(a) && /^sqlite3?:/i.test(b)) return sqlitePathFromUrl(a) === sqlitePathFromUrl(b);
  return a === b;
}

export function stillRunningMessage(source: string, live: readonly LiveClient[]): string {
  return [
    `a Go ncps still seems to be using its database ${source}:`,
    ...live.map((c) => `  - ${c.description}`),
    'Stop every Go ncps instance first, then start this ncps (all instances at once is fine: one takes over, the others wait).',
    'This ncps does not run beside a live Go ncps: each would evict files the other still serves, and uploads to it would be missed.',
    'If none of these is a Go ncps, take over anyway with: ncps migrate from-go --force',
  ].join('\n');
}

async function takeOver(source: GoSource, options: TakeoverOptions): Promise<TakeoverReport> {
  const { targetUrl, logger, dryRun = false } = options;
  const inPlace = sameDatabase(options.sourceUrl, targetUrl);
  const target = inPlace ? describeBeside(targetUrl) : describeDatabaseInUse(targetUrl);
  const report = emptyReport(source.describe, source.schema.generation, dryRun, target);
  const counts: Counts = { done: 0, failed: 0, total: undefined };

  let lock: TakeoverLock | undefined;
  let db: Database | undefined;
  try {
    if (dryRun) {
      db = await existingTarget(options, inPlace);
      report.newDatabase = db === undefined;
    } else {
      lock = await lockTarget(options, inPlace);
      if (inPlace && isPostgres(targetUrl)) {
        const { createSchemaBesideGo } = require('./postgres-reader') as typeof import('./postgres-reader');
        await createSchemaBesideGo(targetUrl);
      }
      db = openDatabase(targetUrl, options.pool, { besideGo: inPlace });
      await db.migrate();
    }

    const fingerprint = await source.fingerprint();
    const state = db ? await readTakeoverState(db) : undefined;
    const live = await source.liveClients();
    if (state?.state === 'done' && state.fingerprint === fingerprint) {
      report.upToDate = true;
      if (live.length > 0) {
        // Taken over already, and nothing new in it: serving is safe, but a Go ncps running beside
        // this one would evict files this one serves, and what it stores next is not seen here.
        logger.warn({ source: source.describe, clients: live.map((c) => c.description) }, 'other clients are connected to the Go ncps database this ncps took over: stop any Go ncps still running');
      }
      return report;
    }
    if (live.length > 0 && !options.force) throw new GoStillRunning(stillRunningMessage(source.describe, live));

    if (state?.state === 'done') {
      logger.info({ source: source.describe, takenOverAt: new Date(state.finishedAt ?? 0).toISOString() }, 'the Go database changed since it was taken over: taking over what is new');
    } else if (state?.state === 'running') {
      logger.info({ source: source.describe }, 'resuming an interrupted takeover of a Go ncps database');
    }
    logger.info({ source: source.describe, generation: source.schema.generation, database: target, dryRun }, 'taking over a Go ncps database');
    const startedAt = Date.now();
    if (db && !dryRun) {
      const running: TakeoverState = { state: 'running', source: source.describe, generation: source.schema.generation, startedAt };
      await writeTakeoverState(db, running);
    }

    const writer = new GoWriter({ source, db, storage: options.storage, logger, dryRun, report, counts, configuredKey: options.configuredKey });
    await writer.prepare();
    const progress = options.progress === false ? undefined : new Progress(dryRun ? 'looking at the Go ncps data' : 'taking over the Go ncps data', () => counts, logger, options.progress);
    progress?.start();
    try {
      await writer.run();
    } finally {
      progress?.stop();
    }

    if (db && !dryRun) {
      const done: TakeoverState = {
        state: 'done',
        source: source.describe,
        generation: source.schema.generation,
        startedAt,
        finishedAt: Date.now(),
        fingerprint,
        keptLegacyFiles: report.keptLegacyFiles,
      };
      await writeTakeoverState(db, done);
    }
    logger.info({ ...reportFields(report), skippedTotal: skippedCount(report), ms: Date.now() - startedAt }, dryRun ? 'takeover dry run finished' : 'took over the Go ncps database');
    return report;
  } finally {
    await db?.close();
    await lock?.release();
  }
}

function describeBeside(url: string): string {
  if (/^sqlite3?:/i.test(url)) return `sqlite:${sqliteFileBesideGo(sqlitePathFromUrl(url))}`;
  return `${redactDatabaseUrl(url)} (schema ncps_ts)`;
}

async function lockTarget(options: TakeoverOptions, inPlace: boolean): Promise<TakeoverLock> {
  const { targetUrl, logger } = options;
  if (isPostgres(targetUrl)) {
    const { lockPostgres } = require('./postgres-reader') as typeof import('./postgres-reader');
    return lockPostgres(targetUrl, logger);
  }
  const file = sqlitePathFromUrl(targetUrl);
  return lockFile(`${inPlace ? sqliteFileBesideGo(file) : file}.takeover-lock`, logger);
}

/** Our database, when it exists already (a dry run writes nothing, so it may not); undefined otherwise. */
export async function existingTarget(options: Pick<TakeoverOptions, 'targetUrl' | 'pool'>, inPlace: boolean): Promise<Database | undefined> {
  const { targetUrl, pool } = options;
  if (isPostgres(targetUrl)) {
    if (inPlace) {
      const { schemaBesideGoExists } = require('./postgres-reader') as typeof import('./postgres-reader');
      if (!(await schemaBesideGoExists(targetUrl))) return undefined;
    }
  } else {
    const file = sqlitePathFromUrl(targetUrl);
    if (!existsSync(inPlace ? sqliteFileBesideGo(file) : file)) return undefined;
  }
  const db = openDatabase(targetUrl, pool, { besideGo: inPlace });
  const applied = await db.schemaStatus!().then(
    (status) => status.applied.length,
    () => 0,
  );
  if (applied === 0) {
    await db.close();
    return undefined;
  }
  return db;
}
