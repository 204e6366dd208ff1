// `ncps list` on a cache filled through a real server (NARs and narinfos uploaded as `nix copy`
// sends them, one path pinned), run beside that live server: the table and its summary, the
// NDJSON, each order, --limit, --pinned, the text filter, more rows than one page, a reader that
// goes away (`ncps list | head`); an empty cache; and the refusals: a missing SQLite file (exit 2,
// nothing created), bad option values (exit 2), a schema not migrated yet (exit 1, left as it
// was). Once with SQLite, once with PostgreSQL.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { request } from '../helpers/http';
import { createV1Database, randomStoreHash, schemaVersionsInDb, withSqlite } from '../helpers/legacy';
import { parseNarinfo } from '../helpers/narinfo';
import { NCPS_BUNDLE, runNcps, startNcps, type NcpsProcess } from '../helpers/ncps';
import { postgresAvailable, postgresUnavailableReason, startPostgres, type PostgresServer } from '../helpers/postgres';
import { cleanupTempDirs, makeTempDir, run } from '../helpers/proc';
import { put, uploadNar } from '../helpers/upload';

const TIMEOUT = 180_000;
const HOUR = 60 * 60 * 1000;
/** When the paths were last used, set after filling: fixed, so the expected rows are exact. */
const T0 = Date.UTC(2026, 0, 10, 12, 0, 0);
/** More synthetic rows than one page of the listing (1000). */
const SYNTHETIC = 2345;

interface Backend {
  name: string;
  /** The database flag, for serve and list alike. */
  databaseArgs: string[];
  /** SQL with $1, $2… placeholders. */
  sql<R = Record<string, unknown>>(query: string, params?: unknown[]): Promise<R[]>;
  /** Adds `count` narinfos without a NAR record, used long before T0. */
  insertSynthetic(count: number): Promise<void>;
  /** A database that exists but holds none of ncps's tables. */
  emptyDatabaseArgs(): Promise<string[]>;
  stop(): Promise<void>;
}

async function sqliteBackend(dataDir: string): Promise<Backend> {
  const file = path.join(dataDir, 'db.sqlite');
  const sql = async <R,>(query: string, params: unknown[] = []) => {
    // $n becomes SQLite's ?, with the values in the order of their places.
    const order: number[] = [];
    const text = query.replace(/\$(\d+)/g, (_, n: string) => (order.push(Number(n) - 1), '?'));
    return withSqlite(file, (db) => {
      const stmt = db.prepare(text);
      const values = order.map((i) => params[i]);
      return (stmt.reader ? stmt.all(...values) : (stmt.run(...values), [])) as R[];
    });
  };
  return {
    name: 'SQLite',
    databaseArgs: [`--cache-database-url=sqlite:${file}`],
    sql,
    insertSynthetic: async (count) =>
      void (await sql(
        `WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $1)
         INSERT INTO narinfos (hash, store_path, url, compression, nar_hash, nar_size, created_at, last_accessed_at)
         SELECT printf('%032d', i), '/nix/store/' || printf('%032d', i) || '-synthetic-' || i, 'nar/s' || i || '.nar',
                'xz', 'sha256:synthetic', i, 0, 1000 + i FROM s`,
        [count],
      )),
    async emptyDatabaseArgs() {
      // A file SQLite opens, without a table in it.
      const empty = path.join(await makeTempDir('list-empty-sqlite'), 'db.sqlite');
      new BetterSqlite3(empty).close();
      return [`--cache-database-url=sqlite:${empty}`];
    },
    stop: async () => {},
  };
}

async function postgresBackend(): Promise<Backend> {
  const server: PostgresServer = await startPostgres();
  const url = await server.createDatabase('list');
  const database = decodeURIComponent(new URL(url).pathname.slice(1));
  const sql = <R,>(query: string, params: unknown[] = []) => server.query(database, query, params) as Promise<R[]>;
  return {
    name: 'PostgreSQL',
    databaseArgs: [`--cache-database-url=${url}`],
    sql,
    insertSynthetic: async (count) =>
      void (await sql(
        `INSERT INTO narinfos (hash, store_path, url, compression, nar_hash, nar_size, created_at, last_accessed_at)
         SELECT lpad(i::text, 32, '0'), '/nix/store/' || lpad(i::text, 32, '0') || '-synthetic-' || i, 'nar/s' || i || '.nar',
                'xz', 'sha256:synthetic', i, 0, 1000 + i FROM generate_series(1, $1::int) AS i`,
        [count],
      )),
    emptyDatabaseArgs: async () => [`--cache-database-url=${await server.createDatabase('list_empty')}`],
    stop: () => server.stop(),
  };
}

