// What several commands share: where the data lives, opening storage and the database from the
// configuration, and turning configuration mistakes into exit status 2.

import { existsSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, helpText, loadConfig, type LoadedConfig } from '../config/load';
import type { Database } from '../db/database';
import { UnsupportedDatabaseError } from '../db/database';
import { describeDatabaseInUse, openDatabase, sqliteFileOf } from '../db/open';
import { LocalLocker } from '../lock/local';
import type { Locker } from '../lock/locker';
import { usePathStyle } from '../storage/s3-addressing';
import { LocalStorage } from '../storage/local';
import type { Storage } from '../storage/storage';
import { createLogger, type Logger } from '../telemetry/logger';
import type { Metrics } from '../telemetry/metrics';
import type { OpenTelemetryHandle } from '../telemetry/otel';
import { VERSION } from './version';
import { LEASE_STALE_MS } from '../lock/lease';

/**
 * A command's settings from its flags, config file and environment; undefined once `--help` has
 * been answered. Stray arguments are a usage mistake (exit 2).
 */
export function commandConfig(command: string, summary: string, argv: string[]): LoadedConfig | undefined {
  const { config, args } = loadConfig(command, argv, process.env);
  if (args.help) {
    process.stdout.write(helpText(command, summary));
    return undefined;
  }
  if (args.positionals.length > 0) throw new ConfigError(`unexpected argument "${args.positionals[0]}"`);
  return config;
}

/**
 * Like commandConfig, with the settings checked by `check` (which throws ConfigError) before
 * anything is opened. With `--help` and a config file, the file is checked too, and the help is
 * printed only when it passes: `ncps serve --config=FILE --help` is the way to check a file.
 */
export async function checkedCommandConfig<T>(
  command: string,
  summary: string,
  argv: string[],
  check: (config: LoadedConfig) => T | Promise<T>,
): Promise<{ config: LoadedConfig; settings: T } | undefined> {
  const { config, args } = loadConfig(command, argv, process.env);
  if (args.help) {
    const file = config.get<string>('config');
    if (file) {
      await check(config);
      process.stderr.write(`ncps ${command}: config file ${file}: no mistakes found\n`);
    }
    process.stdout.write(helpText(command, summary));
    return undefined;
  }
  if (args.positionals.length > 0) throw new ConfigError(`unexpected argument "${args.positionals[0]}"`);
  return { config, settings: await check(config) };
}

/**
 * The logger at the configured level, with the configuration's warnings (deprecated flags) logged.
 * The server's never waits for stdout ('nonblocking'); a command that ends writes every line.
 */
export function commandLogger(config: LoadedConfig, mode: 'nonblocking' | 'blocking' = 'blocking'): Logger {
  const logger = createLogger(config.get<string>('log.level'), { mode });
  for (const warning of config.warnings) logger.warn(warning);
  return logger;
}

export function defaultDataDir(): string {
  const base = process.env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return path.join(base, 'ncps');
}

export function storageDir(config: LoadedConfig): string {
  return config.get<string>('cache.storage.local') || defaultDataDir();
}

/** --cache-database-url, defaulting to SQLite inside the local storage directory. */
export function databaseUrl(config: LoadedConfig): string {
  return config.get<string>('cache.database-url') || `sqlite:${path.join(storageDir(config), 'db', 'db.sqlite')}`;
}

export function openConfiguredDatabase(config: LoadedConfig): Database {
  const url = databaseUrl(config);
  try {
    return openDatabase(url, {
      maxOpenConns: config.get<number>('cache.database.pool.max-open-conns'),
      maxIdleConns: config.get<number>('cache.database.pool.max-idle-conns'),
    });
  } catch (error) {
    if (error instanceof UnsupportedDatabaseError) throw new ConfigError(`--cache-database-url: ${error.message}`);
    throw error;
  }
}

/** The SQLite file --cache-database-url names; undefined for PostgreSQL. */
export function sqliteFile(config: LoadedConfig): string | undefined {
  return sqliteFileOf(databaseUrl(config));
}

