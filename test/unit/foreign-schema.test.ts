import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, it } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { loadConfig } from '../../src/config/load';
import { SqliteDatabase } from '../../src/db/sqlite';
import { IncompatibleSchemaError } from '../../src/db/schema';

const dir = mkdtempSync(path.join(os.tmpdir(), 'ncps-foreign-'));
after(() => rmSync(dir, { recursive: true, force: true }));

it('refuses, with advice, a database whose schema_migrations table another tool wrote', async () => {
  const file = path.join(dir, 'go.sqlite');
  const raw = new BetterSqlite3(file);
  raw.exec(`CREATE TABLE schema_migrations (version VARCHAR(128) PRIMARY KEY NOT NULL)`);
  raw.exec(`INSERT INTO schema_migrations VALUES ('20240101000000')`);
  raw.close();
  const db = new SqliteDatabase(file);
  try {
    await assert.rejects(db.migrate(), (error: Error) => error instanceof IncompatibleSchemaError && /take it over/.test(error.message));
  } finally {
    await db.close();
  }
});

it('one config file serves every command: keys of other commands are accepted, unknown ones are not', () => {
  const file = path.join(dir, 'ncps.yaml');
  writeFileSync(file, 'server:\n  addr: ":8501"\ncache:\n  storage:\n    local: /srv/ncps\n');
  const { config } = loadConfig('migrate status', [`--config=${file}`], {});
  assert.equal(config.get('cache.storage.local'), '/srv/ncps');
  writeFileSync(file, 'server:\n  adr: ":8501"\n');
  assert.throws(() => loadConfig('migrate status', [`--config=${file}`], {}), /server\.adr/);
});
