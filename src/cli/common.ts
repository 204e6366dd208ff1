// What several commands share: where the data lives, opening storage and the database from the
// configuration, and turning configuration mistakes into exit status 2.

import os from 'node:os';
import path from 'node:path';
import { ConfigError, type LoadedConfig } from '../config/load';
import type { Database } from '../db/database';
import { UnsupportedDatabaseError } from '../db/database';
import { openDatabase, redactDatabaseUrl } from '../db/open';
import { LocalStorage } from '../storage/local';
import type { Storage } from '../storage/storage';

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

export function describeDatabase(config: LoadedConfig): string {
  return redactDatabaseUrl(databaseUrl(config));
}

export function openConfiguredStorage(config: LoadedConfig): Storage & { cleanTempDir?(maxAgeMs: number): Promise<number> } {
  if (config.get<string>('cache.storage.s3.bucket')) {
    throw new ConfigError('S3 storage is not wired into this command yet; use --cache-storage-local');
  }
  return new LocalStorage(storageDir(config), config.get<string>('cache.temp-path') || undefined);
}
