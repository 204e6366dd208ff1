// The configuration side of taking over a Go ncps: which database is the Go ncps's, which is ours,
// and the start-up hook `serve` and `migrate up` run before they open their database.

import { readFileSync } from 'node:fs';
import { ConfigError, type LoadedConfig } from '../config/load';
import { parseSecretKey, type SecretKey } from '../nix';
import type { Storage } from '../storage/storage';
import type { Logger } from '../telemetry/logger';
import type { TakeoverReport } from '../migrate/go/report';
import { takeOverGoDatabase } from '../migrate/go/takeover';
import { databaseUrl } from './common';

export interface TakeoverRun {
  dryRun?: boolean;
  force?: boolean;
  progress?: NodeJS.WriteStream | false;
}

/** Where the Go ncps database is: --go-database-url, else the configured database itself. */
export function goDatabaseUrl(config: LoadedConfig): string {
  return optional<string>(config, 'go-database-url') || databaseUrl(config);
}

/** An option of some commands only (undefined where the command has no such option). */
function optional<T>(config: LoadedConfig, key: string): T | undefined {
  try {
    return config.get<T>(key);
  } catch {
    return undefined;
  }
}

/** Our database URL, refusing MySQL with the way to take a Go ncps MySQL database over. */
export function ourDatabaseUrl(config: LoadedConfig): string {
  const url = databaseUrl(config);
  if (/^mysql(\+unix)?:/i.test(url)) {
    throw new ConfigError(
      'this ncps does not serve from MySQL. To take over a Go ncps MySQL database, give it as --go-database-url and point ' +
        '--cache-database-url at this ncps\'s own database: sqlite:/path/to/db.sqlite or postgresql://…',
    );
  }
  return url;
}

function configuredKey(config: LoadedConfig): SecretKey | undefined {
  const file = optional<string>(config, 'cache.secret-key-path');
  if (!file) return undefined;
  try {
    return parseSecretKey(readFileSync(file, 'utf8'));
  } catch {
    return undefined; // reported where the server loads it
  }
}

/** Takes over a Go ncps database, if the configuration points at one; undefined when it does not. */
export async function takeOverConfiguredGoDatabase(
  config: LoadedConfig,
  storage: Storage,
  logger: Logger,
  run: TakeoverRun = {},
): Promise<TakeoverReport | undefined> {
  const targetUrl = ourDatabaseUrl(config);
  const key = configuredKey(config);
  return takeOverGoDatabase({
    sourceUrl: goDatabaseUrl(config),
    targetUrl,
    pool: {
      maxOpenConns: config.get<number>('cache.database.pool.max-open-conns'),
      maxIdleConns: config.get<number>('cache.database.pool.max-idle-conns'),
    },
    storage,
    logger,
    dryRun: run.dryRun ?? false,
    force: run.force ?? false,
    progress: run.progress ?? process.stderr,
    ...(key ? { configuredKey: key } : {}),
  });
}
