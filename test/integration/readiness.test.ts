// /healthz says the process answers; /readyz says whether it can do its job: 503, with which check
// failed and why, when the database is stopped or read-only, when storage is full or cannot take
// files, or when no upstream is healthy. /metrics keeps answering through all of it.

import assert from 'node:assert/strict';
import { chmod, chown, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { postgresAvailable, postgresUnavailableReason, startPostgres } from '../helpers/postgres';
import { cleanupTempDirs, makeTempDir, run, sleep } from '../helpers/proc';
import { ncpsS3Args, s3rverAvailable, startS3rver } from '../helpers/s3';
import { startStaticCache, type StaticCache } from '../helpers/static-cache';

after(() => cleanupTempDirs());

const KEY = 'test-1:Zz8UoMw3ADmHtIaF4dp1kXJj5xHCn2D8bnEJnqC0lKM=';
const isRoot = process.getuid?.() === 0;

interface Report {
  ready: boolean;
  checks: Record<'database' | 'storage' | 'upstreams', { ok: boolean; error?: string; healthy?: number; total?: number }>;
}

async function readiness(ncps: NcpsProcess): Promise<{ status: number; report: Report }> {
  const response = await request(ncps.url, '/readyz', { timeoutMs: 10_000 });
  assert.match(String(response.headers['content-type']), /^application\/json/);
  return { status: response.status, report: JSON.parse(response.text) as Report };
}

/** Polls /readyz until `want` holds (background health checks take a moment). */
async function readinessUntil(ncps: NcpsProcess, want: (r: { status: number; report: Report }) => boolean, what: string) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const result = await readiness(ncps);
    if (want(result)) return result;
    if (Date.now() > deadline) assert.fail(`${what}: last answer ${result.status} ${JSON.stringify(result.report)}\n${ncps.logs()}`);
    await sleep(200);
  }
}

