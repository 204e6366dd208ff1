// A takeover of a Go ncps deployment under the conditions an operator meets:
//  - killed with SIGKILL at several points and started again: it resumes, nothing is served
//    before it finished, nothing is duplicated or lost;
//  - several instances starting at once on one Go PostgreSQL database: one takes over, the others
//    wait, then all serve;
//  - a Go ncps still connected to its database: refused in a way that cannot be missed (exit 1,
//    the connections named), unless forced; once taken over, a warning only;
//  - the Go ncps ran again after the takeover (going back, then forward again): what it stored
//    meanwhile is taken over on the next start;
//  - ncps migrate from-go --remove-go-files: the chunk and narinfo files go, the NARs still serve.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import pg from 'pg';
import { sqliteFileBesideGo } from '../../src/db/beside-go';
import { encodeNix32, generateSecretKey, narInfoFingerprint, NixHash, parseNarInfo, parseSecretKey, signFingerprint } from '../../src/nix';
import { substituteAndVerify, teardown } from '../helpers/fixture';
import { buildGoFixture, goDatabaseDigest, makeGoMaterial, type GoFixture, type GoMaterial } from '../helpers/go-fixture';
import { request } from '../helpers/http';
import { freePort, NCPS_BUNDLE, REPO_ROOT, runNcps, startNcps } from '../helpers/ncps';
import { nixAvailable, sleep } from '../helpers/nix';
import { killOnExit } from '../helpers/proc';
import { postgresAvailable, postgresUnavailableReason, startPostgres, type PostgresServer } from '../helpers/postgres';

const skip = nixAvailable() ? false : 'nix-bin not installed';
const TIMEOUT = 600_000;
const UNRELATED_KEY = generateSecretKey('unrelated-upstream-1').publicKey.text;

interface Spawned {
  proc: ChildProcess;
  port: number;
  logs(): string;
  exited: Promise<number | null>;
}