/** What the test uploaded, and what the listing must say about it. */
interface Path {
  name: string;
  size: number;
  hash: string;
  storePath: string;
  url: string;
  lastAccessedAt: number;
  pinned: boolean;
  pinnedDirectly: boolean;
  narStored: boolean;
}

/** Uploaded in this order; bash refers to zlib and is pinned, so zlib is kept as its closure. */
const PATHS = [
  { name: 'zlib-1.3.1', size: 20_000, accessed: T0 },
  { name: 'bash-5.2p37', size: 1000, accessed: T0 + HOUR, references: ['zlib-1.3.1'] },
  { name: 'hello-2.12.1', size: 3000, accessed: T0 + 2 * HOUR },
  // Milliseconds: the table shows seconds, the JSON keeps them. Its NAR is marked not stored.
  { name: 'hello-doc-2.12.1', size: 9000, accessed: T0 + 3 * HOUR + 456 },
] as const;

const names = (rows: Array<{ storePath: string }>) => rows.map((r) => r.storePath.slice('/nix/store/'.length + 33));

function listSuite(label: string, makeBackend: (dataDir: string) => Promise<Backend>, skip: string | false): void {
  describe(`ncps list (${label})`, { skip, timeout: TIMEOUT }, () => {
    let backend: Backend | undefined;
    let ncps: NcpsProcess | undefined;
    let dataDir: string;
    const paths = new Map<string, Path>();

    const serve = (extra: string[] = []) =>
      startNcps({ upstreams: [], publicKeys: [], dataDir, extraArgs: ['--cache-allow-put-verb', ...backend!.databaseArgs, ...extra] });
    const list = (...args: string[]) => runNcps(['list', `--cache-storage-local=${dataDir}`, ...backend!.databaseArgs, ...args]);
    const ok = async (...args: string[]) => {
      const r = await list(...args);
      assert.equal(r.code, 0, `ncps list ${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
      assert.equal(r.stderr, '', 'nothing on stderr');
      return r.stdout;
    };
    const json = async (...args: string[]) =>
      (await ok('--json', ...args))
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown> & { storePath: string });
    const expectJson = (p: Path) => ({
      storePath: p.storePath,
      hash: p.hash,
      narSize: p.size,
      fileSize: p.size,
      compression: 'none',
      url: p.url,
      lastAccessedAt: new Date(p.lastAccessedAt).toISOString(),
      pinned: p.pinned,
      pinnedDirectly: p.pinnedDirectly,
      narStored: p.narStored,
    });
    const byName = (name: string) => [...paths.values()].find((p) => p.name === name)!;
    const byAccess = () => [...paths.values()].sort((a, b) => b.lastAccessedAt - a.lastAccessedAt);

    before(
      async () => {
        dataDir = await makeTempDir(`list-${label}`);
        backend = await makeBackend(dataDir);
        ncps = await serve();
        const hashes = new Map(PATHS.map((p) => [p.name, randomStoreHash()]));
        for (const p of PATHS) {
          const hash = hashes.get(p.name)!;
          const { narinfo } = await uploadNar(ncps, p.size);
          const refs = ('references' in p ? p.references : []).map((r) => `${hashes.get(r)}-${r}`);
          const text = narinfo(hash).replace('-uploaded\n', `-${p.name}\n`).replace('References: \n', `References: ${refs.join(' ')}\n`);
          await put(ncps, `/upload/${hash}.narinfo`, text);
          const served = await request(ncps.url, `/${hash}.narinfo`);
          assert.equal(served.status, 200, served.text);
          const n = parseNarinfo(served.text);
          assert.equal(n.storePath, `/nix/store/${hash}-${p.name}`);
          paths.set(hash, {
            name: p.name,
            size: p.size,
            hash,
            storePath: n.storePath,
            url: n.url,
            lastAccessedAt: p.accessed,
            pinned: false,
            pinnedDirectly: false,
            narStored: p.name !== 'hello-doc-2.12.1',
          });
        }
        const bash = byName('bash-5.2p37');
        const pin = await request(ncps.url, `/pin/${bash.hash}.narinfo`, { method: 'POST' });
        assert.equal(pin.status, 200, pin.text);
        Object.assign(bash, { pinned: true, pinnedDirectly: true });
        byName('zlib-1.3.1').pinned = true;
        // The access times the server noted go out when it stops; then the fixed ones go in.
        await ncps.stop();
        for (const p of paths.values()) await backend.sql('UPDATE narinfos SET last_accessed_at = $1 WHERE hash = $2', [p.lastAccessedAt, p.hash]);
        await backend.sql(
          'UPDATE nar_files SET stored_at = NULL WHERE id = (SELECT nar_file_id FROM narinfos WHERE hash = $1)',
          [byName('hello-doc-2.12.1').hash],
        );
        // Every listing below runs beside this live server (no Redis: a command that needed
        // locks would refuse).
        ncps = await serve();
        const leases = await backend.sql<{ n: number }>('SELECT count(*) AS n FROM server_leases WHERE heartbeat_at > $1', [Date.now() - 60_000]);
        assert.ok(Number(leases[0]!.n) >= 1, 'the server holds a lease on the database');
      },
      { timeout: TIMEOUT },
    );

    after(
      async () => {
        await ncps?.stop();
        await backend?.stop();
        await cleanupTempDirs();
      },
      { timeout: TIMEOUT },
    );

    it('prints a table, most recently used first, and a summary', async () => {
      const lines = (await ok()).split('\n');
      assert.equal(lines.pop(), '', 'ends with a newline');
      const [header, ...rest] = lines;
      const summary = rest.pop();
      assert.match(header!, /^LAST ACCESSED \(UTC\) +NAR SIZE +COMPRESSION +PINNED +STORE PATH$/);
      const rows = rest.map((l) => l.trim().split(/ {2,}/));
      assert.deepEqual(rows, [
        ['2026-01-10T15:00:00Z', '8.8 KiB', 'none', '-', byName('hello-doc-2.12.1').storePath],
        ['2026-01-10T14:00:00Z', '2.9 KiB', 'none', '-', byName('hello-2.12.1').storePath],
        ['2026-01-10T13:00:00Z', '1000 B', 'none', 'pinned', byName('bash-5.2p37').storePath],
        ['2026-01-10T12:00:00Z', '19.5 KiB', 'none', 'closure', byName('zlib-1.3.1').storePath],
      ]);
      // Columns line up: every store path starts where the header's STORE PATH does.
      for (const line of rest) assert.equal(line.indexOf('/nix/store/'), header!.indexOf('STORE PATH'), line);
      assert.equal(summary, '4 paths: NAR size 32.2 KiB, file size 32.2 KiB (1 whose NAR is not in storage yet)');
    });

    it('--json: one object per line with every field, and nothing else', async () => {
      const out = await ok('--json');
      assert.ok(out.endsWith('\n'));
      const objects = out.trimEnd().split('\n').map((l) => JSON.parse(l) as unknown);
      assert.deepEqual(objects, byAccess().map(expectJson));
    });

    it('--sort=size (largest first) and --sort path (by name, after the hash)', async () => {
      assert.deepEqual(names(await json('--sort=size')), ['zlib-1.3.1', 'hello-doc-2.12.1', 'hello-2.12.1', 'bash-5.2p37']);
      assert.deepEqual(names(await json('--sort', 'path')), ['bash-5.2p37', 'hello-2.12.1', 'hello-doc-2.12.1', 'zlib-1.3.1']);
      assert.deepEqual(names(await json('--sort=accessed')), ['hello-doc-2.12.1', 'hello-2.12.1', 'bash-5.2p37', 'zlib-1.3.1']);
    });

    it('--limit: the first N, and the summary says more match', async () => {
      const lines = (await ok('--limit=2')).trimEnd().split('\n');
      assert.equal(lines.length, 4, lines.join('\n'));
      assert.ok(lines[1]!.endsWith(byName('hello-doc-2.12.1').storePath));
      assert.ok(lines[2]!.endsWith(byName('hello-2.12.1').storePath));
      assert.equal(lines[3], '2 paths shown, more match (--limit=2): NAR size 11.7 KiB, file size 11.7 KiB (1 whose NAR is not in storage yet)');
      // Exactly as many as there are: nothing left out.
      assert.match((await ok('--limit=4')).trimEnd().split('\n').at(-1)!, /^4 paths: /);
      assert.equal((await json('--limit=0')).length, 4, '0: no limit');
      assert.deepEqual(names(await json('--limit=1', '--sort=size')), ['zlib-1.3.1']);
    });

    it('--pinned: the pinned path and its closure', async () => {
      assert.deepEqual(await json('--pinned'), [expectJson(byName('bash-5.2p37')), expectJson(byName('zlib-1.3.1'))]);
      assert.match((await ok('--pinned')).trimEnd().split('\n').at(-1)!, /^2 paths: NAR size 20\.5 KiB, file size 20\.5 KiB$/);
      assert.deepEqual(names(await json('--pinned', '--sort=size', '--limit=1')), ['zlib-1.3.1']);
    });

    it('matches a text in the store path: as the argument or --match, case-sensitive', async () => {
      assert.deepEqual(names(await json('hello')), ['hello-doc-2.12.1', 'hello-2.12.1']);
      assert.deepEqual(names(await json('--match=doc')), ['hello-doc-2.12.1']);
      assert.deepEqual(names(await json('--match', byName('zlib-1.3.1').hash.slice(3, 12))), ['zlib-1.3.1'], 'the hash is part of the path');
      assert.deepEqual(names(await json('hello', '--pinned')), []);
      assert.equal(await ok('HELLO'), '0 paths: NAR size 0 B, file size 0 B\n');
      assert.equal(await ok('--json', 'HELLO'), '');
    });

    it('streams more rows than one page, in order, each once; stops quietly when the reader goes away', { timeout: TIMEOUT }, async () => {
      await backend!.insertSynthetic(SYNTHETIC);
      try {
        const all = await json();
        assert.equal(all.length, SYNTHETIC + 4);
        assert.equal(new Set(all.map((r) => r.hash)).size, all.length, 'no row twice');
        assert.deepEqual(all.slice(0, 4), byAccess().map(expectJson), 'the uploads were used last');
        const times = all.map((r) => Date.parse(r.lastAccessedAt as string));
        for (let i = 1; i < times.length; i++) assert.ok(times[i - 1]! >= times[i]!, `row ${i} is out of order`);
        const synthetic = all.find((r) => r.hash === '0'.repeat(28) + '1234')!;
        assert.deepEqual(
          { narStored: synthetic.narStored, fileSize: synthetic.fileSize, compression: synthetic.compression, narSize: synthetic.narSize },
          { narStored: null, fileSize: null, compression: 'xz', narSize: 1234 },
          'no NAR record: narStored and fileSize unknown',
        );
        const bySize = await json('--sort=size');
        for (let i = 1; i < bySize.length; i++) assert.ok((bySize[i - 1]!.narSize as number) >= (bySize[i]!.narSize as number), `size row ${i}`);
        const byPath = names(await json('--sort=path'));
        assert.deepEqual(byPath, [...byPath].sort(), 'by name, in byte order');
        assert.equal((await ok('--limit=1500')).trimEnd().split('\n').length, 1500 + 2);
        const summary = (await ok()).trimEnd().split('\n').at(-1)!;
        assert.match(summary, new RegExp(`^${SYNTHETIC + 4} paths: NAR size .* \\(${SYNTHETIC} without a known file size; 1 whose NAR is not in storage yet\\)$`));

        // `ncps list | head`: the pipe closes long before the listing (about 200 KiB) is written.
        const piped = await run(
          'bash',
          ['--norc', '--noprofile', '-c', 'set -o pipefail; "$0" "$1" list "${@:2}" | head -n 3', process.execPath, NCPS_BUNDLE, `--cache-storage-local=${dataDir}`, ...backend!.databaseArgs],
          { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, timeoutMs: 60_000 },
        );
        assert.equal(piped.code, 0, `exit ${piped.code}\n${piped.stderr}`);
        assert.equal(piped.stderr, '');
        assert.equal(piped.stdout.split('\n').length, 4);
      } finally {
        await backend!.sql(`DELETE FROM narinfos WHERE store_path LIKE '%-synthetic-%'`);
      }
    });

    it('an empty cache: only the summary, and no JSON at all', async () => {
      const emptyDir = await makeTempDir(`list-empty-${label}`);
      const args = label === 'SQLite' ? [`--cache-database-url=sqlite:${path.join(emptyDir, 'db.sqlite')}`] : await backend!.emptyDatabaseArgs();
      const up = await runNcps(['migrate', 'up', `--cache-storage-local=${emptyDir}`, ...args]);
      assert.equal(up.code, 0, up.stderr);
      const r = await runNcps(['list', `--cache-storage-local=${emptyDir}`, ...args]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '0 paths: NAR size 0 B, file size 0 B\n');
      const j = await runNcps(['list', '--json', `--cache-storage-local=${emptyDir}`, ...args]);
      assert.equal(j.code, 0, j.stderr);
      assert.equal(j.stdout, '');
    });

    it('refuses a database whose schema is not migrated, and leaves it so', async () => {
      const args = await backend!.emptyDatabaseArgs();
      const r = await runNcps(['list', `--cache-storage-local=${dataDir}`, ...args]);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^ncps list: the database schema is not migrated yet; run ncps migrate up \(or start the server\) first\.\n$/);
      const status = await runNcps(['migrate', 'status', `--cache-storage-local=${dataDir}`, ...args]);
      assert.match(status.stdout, /schema version: 0 /, 'no migration ran');
    });
  });
}

listSuite('SQLite', sqliteBackend, false);
listSuite('PostgreSQL', () => postgresBackend(), postgresAvailable() ? false : postgresUnavailableReason());

describe('ncps list refusals', () => {
  after(() => cleanupTempDirs());

  it('a SQLite database that is not there: exit 2, nothing created', async () => {
    const dir = await makeTempDir('list-missing');
    const storage = path.join(dir, 'typo');
    const r = await runNcps(['list', `--cache-storage-local=${storage}`]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--cache-database-url: there is no SQLite database at .*typo\/db\/db\.sqlite: check the path .*ncps list does not create one/);
    assert.equal(existsSync(storage), false, 'no storage directory made');
    const file = path.join(dir, 'elsewhere', 'db.sqlite');
    const e = await runNcps(['list', `--cache-database-url=sqlite:${file}`, '--json']);
    assert.equal(e.code, 2, e.stderr);
    assert.equal(e.stdout, '');
    assert.equal(existsSync(path.dirname(file)), false, 'no database directory made');
  });

  it('bad option values: exit 2, naming the option, before the database is opened', async () => {
    const dir = await makeTempDir('list-options');
    const db = [`--cache-database-url=sqlite:${path.join(dir, 'db.sqlite')}`];
    const cases: Array<[string[], RegExp]> = [
      [['--sort=big'], /^ncps list: invalid value for --sort: must be one of the possible values: \["accessed","size","path"\]/],
      [['--limit=ten'], /^ncps list: invalid value for --limit: "ten" is not a whole number/],
      [['--limit', '-1'], /^ncps list: invalid value for --limit: "-1" is not a whole number/],
      [['--pinned=maybe'], /^ncps list: invalid value for --pinned: "maybe" is not a boolean/],
      [['--sort-by=size'], /^ncps list: unknown flag: --sort-by \(see --help\)/],
      [['--dry-run'], /^ncps list: unknown flag: --dry-run \(not a flag of this command\)/],
      [['hello', 'world'], /^ncps list: unexpected argument "world": ncps list takes one text to match/],
      [['hello', '--match=world'], /^ncps list: the text to match is given twice \("hello" and --match=world\)/],
    ];
    for (const [args, message] of cases) {
      const r = await runNcps(['list', ...db, ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(' '));
      assert.equal(r.stdout, '');
    }
    assert.equal(existsSync(path.join(dir, 'db.sqlite')), false);
  });

  it('an older schema (SQLite, version 1): exit 1 with the way forward, not migrated', async () => {
    const dir = await makeTempDir('list-v1');
    const file = path.join(dir, 'db.sqlite');
    createV1Database(file);
    const r = await runNcps(['list', `--cache-database-url=sqlite:${file}`]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /run ncps migrate up \(or start the server\) first/);
    assert.deepEqual(schemaVersionsInDb(file), [1]);
  });

  it('is in ncps help, with its flags in ncps help list', async () => {
    const usage = await runNcps(['help']);
    assert.match(usage.stdout, /^ {2}list {14}List the cached store paths/m);
    const help = await runNcps(['help', 'list']);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^Usage: ncps list \[flags\] \[TEXT\]$/m);
    for (const flag of ['--sort=VALUE', '--limit=VALUE', '--pinned', '--match=VALUE', '--json', '--cache-database-url=VALUE']) {
      assert.ok(help.stdout.includes(`  ${flag}`), flag);
    }
  });
});
