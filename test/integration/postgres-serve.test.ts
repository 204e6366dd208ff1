// The real ncps bundle on PostgreSQL: the Nix client substitutes a closure through it, the
// metadata and the signing key live in the database, and instances sharing the database (one
// after another, side by side, or starting at the same moment) agree on one key and one schema.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MIGRATIONS } from '../../src/db/migrations';
import { signedUpstream, substituteAndVerify, teardown, type SignedUpstream } from '../helpers/fixture';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { hashPart, nixAvailable } from '../helpers/nix';
import { postgresAvailable, postgresUnavailableReason, startPostgres, type PostgresServer } from '../helpers/postgres';

const skip = !nixAvailable()
  ? 'nix-bin not installed'
  : !postgresAvailable()
    ? `PostgreSQL unavailable: ${postgresUnavailableReason()}`
    : false;
const TIMEOUT = 180_000;
const ALL_VERSIONS = MIGRATIONS.map((m) => m.version);
/** Trust auth ignores it; it is there to check that ncps never logs it. */
const PASSWORD = 'not-for-the-logs';

describe('ncps serve on PostgreSQL', { skip, timeout: 600_000 }, () => {
  let pg: PostgresServer;
  let dbName: string;
  let dbUrl: string;
  let upstream: SignedUpstream;
  let ncps: NcpsProcess | undefined;
  const others: NcpsProcess[] = [];
  let ncpsKey: string;

  const withDatabase = (url: string) => [`--cache-database-url=${url}`, '--cache-database-pool-max-open-conns=5'];

  before(
    async () => {
      pg = await startPostgres();
      const plain = await pg.createDatabase('serve');
      dbName = decodeURIComponent(new URL(plain).pathname.slice(1));
      dbUrl = plain.replace('postgresql://postgres@', `postgresql://postgres:${PASSWORD}@`);
      upstream = await signedUpstream({ label: 'subst-postgres' });
      ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [upstream.key.publicKey], extraArgs: withDatabase(dbUrl) });
    },
    { timeout: TIMEOUT },
  );

  after(
    async () => {
      await Promise.all([ncps, ...others].map((p) => p?.stop()));
      await teardown(upstream, pg);
    },
    { timeout: TIMEOUT },
  );

  it('starts on PostgreSQL: schema migrated there, no SQLite file, password kept out of the logs', async () => {
    assert.ok(ncps);
    ncpsKey = await ncps.publicKey();
    assert.match(ncpsKey, /^ncps-test:/);
    const versions = await pg.query<{ version: number }>(dbName, 'SELECT version FROM schema_migrations ORDER BY version');
    assert.deepEqual(versions.map((r) => r.version), ALL_VERSIONS);
    const key = await pg.query<{ value: string }>(dbName, `SELECT value FROM settings WHERE key = 'secret_key'`);
    assert.equal(key.length, 1, 'the generated signing key is stored in PostgreSQL');
    assert.ok(key[0]!.value.startsWith('ncps-test:'));
    assert.equal(existsSync(path.join(ncps.dataDir, 'db.sqlite')), false, 'no SQLite database next to the storage');
    assert.doesNotMatch(ncps.logs(), new RegExp(PASSWORD), 'the database password must not be logged');
  });

  it("lets the Nix client substitute the whole closure, trusting only ncps's key", { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    const closure = upstream.closure;
    await substituteAndVerify(closure, { substituter: ncps.url, trustedPublicKey: ncpsKey, ncps });

    // The narinfos ncps cached are rows in PostgreSQL, with their references.
    const rows = await pg.query<{ hash: string; refs: number }>(
      dbName,
      `SELECT n.hash, (SELECT count(*) FROM narinfo_references r WHERE r.narinfo_id = n.id)::int AS refs FROM narinfos n`,
    );
    const cached = new Map(rows.map((r) => [r.hash, r.refs]));
    for (const p of closure.paths) assert.ok(cached.has(hashPart(p)), `${p} should have a narinfo row`);
    assert.ok((cached.get(hashPart(closure.top)) ?? 0) >= 1, 'the top path refers to the rest of its closure');
    const stored = await pg.query<{ n: number }>(dbName, 'SELECT count(*)::int AS n FROM nar_files WHERE stored_at IS NOT NULL');
    assert.ok(stored[0]!.n >= closure.paths.length, `NAR files recorded as stored: ${stored[0]!.n}`);
  });

  it('keeps its key and its cache across a restart, upstream gone', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    const dataDir = ncps.dataDir;
    const code = await ncps.stop('SIGTERM');
    assert.equal(code, 0, `ncps should exit 0 on SIGTERM; logs:\n${ncps.logs().slice(-4000)}`);
    await upstream.stop();

    ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [upstream.key.publicKey], dataDir, extraArgs: withDatabase(dbUrl) });
    assert.equal(await ncps.publicKey(), ncpsKey, 'the signing key must come back from PostgreSQL');
    assert.doesNotMatch(ncps.logs(), /database migrated/, 'nothing left to migrate on restart');

    await substituteAndVerify(upstream.closure, { substituter: ncps.url, trustedPublicKey: ncpsKey, ncps });
  });

  it('a second instance with its own storage but the same database signs with the same key', { timeout: TIMEOUT }, async () => {
    const second = await startNcps({ upstreams: [upstream.url], publicKeys: [upstream.key.publicKey], extraArgs: withDatabase(dbUrl) });
    others.push(second);
    assert.notEqual(second.dataDir, ncps?.dataDir);
    assert.equal(await second.publicKey(), ncpsKey);
    assert.equal(await second.stop('SIGTERM'), 0, second.logs().slice(-4000));
  });

  it('instances starting at the same moment on an empty database migrate once and agree on one key', { timeout: TIMEOUT }, async () => {
    const freshUrl = await pg.createDatabase('race');
    const freshName = decodeURIComponent(new URL(freshUrl).pathname.slice(1));
    const started = await Promise.allSettled(
      [1, 2, 3].map(() => startNcps({ upstreams: [upstream.url], publicKeys: [upstream.key.publicKey], extraArgs: withDatabase(freshUrl) })),
    );
    for (const s of started) if (s.status === 'fulfilled') others.push(s.value);
    for (const s of started) assert.equal(s.status, 'fulfilled', s.status === 'rejected' ? String(s.reason) : '');
    const instances = started.map((s) => (s as PromiseFulfilledResult<NcpsProcess>).value);

    const keys = await Promise.all(instances.map((i) => i.publicKey()));
    assert.equal(new Set(keys).size, 1, `instances disagree on the signing key: ${keys.join(' ')}`);
    assert.notEqual(keys[0], ncpsKey, 'a new database gets its own key');
    const versions = await pg.query<{ version: number }>(freshName, 'SELECT version FROM schema_migrations ORDER BY version');
    assert.deepEqual(versions.map((r) => r.version), ALL_VERSIONS);
    const migratedBy = instances.filter((i) => /database migrated/.test(i.logs())).length;
    assert.equal(migratedBy, 1, 'exactly one instance should report having migrated');
    for (const i of instances) assert.equal(await i.stop('SIGTERM'), 0, i.logs().slice(-4000));
  });
});