async function upstream(): Promise<StaticCache> {
  const dir = await makeTempDir('ready-upstream');
  await writeFile(path.join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n');
  return startStaticCache(dir);
}

async function healthz(ncps: NcpsProcess): Promise<void> {
  const response = await request(ncps.url, '/healthz', { timeoutMs: 5_000 });
  assert.equal(response.status, 200);
  assert.equal(response.text, 'OK\n');
}

async function metricsAnswer(ncps: NcpsProcess): Promise<string> {
  const response = await request(ncps.url, '/metrics', { timeoutMs: 10_000 });
  assert.equal(response.status, 200, response.text);
  assert.match(response.text, /^ncps_narinfo_served_total/m);
  return response.text;
}

describe('readiness', { timeout: 240_000 }, () => {
  it('is ready with a working database, storage and upstream, and names each check', async () => {
    const cache = await upstream();
    const ncps = await startNcps({ upstreams: [cache.url], publicKeys: [KEY] });
    try {
      const { status, report } = await readinessUntil(ncps, (r) => r.status === 200, 'ready');
      assert.equal(status, 200);
      assert.equal(report.ready, true);
      assert.deepEqual(Object.keys(report.checks).sort(), ['database', 'storage', 'upstreams']);
      assert.equal(report.checks.upstreams.healthy, 1);
      const head = await request(ncps.url, '/readyz', { method: 'HEAD' });
      assert.equal(head.status, 200);
      // Probes are not request-logged.
      assert.doesNotMatch(ncps.logs(), /"url":"\/readyz"/);
    } finally {
      await ncps.stop();
      await cache.stop();
    }
  });

  it('is not ready while no upstream is healthy, and says why; the warning names the reason', async () => {
    const ncps = await startNcps({ upstreams: ['http://127.0.0.1:9'], publicKeys: [KEY], extraArgs: ['--prometheus-enabled'] });
    try {
      const { report } = await readinessUntil(ncps, (r) => r.status === 503, 'not ready without upstreams');
      assert.equal(report.checks.upstreams.ok, false);
      assert.match(report.checks.upstreams.error ?? '', /no upstream is healthy \(http:\/\/127\.0\.0\.1:9\/: .*ECONNREFUSED/);
      assert.equal(report.checks.database.ok, true);
      assert.equal(report.checks.storage.ok, true);
      await healthz(ncps);
      await metricsAnswer(ncps);
      assert.match(ncps.logs(), /"level":"warn".*"reason":"[^"]*ECONNREFUSED[^"]*".*"msg":"upstream is unhealthy"/);
    } finally {
      await ncps.stop();
    }
  });

  it('is not ready when the temp directory cannot take files', async () => {
    const cache = await upstream();
    const ncps = await startNcps({ upstreams: [cache.url], publicKeys: [KEY] });
    try {
      await readinessUntil(ncps, (r) => r.status === 200, 'ready first');
      // Someone cleaned the directory away under the running server.
      await rm(path.join(ncps.dataDir, 'store', 'tmp'), { recursive: true });
      const { report } = await readinessUntil(ncps, (r) => r.status === 503, 'not ready without a temp directory');
      assert.equal(report.checks.storage.ok, false);
      assert.match(report.checks.storage.error ?? '', /temp directory .*store\/tmp is not writable: ENOENT/);
      await mkdir(path.join(ncps.dataDir, 'store', 'tmp'));
      await readinessUntil(ncps, (r) => r.status === 200, 'ready again');
    } finally {
      await ncps.stop();
      await cache.stop();
    }
  });

  it('is not ready when storage is full', async (t) => {
    if (!isRoot) return t.skip('needs root to mount a small tmpfs');
    const mountPoint = await makeTempDir('ready-full');
    const mounted = await run('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mountPoint]);
    if (mounted.code !== 0) return t.skip(`cannot mount a tmpfs here: ${mounted.stderr.trim()}`);
    const cache = await upstream();
    const dbDir = await makeTempDir('ready-full-db');
    let ncps: NcpsProcess | undefined;
    try {
      ncps = await startNcps({
        upstreams: [cache.url],
        publicKeys: [KEY],
        dataDir: mountPoint,
        extraArgs: [`--cache-database-url=sqlite:${path.join(dbDir, 'db.sqlite')}`],
      });
      await readinessUntil(ncps, (r) => r.status === 200, 'ready first');
      // Fill the file system (dd stops at ENOSPC).
      await run('dd', ['if=/dev/zero', `of=${path.join(mountPoint, 'filler')}`, 'bs=64k']);
      const { report } = await readinessUntil(ncps, (r) => r.status === 503, 'not ready on a full disk');
      assert.equal(report.checks.storage.ok, false);
      assert.match(report.checks.storage.error ?? '', /ENOSPC|is full/);
      await rm(path.join(mountPoint, 'filler'));
      await readinessUntil(ncps, (r) => r.status === 200, 'ready again with room');
    } finally {
      await ncps?.stop();
      await cache.stop();
      await run('umount', [mountPoint]);
    }
  });

  it('is not ready when the S3 bucket does not answer', { skip: s3rverAvailable() ? false : 's3rver not installed' }, async () => {
    const s3 = await startS3rver();
    const cache = await upstream();
    let ncps: NcpsProcess | undefined;
    try {
      ncps = await startNcps({
        upstreams: [cache.url],
        publicKeys: [KEY],
        extraArgs: [
          ...ncpsS3Args(s3),
          '--cache-upstream-response-header-timeout=1s',
        ],
      });
      await readinessUntil(ncps, (r) => r.status === 200, 'ready first');
      await s3.stop();
      const { report } = await readinessUntil(ncps, (r) => r.status === 503, 'not ready without the bucket');
      assert.equal(report.checks.storage.ok, false);
      assert.match(report.checks.storage.error ?? '', /S3 bucket "ncps-test" at .* cannot be reached|no answer within/);
    } finally {
      await ncps?.stop();
      await cache.stop();
      await s3.stop().catch(() => undefined);
    }
  });

  it('a read-only SQLite database: refused at start, not reported ready', async () => {
    const cache = await upstream();
    const dataDir = await makeTempDir('ready-ro');
    const dbFile = path.join(dataDir, 'db', 'db.sqlite');
    const flags = [`--cache-database-url=sqlite:${dbFile}`];
    // A first run creates the schema and the signing key; then the file is made read-only.
    const first = await startNcps({ upstreams: [cache.url], publicKeys: [KEY], dataDir, extraArgs: flags });
    await first.stop();
    let env: Record<string, string> | undefined;
    let wrap: string[] = [];
    if (isRoot) {
      // Root writes whatever the mode says: run as nobody, who owns the storage but not the database file.
      await run('chown', ['-R', '65534:65534', dataDir]);
      await chown(dbFile, 0, 0);
      await chmod(dbFile, 0o644);
      wrap = ['--reuid=65534', '--regid=65534', '--clear-groups'];
      env = { HOME: dataDir };
    } else {
      await chmod(dbFile, 0o444);
    }
    try {
      await assert.rejects(
        startNcps({ upstreams: [cache.url], publicKeys: [KEY], dataDir, extraArgs: flags, ...(env ? { env } : {}), ...(wrap.length > 0 ? { wrapper: ['setpriv', ...wrap] } : {}) }),
        /cannot be written/,
      );
    } finally {
      await cache.stop();
    }
  });

  it('is not ready once PostgreSQL accepts reads only (a standby, default_transaction_read_only)', { skip: postgresAvailable() ? false : postgresUnavailableReason() }, async () => {
    const pg = await startPostgres();
    const cache = await upstream();
    let ncps: NcpsProcess | undefined;
    try {
      const url = await pg.createDatabase('ready-ro');
      const database = decodeURIComponent(new URL(url).pathname.slice(1));
      ncps = await startNcps({ upstreams: [cache.url], publicKeys: [KEY], extraArgs: [`--cache-database-url=${url}`] });
      await readinessUntil(ncps, (r) => r.status === 200, 'ready first');
      await pg.query(database, `ALTER DATABASE "${database}" SET default_transaction_read_only = on`);
      // ncps's pooled connections go; the new ones are read-only.
      await pg.query(database, 'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [database]);
      const { report } = await readinessUntil(ncps, (r) => r.status === 503, 'not ready on a read-only database');
      assert.equal(report.checks.database.ok, false);
      assert.match(report.checks.database.error ?? '', /accepts reads only/);
      assert.equal(report.checks.storage.ok, true, JSON.stringify(report));
      await healthz(ncps);
    } finally {
      await ncps?.stop();
      await cache.stop();
      await pg.stop().catch(() => undefined);
    }
  });

  it('is not ready with PostgreSQL stopped, while /healthz and /metrics keep answering', { skip: postgresAvailable() ? false : postgresUnavailableReason() }, async () => {
    const pg = await startPostgres();
    const cache = await upstream();
    let ncps: NcpsProcess | undefined;
    try {
      const url = await pg.createDatabase('ready');
      ncps = await startNcps({ upstreams: [cache.url], publicKeys: [KEY], extraArgs: [`--cache-database-url=${url}`, '--prometheus-enabled'] });
      await readinessUntil(ncps, (r) => r.status === 200, 'ready first');
      await metricsAnswer(ncps);
      await pg.stop();
      const { report } = await readinessUntil(ncps, (r) => r.status === 503, 'not ready with PostgreSQL stopped');
      assert.equal(report.checks.database.ok, false);
      assert.match(report.checks.database.error ?? '', /ECONNREFUSED|terminat|connect/i);
      assert.equal(report.checks.storage.ok, true);
      await healthz(ncps);
      const text = await metricsAnswer(ncps);
      assert.match(text, /^ncps_narinfo_count \d+$/m);
      assert.match(ncps.logs(), /could not read the store figures from the database/);
    } finally {
      await ncps?.stop();
      await cache.stop();
      await pg.stop().catch(() => undefined);
    }
  });
});
