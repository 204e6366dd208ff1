// The Go ncps's tables in PostgreSQL, read in a read-only session. They sit in the connection's
// own schema (public); ours are in a schema of their own (src/db/beside-go.ts), never read here.

import pg from 'pg';
import { SCHEMA_BESIDE_GO } from '../../db/beside-go';
import { APPLICATION_NAME } from '../../db/postgres';
import { redactDatabaseUrl } from '../../db/open';
import type { Logger } from '../../telemetry/logger';
import type { TakeoverLock } from './lock';
import type { SqlDriver } from './source';

/** "ncpg" in ASCII: not the schema migrations' key, which is taken inside a takeover too. */
export const TAKEOVER_LOCK_KEY = 0x6e637067;

/** The takeover lock on our PostgreSQL database: a session advisory lock, waited for. */
export async function lockPostgres(url: string, logger: Logger): Promise<TakeoverLock> {
  const client = new pg.Client({ connectionString: url, application_name: APPLICATION_NAME, connectionTimeoutMillis: 30_000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    const tried = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [TAKEOVER_LOCK_KEY]);
    if (!tried.rows[0]?.ok) {
      logger.info('another ncps instance is taking over the Go database; waiting for it to finish');
      await client.query('SELECT pg_advisory_lock($1)', [TAKEOVER_LOCK_KEY]);
    }
  } catch (error) {
    await client.end().catch(() => undefined);
    throw error;
  }
  return {
    release: async () => {
      // Ending the session frees the lock, also when the unlock itself fails.
      await client.query('SELECT pg_advisory_unlock($1)', [TAKEOVER_LOCK_KEY]).catch(() => undefined);
      await client.end().catch(() => undefined);
    },
  };
}

/** Creates the schema our tables live in beside the Go ncps's (under the takeover lock). */
export async function createSchemaBesideGo(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url, application_name: APPLICATION_NAME, connectionTimeoutMillis: 30_000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    await client.query(`CREATE SCHEMA IF NOT EXISTS "${SCHEMA_BESIDE_GO}"`);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Whether that schema exists (a dry run writes nothing, so it may not). */
export async function schemaBesideGoExists(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, application_name: APPLICATION_NAME, connectionTimeoutMillis: 30_000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    const { rows } = await client.query<{ present: boolean }>('SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS present', [SCHEMA_BESIDE_GO]);
    return Boolean(rows[0]?.present);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function openPostgresReader(url: string): Promise<SqlDriver> {
  const client = new pg.Client({ connectionString: url, application_name: APPLICATION_NAME, connectionTimeoutMillis: 30_000 });
  // An unreachable server must not crash the process after the fact.
  client.on('error', () => undefined);
  await client.connect();
  try {
    await client.query('SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY');
  } catch (error) {
    await client.end().catch(() => undefined);
    throw error;
  }
  return {
    engine: 'postgres',
    describe: redactDatabaseUrl(url),
    q: (name) => `"${name.replace(/"/g, '""')}"`,
    all: async <T>(sql: string, params: readonly unknown[] = []) => {
      let n = 0;
      const text = sql.replace(/\?/g, () => `$${++n}`);
      return (await client.query(text, [...params])).rows as T[];
    },
    tables: async () => {
      const { rows } = await client.query<{ table_name: string; column_name: string }>(
        `SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()`,
      );
      const tables = new Map<string, Set<string>>();
      for (const r of rows) {
        if (!tables.has(r.table_name)) tables.set(r.table_name, new Set());
        tables.get(r.table_name)!.add(r.column_name);
      }
      return tables;
    },
    // This ncps names its connections; the Go ncps (pgx) leaves the name empty. Other programs
    // usually name theirs (psql, pg_dump, …), so an unnamed client is most likely a Go ncps.
    liveClients: async () => {
      const { rows } = await client.query<{ pid: number; usename: string | null; client_addr: string | null; backend_start: Date | null; state: string | null }>(
        `SELECT pid, usename, client_addr::text AS client_addr, backend_start, state FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
           AND coalesce(application_name, '') = ''`,
      );
      return rows.map((r) => ({
        description:
          `a connection without an application name (pid ${r.pid}${r.usename ? `, user ${r.usename}` : ''}` +
          `${r.client_addr ? `, from ${r.client_addr}` : ''}${r.backend_start ? `, since ${r.backend_start.toISOString()}` : ''}` +
          `${r.state ? `, ${r.state}` : ''})`,
      }));
    },
    close: async () => {
      await client.end().catch(() => undefined);
    },
  };
}