/** `ncps serve` on a Go deployment, not waited for (it may be killed before it is healthy). */
async function spawnServe(fixture: GoFixture, extra: string[] = []): Promise<Spawned> {
  const port = await freePort();
  const proc = spawn(
    process.execPath,
    [
      NCPS_BUNDLE,
      'serve',
      '--cache-hostname=ncps-test',
      `--server-addr=127.0.0.1:${port}`,
      `--cache-storage-local=${fixture.dataDir}`,
      `--cache-database-url=${fixture.databaseUrl}`,
      `--cache-upstream-url=http://127.0.0.1:${await freePort()}`,
      `--cache-upstream-public-key=${UNRELATED_KEY}`,
      '--cache-database-pool-max-open-conns=4',
      ...extra,
    ],
    { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' } },
  );
  killOnExit(proc);
  const chunks: string[] = [];
  proc.stdout!.on('data', (b: Buffer) => chunks.push(b.toString()));
  proc.stderr!.on('data', (b: Buffer) => chunks.push(b.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return { proc, port, logs: () => chunks.join(''), exited };
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function healthy(s: Spawned, timeoutMs = 180_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await request(`http://127.0.0.1:${s.port}`, '/healthz', { timeoutMs: 1_000 });
      if (r.status === 200) return;
    } catch {
      // not yet
    }
    if (s.proc.exitCode !== null) throw new Error(`ncps exited (${s.proc.exitCode}):\n${s.logs().slice(-4000)}`);
    if (Date.now() > deadline) throw new Error(`ncps not healthy in time:\n${s.logs().slice(-4000)}`);
    await sleep(100);
  }
}

/** What our SQLite database beside the Go file holds so far (read while a takeover writes it). */
function besideCounts(fixture: GoFixture): { narinfos: number; state: string | undefined } {
  const file = sqliteFileBesideGo(fixture.databaseUrl.replace(/^sqlite:/, ''));
  if (!existsSync(file)) return { narinfos: 0, state: undefined };
  let db: BetterSqlite3.Database | undefined;
  try {
    db = new BetterSqlite3(file, { readonly: true, fileMustExist: true });
    db.pragma('busy_timeout = 2000');
    const n = (db.prepare('SELECT count(*) AS n FROM narinfos').get() as { n: number }).n;
    const state = (db.prepare(`SELECT value FROM settings WHERE key = 'go_takeover'`).get() as { value: string } | undefined)?.value;
    return { narinfos: n, state: state ? (JSON.parse(state) as { state: string }).state : undefined };
  } catch {
    return { narinfos: 0, state: undefined };
  } finally {
    db?.close();
  }
}

function tookOver(logs: string): number {
  return logs.split('\n').filter((l) => l.includes('"msg":"took over the Go ncps database"')).length;
}

describe('taking over a Go ncps deployment safely', { skip, timeout: 40 * 60_000 }, () => {
  let material: GoMaterial;
  let pgServer: PostgresServer | undefined;

  before(async () => {
    material = await makeGoMaterial('safe');
    if (postgresAvailable()) pgServer = await startPostgres();
  }, { timeout: 600_000 });
  after(() => teardown(pgServer), { timeout: 120_000 });

  it('killed with SIGKILL during the takeover, again and again: every rerun resumes, nothing is served before it is done', { timeout: TIMEOUT }, async () => {
    const synthetic = 12_000;
    const fixture = await buildGoFixture(material, 'v0.10', { kind: 'sqlite' }, { synthetic });
    const total = fixture.narInfos.size;
    const goBefore = await goDatabaseDigest(fixture, { kind: 'sqlite' });
    let seen = 0;
    for (let round = 1; round <= 3; round++) {
      const s = await spawnServe(fixture);
      // Wait for progress beyond the last round's, then kill at once.
      const deadline = Date.now() + 120_000;
      for (;;) {
        const { narinfos } = besideCounts(fixture);
        if (narinfos > seen) break;
        assert.equal(await listening(s.port), false, 'nothing is served while the takeover runs');
        if (s.proc.exitCode !== null) assert.fail(`ncps exited before it could be killed:\n${s.logs().slice(-3000)}`);
        if (Date.now() > deadline) assert.fail(`no progress seen in round ${round}:\n${s.logs().slice(-3000)}`);
        await sleep(20);
      }
      s.proc.kill('SIGKILL');
      await s.exited;
      const after = besideCounts(fixture);
      assert.ok(after.narinfos < total, `round ${round}: killed before the end (${after.narinfos} of ${total})`);
      assert.equal(after.state, 'running', 'the interrupted takeover is recorded as not done');
      seen = after.narinfos;
    }
    const ncps = await startNcps({
      upstreams: [`http://127.0.0.1:${await freePort()}`],
      publicKeys: [UNRELATED_KEY],
      dataDir: fixture.dataDir,
      readyTimeoutMs: 180_000,
      extraArgs: [`--cache-database-url=${fixture.databaseUrl}`],
    });
    try {
      assert.match(ncps.logs(), /resuming an interrupted takeover of a Go ncps database/);
      assert.equal(besideCounts(fixture).state, 'done');
      assert.equal(besideCounts(fixture).narinfos, total, 'every narinfo once');
      for (const hash of [...fixture.narInfos.keys()].filter((_, i) => i % 997 === 0)) {
        assert.equal((await request(ncps.url, `/${hash}.narinfo`)).status, 200, hash);
      }
      for (const closure of fixture.closures) await substituteAndVerify(closure, { substituter: ncps.url, trustedPublicKey: fixture.publicKey, ncps });
    } finally {
      await ncps.stop();
    }
    assert.equal(await goDatabaseDigest(fixture, { kind: 'sqlite' }), goBefore);
  });

  it('three instances starting at once on one Go PostgreSQL database: one takes over, the others wait, all serve', { timeout: TIMEOUT }, async (t) => {
    if (!pgServer) return t.skip(`PostgreSQL unavailable: ${postgresUnavailableReason()}`);
    const fixture = await buildGoFixture(material, 'v0.10', { kind: 'postgres', server: pgServer }, { synthetic: 3_000 });
    const instances = await Promise.all([0, 1, 2].map(() => spawnServe(fixture)));
    try {
      await Promise.all(instances.map((s) => healthy(s)));
      const counts = instances.map((s) => tookOver(s.logs()));
      assert.deepEqual([...counts].sort(), [0, 0, 1], `exactly one took over: ${counts.join(', ')}`);
      const waited = instances.filter((s) => /another ncps instance is taking over the Go database; waiting/.test(s.logs()));
      assert.ok(waited.length >= 1, 'the others waited for it');
      for (const s of instances) {
        const url = `http://127.0.0.1:${s.port}`;
        assert.equal((await request(url, '/pubkey')).text.trim(), fixture.publicKey);
        for (const hash of [...fixture.narInfos.keys()].slice(0, 20)) assert.equal((await request(url, `/${hash}.narinfo`)).status, 200);
      }
      await substituteAndVerify(fixture.closures[0]!, { substituter: `http://127.0.0.1:${instances[2]!.port}`, trustedPublicKey: fixture.publicKey });
      const name = decodeURIComponent(new URL(fixture.databaseUrl).pathname.slice(1));
      const rows = await pgServer.query<{ n: string }>(name, 'SELECT count(*) AS n FROM ncps_ts.narinfos');
      assert.equal(Number(rows[0]!.n), fixture.narInfos.size);
    } finally {
      for (const s of instances) s.proc.kill('SIGTERM');
      await Promise.all(instances.map((s) => s.exited));
    }
  });

  it('refuses while a Go ncps seems connected to its database, unless forced; once taken over, only warns', { timeout: TIMEOUT }, async (t) => {
    if (!pgServer) return t.skip(`PostgreSQL unavailable: ${postgresUnavailableReason()}`);
    const fixture = await buildGoFixture(material, 'v0.8', { kind: 'postgres', server: pgServer });
    // What a running Go ncps looks like to PostgreSQL: an idle pooled connection without a name.
    const goLike = new pg.Client({ connectionString: fixture.databaseUrl });
    await goLike.connect();
    try {
      const refused = await spawnServe(fixture);
      assert.equal(await refused.exited, 1, refused.logs());
      assert.match(refused.logs(), /a Go ncps still seems to be using its database/);
      assert.match(refused.logs(), /a connection without an application name \(pid \d+/);
      assert.match(refused.logs(), /Stop every Go ncps instance first/);
      assert.equal(tookOver(refused.logs()), 0);

      const forced = await runNcps(['migrate', 'from-go', '--force', `--cache-storage-local=${fixture.dataDir}`, `--cache-database-url=${fixture.databaseUrl}`], { timeoutMs: 120_000 });
      assert.equal(forced.code, 0, forced.stderr);
      assert.match(forced.stdout, new RegExp(`narinfos: took over ${fixture.narInfos.size} `));

      const served = await spawnServe(fixture);
      await healthy(served);
      assert.match(served.logs(), /other clients are connected to the Go ncps database this ncps took over/);
      served.proc.kill('SIGTERM');
      assert.equal(await served.exited, 0);
    } finally {
      await goLike.end();
    }
  });

  it('refuses while another program has the Go SQLite file open', { timeout: TIMEOUT }, async () => {
    const fixture = await buildGoFixture(material, 'v0.8', { kind: 'sqlite' });
    const file = fixture.databaseUrl.replace(/^sqlite:/, '');
    const holder = spawn('python3', ['-c', `import sys, time\nf = open(sys.argv[1], 'rb')\nprint('open', flush=True)\ntime.sleep(120)`, file], { stdio: ['ignore', 'pipe', 'ignore'] });
    killOnExit(holder);
    await new Promise((resolve) => holder.stdout!.once('data', resolve));
    try {
      const r = await runNcps(['migrate', 'up', `--cache-storage-local=${fixture.dataDir}`, `--cache-database-url=${fixture.databaseUrl}`]);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, new RegExp(`process ${holder.pid} \\([^)]*python3 -c import sys, time f = open.*\\) has the database file open`));
      assert.match(r.stderr, /Stop every Go ncps instance first/);
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('the Go ncps ran again after the takeover (going back): the next start takes over what it stored meanwhile', { timeout: TIMEOUT }, async () => {
    const fixture = await buildGoFixture(material, 'v0.8', { kind: 'sqlite' });
    const first = await runNcps(['migrate', 'up', `--cache-storage-local=${fixture.dataDir}`, `--cache-database-url=${fixture.databaseUrl}`], { timeoutMs: 120_000 });
    assert.equal(first.code, 0, first.stderr);
    const again = await runNcps(['migrate', 'from-go', `--cache-storage-local=${fixture.dataDir}`, `--cache-database-url=${fixture.databaseUrl}`], { timeoutMs: 120_000 });
    assert.match(again.stdout, /already taken over, and nothing new written to it since/);

    // The Go ncps, back in charge for a while, stores one more narinfo (and its NAR).
    const key = parseSecretKey(material.goKey.secretKey);
    const hash = encodeNix32(randomBytes(20));
    const nar = randomBytes(300);
    const fileHash = NixHash.of('sha256', nar);
    const unsigned = parseNarInfo(
      `StorePath: /nix/store/${hash}-stored-by-go-later\nURL: nar/${fileHash.nix32Digest()}.nar.xz\nCompression: xz\nFileHash: ${fileHash.toNix32()}\n` +
        `FileSize: ${nar.length}\nNarHash: ${NixHash.of('sha256', 'later').toNix32()}\nNarSize: 999\nReferences: \n`,
    );
    const sig = signFingerprint(key, narInfoFingerprint(unsigned));
    const file = fixture.databaseUrl.replace(/^sqlite:/, '');
    const go = new BetterSqlite3(file);
    const now = '2026-03-01 10:00:00.5+00:00';
    const id = Number((go.prepare('SELECT max(id) AS m FROM narinfos').get() as { m: number }).m) + 1;
    go.prepare(
      `INSERT INTO narinfos (id, hash, created_at, last_accessed_at, store_path, url, compression, file_hash, file_size, nar_hash, nar_size)
       VALUES (?, ?, ?, ?, ?, ?, 'xz', ?, ?, ?, 999)`,
    ).run(id, hash, now, now, unsigned.storePath, unsigned.url, fileHash.toNix32(), nar.length, unsigned.narHash.toNix32());
    go.prepare('INSERT INTO narinfo_signatures (narinfo_id, signature) VALUES (?, ?)').run(id, sig);
    const fileId = Number((go.prepare('SELECT max(id) AS m FROM nar_files').get() as { m: number }).m) + 1;
    go.prepare(`INSERT INTO nar_files (id, hash, compression, file_size, query, created_at) VALUES (?, ?, 'xz', ?, '', ?)`).run(fileId, fileHash.nix32Digest(), nar.length, now);
    go.prepare('INSERT INTO narinfo_nar_files (narinfo_id, nar_file_id) VALUES (?, ?)').run(id, fileId);
    go.close();
    const name = `${fileHash.nix32Digest()}.nar.xz`;
    const narFile = path.join(fixture.dataDir, 'store', 'nar', name[0]!, name.slice(0, 2), name);
    await mkdir(path.dirname(narFile), { recursive: true });
    await writeFile(narFile, nar);

    const ncps = await startNcps({
      upstreams: [`http://127.0.0.1:${await freePort()}`],
      publicKeys: [UNRELATED_KEY],
      dataDir: fixture.dataDir,
      readyTimeoutMs: 120_000,
      extraArgs: [`--cache-database-url=${fixture.databaseUrl}`],
    });
    try {
      assert.match(ncps.logs(), /the Go database changed since it was taken over: taking over what is new/);
      const r = await request(ncps.url, `/${hash}.narinfo`);
      assert.equal(r.status, 200, r.text);
      assert.ok(parseNarInfo(r.text).sigs.includes(sig));
      await substituteAndVerify(fixture.closures[1]!, { substituter: ncps.url, trustedPublicKey: fixture.publicKey, ncps });
    } finally {
      await ncps.stop();
    }
  });

  it('migrate from-go --remove-go-files removes the chunk and narinfo files it kept, once taken over; the NARs still serve', { timeout: TIMEOUT }, async () => {
    for (const generation of ['v0.7', 'v0.9'] as const) {
      const fixture = await buildGoFixture(material, generation, { kind: 'sqlite' });
      const args = [`--cache-storage-local=${fixture.dataDir}`, `--cache-database-url=${fixture.databaseUrl}`];
      const early = await runNcps(['migrate', 'from-go', '--remove-go-files', ...args]);
      assert.equal(early.code, 1);
      assert.match(early.stderr, /not been taken over yet/);
      assert.equal((await runNcps(['migrate', 'from-go', ...args], { timeoutMs: 120_000 })).code, 0);
      const goBefore = await goDatabaseDigest(fixture, { kind: 'sqlite' });
      const dry = await runNcps(['migrate', 'from-go', '--remove-go-files', '--dry-run', ...args]);
      assert.equal(dry.code, 0, dry.stderr);
      // The NAR that lost one of its three chunks was not taken over: its chunks stay (two files left).
      const keptFiles = generation === 'v0.9' ? 2 : 0;
      const keptRows = generation === 'v0.9' ? 3 : 0;
      const removable = fixture.chunkFiles.length - keptFiles;
      assert.match(dry.stdout, new RegExp(`would remove ${removable} chunk files \\(${keptRows} kept`));
      for (const rel of [...fixture.chunkFiles, ...fixture.narInfoFiles]) assert.ok(existsSync(path.join(fixture.dataDir, rel)));
      const removed = await runNcps(['migrate', 'from-go', '--remove-go-files', ...args]);
      assert.equal(removed.code, 0, removed.stderr);
      assert.match(removed.stdout, new RegExp(`removed ${removable} chunk files`));
      assert.match(removed.stdout, new RegExp(`and ${fixture.narInfoFiles.length} narinfo files`));
      const left = fixture.chunkFiles.filter((rel) => existsSync(path.join(fixture.dataDir, rel)));
      assert.equal(left.length, keptFiles);
      assert.equal(fixture.narInfoFiles.filter((rel) => existsSync(path.join(fixture.dataDir, rel))).length, 0);
      assert.equal(await goDatabaseDigest(fixture, { kind: 'sqlite' }), goBefore, 'the Go database itself is left for the operator');
      const ncps = await startNcps({
        upstreams: [`http://127.0.0.1:${await freePort()}`],
        publicKeys: [UNRELATED_KEY],
        dataDir: fixture.dataDir,
        extraArgs: [`--cache-database-url=${fixture.databaseUrl}`],
      });
      try {
        for (const closure of fixture.closures) await substituteAndVerify(closure, { substituter: ncps.url, trustedPublicKey: fixture.publicKey, ncps });
      } finally {
        await ncps.stop();
      }
    }
  });
});