/**
 * Offline commands work on a cache that exists: a local storage directory or a SQLite file that
 * is not there is far more often a typo than a wish for an empty cache, which opening it would
 * silently create. Checked before anything is opened; S3 buckets and PostgreSQL databases are
 * checked by connecting (they are never created).
 */
export function requireExistingCache(
  config: LoadedConfig,
  command: string,
  options: { storage: boolean; database: 'required' | 'may-be-missing' },
): { databaseMissing: boolean } {
  if (options.storage && !config.get<string>('cache.storage.s3.bucket')) {
    const dir = storageDir(config);
    const where = config.get<string>('cache.storage.local') ? '--cache-storage-local' : 'the default storage directory';
    if (!isDirectory(dir)) {
      throw new ConfigError(`${where} ${dir} does not exist (or is not a directory): check the path; ncps ${command} works on an existing cache and does not create one`);
    }
  }
  const file = sqliteFile(config);
  const databaseMissing = file !== undefined && file !== ':memory:' && !existsSync(file);
  if (databaseMissing && options.database === 'required') {
    throw new ConfigError(
      `--cache-database-url: there is no SQLite database at ${file}: check the path (and --cache-storage-local, which the default is inside); ` +
        `ncps ${command} does not create one (ncps migrate up does)`,
    );
  }
  return { databaseMissing };
}

function isDirectory(dir: string): boolean {
  try {
    return statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

/** The database for logs (passwords masked): ours beside a Go ncps's file, once a takeover made it. */
export function describeDatabase(config: LoadedConfig): string {
  return describeDatabaseInUse(databaseUrl(config));
}

export type ConfiguredStorage = Storage & {
  cleanTempDir?(maxAgeMs: number): Promise<number>;
  /** Fails with a clear message when the storage cannot be used (missing bucket, bad credentials). */
  check?(): Promise<void>;
  describe: string;
};

/** S3 when a bucket is configured, else the local directory. */
// The S3, Redis and PostgreSQL clients are loaded only when configured: together they hold tens
// of megabytes that a single-host instance never needs.
export function openConfiguredStorage(config: LoadedConfig): ConfiguredStorage {
  const bucket = config.get<string>('cache.storage.s3.bucket');
  const tempPath = config.get<string>('cache.temp-path');
  if (bucket) {
    const s3 = (key: string) => config.get<string>(`cache.storage.s3.${key}`);
    const accessKeyId = s3('access-key-id');
    const secretAccessKey = s3('secret-access-key');
    if (Boolean(accessKeyId) !== Boolean(secretAccessKey)) {
      throw new ConfigError('--cache-storage-s3-access-key-id and --cache-storage-s3-secret-access-key go together');
    }
    const { S3Storage } = require('../storage/s3') as typeof import('../storage/s3');
    const storage = new S3Storage({
      bucket,
      region: s3('region') || 'us-east-1',
      accessKeyId,
      secretAccessKey,
      // As the Go ncps: path-style for every endpoint but the object stores known to serve buckets as host names.
      forcePathStyle: usePathStyle(s3('endpoint') || undefined, bucket, config.get<boolean>('cache.storage.s3.force-path-style')),
      tempDir: tempPath || path.join(os.tmpdir(), 'ncps'),
      ...(s3('endpoint') ? { endpoint: s3('endpoint') } : {}),
    });
    return Object.assign(storage, { describe: `s3://${bucket}${s3('endpoint') ? ` at ${s3('endpoint')}` : ''}` });
  }
  const dir = storageDir(config);
  return Object.assign(new LocalStorage(dir, tempPath || undefined), { describe: dir });
}

/**
 * Whether locks go through Redis: Redis addresses alone select it (as in ncps before the backend
 * flag existed), unless the backend is set to local explicitly.
 */
export function usesRedisLocks(config: LoadedConfig): boolean {
  if (config.get<string[]>('cache.redis.addrs').length === 0) return false;
  return !(config.get<string>('cache.lock.backend') === 'local' && config.isSet('cache.lock.backend'));
}

/** Redis locks when usesRedisLocks says so, else in-process. */
export function createLocker(config: LoadedConfig, logger: Logger): Locker & { check?(): Promise<void> } {
  const addrs = config.get<string[]>('cache.redis.addrs');
  const backend = config.get<string>('cache.lock.backend');
  if (addrs.length === 0) {
    if (backend === 'redis') throw new ConfigError('--cache-lock-backend=redis needs --cache-redis-addrs');
    return new LocalLocker();
  }
  if (!usesRedisLocks(config)) {
    logger.warn('--cache-lock-backend=local: the Redis addresses are not used for locks; several instances will not coordinate');
    return new LocalLocker();
  }
  const { RedisLockService } = require('../lock/redis-service') as typeof import('../lock/redis-service');
  return new RedisLockService({
    addrs,
    db: config.get<number>('cache.redis.db'),
    useTls: config.get<boolean>('cache.redis.use-tls'),
    keyPrefix: config.get<string>('cache.lock.redis.key-prefix'),
    retry: {
      maxAttempts: Math.max(1, config.get<number>('cache.lock.retry.max-attempts')),
      initialDelayMs: config.get<number>('cache.lock.retry.initial-delay'),
      maxDelayMs: config.get<number>('cache.lock.retry.max-delay'),
      jitter: config.get<boolean>('cache.lock.retry.jitter'),
    },
    allowDegradedMode: config.get<boolean>('cache.lock.allow-degraded-mode'),
    logger,
    ...(config.get<string>('cache.redis.username') ? { username: config.get<string>('cache.redis.username') } : {}),
    ...(config.get<string>('cache.redis.password') ? { password: config.get<string>('cache.redis.password') } : {}),
  });
}

/**
 * Without Redis, an offline command cannot coordinate with a running server (only Redis shares
 * the server's locks with it): it refuses when a server renewed its lease recently, unless
 * --force. True when refused, after saying why on stderr.
 */
export async function refuseBesideLiveServer(config: LoadedConfig, db: Database, command: string): Promise<boolean> {
  // Only shared Redis locks let the command and a server coordinate.
  if (usesRedisLocks(config) || config.get<boolean>('force')) return false;
  const live = await db.liveLeases(Date.now() - LEASE_STALE_MS);
  if (live.length === 0) return false;
  const who = live.map((l) => `${l.hostname} (pid ${l.pid})`).join(', ');
  process.stderr.write(
    `ncps ${command}: an ncps server is using this database: ${who}.\n` +
      'Stop it first (systemctl stop ncps), or run with --cache-redis-addrs so both coordinate, ' +
      'or pass --force if you are sure it is not running.\n',
  );
  return true;
}

/** An offline command that needs our schema refuses one not migrated yet. True when refused, after saying so. */
export async function refuseUnmigratedSchema(db: Database, command: string): Promise<boolean> {
  const { pending } = await db.schemaStatus!();
  if (pending.length === 0) return false;
  process.stderr.write(`ncps ${command}: the database schema is not migrated yet; run ncps migrate up (or start the server) first.\n`);
  return true;
}

/**
 * Starts the OpenTelemetry export when --otel-enabled is set; the SDK is loaded only then, so
 * commands without it never pay for it. Undefined when disabled.
 */
export async function startConfiguredOpenTelemetry(
  config: LoadedConfig,
  metrics: Metrics,
  logger: Logger,
  exportIntervalMs?: number,
  instanceId?: string,
): Promise<OpenTelemetryHandle | undefined> {
  if (!config.get<boolean>('opentelemetry.enabled')) return undefined;
  const { startOpenTelemetry } = require('../telemetry/otel') as typeof import('../telemetry/otel');
  return startOpenTelemetry({
    url: config.get<string>('opentelemetry.grpc-url'),
    registry: metrics.registry,
    logger,
    serviceVersion: VERSION,
    ...(exportIntervalMs !== undefined ? { exportIntervalMs } : {}),
    ...(instanceId ? { instanceId } : {}),
  });
}
