// A database that stops taking writes fails clearly, not as a storm of 500s. At run time (a
// PostgreSQL made read-only under a running ncps, as a standby or a read-only switch would):
// paths already cached are still served, misses answer 404 (not remembered as absent), uploads
// 503, one error line a minute says why and /readyz says 503; once writes work again, misses are
// fetched again. At start (a SQLite database on a read-only file system): ncps exits with a
// message naming the file.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { signedUpstream, teardown, type SignedUpstream } from '../helpers/fixture';
import { request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { hashPart, makeTempDir, nixAvailable, run, sleep } from '../helpers/nix';
import { postgresAvailable, postgresUnavailableReason, startPostgres, type PostgresServer } from '../helpers/postgres';
import { mountTmpfs, tmpfsSkipReason, type Tmpfs } from '../helpers/tmpfs';

const skipNix = nixAvailable() ? false : 'nix-bin not installed';

describe('a read-only database', { skip: skipNix, timeout: 300_000 }, () => {
  let upstream: SignedUpstream;

  before(async () => {
    upstream = await signedUpstream({ label: 'readonly-db' });
  });
  after(() => teardown(upstream));

  describe('at run time (PostgreSQL)', { skip: postgresAvailable() ? false : postgresUnavailableReason() }, () => {
    let pg: PostgresServer;
    let ncps: NcpsProcess;
    let database: string;
    const readOnly = async (on: boolean) => {
      await pg.query('postgres', `ALTER SYSTEM SET default_transaction_read_only = ${on ? 'on' : 'off'}`);
      await pg.query('postgres', 'SELECT pg_reload_conf()');
      // Sessions pick the setting up at their next transaction; give the reload a moment.
      await sleep(500);
    };

    before(async () => {
      pg = await startPostgres();
      const url = await pg.createDatabase('readonly');
      database = new URL(url).pathname.slice(1);
      ncps = await startNcps({
        upstreams: [upstream.url],
        publicKeys: [upstream.key.publicKey],
        extraArgs: [`--cache-database-url=${url}`, '--cache-allow-put-verb'],
      });
    });
    after(async () => {
      await ncps?.stop();
      await pg?.stop();
    });

    it('serves what it has, answers misses 404 and uploads 503, and says why once', async () => {
      const cached = `/${hashPart(upstream.closure.top)}.narinfo`;
      assert.equal((await request(ncps.url, cached)).status, 200);
      await readOnly(true);
      void database;

      const miss = `/${hashPart(upstream.closure.leaf)}.narinfo`;
      for (let i = 0; i < 5; i++) {
        const r = await request(ncps.url, miss);
        assert.equal(r.status, 404, `miss ${i}: ${r.status} ${r.text}`);
      }
      assert.equal((await request(ncps.url, cached)).status, 200, 'a cached path is still served');
      const said = ncps.logs().match(/the database refuses writes/g) ?? [];
      assert.equal(said.length, 1, `the reason is logged once, not per request (${said.length} times)`);
      assert.doesNotMatch(ncps.logs(), /"msg":"request failed"/, 'requests failed with 500');

      const ready = await request(ncps.url, '/readyz');
      assert.equal(ready.status, 503);
      assert.match(JSON.parse(ready.text).checks.database.error, /reads only|read-only/i);

      const log = await request(ncps.url, `/upload/log/${hashPart(upstream.closure.mid)}-x.drv`, { method: 'PUT', body: 'a log\n' });
      assert.equal(log.status, 503, `log upload: ${log.status} ${log.text}`);
      assert.match(log.text, /the database refuses writes/);
    });

    it('fetches misses again once the database takes writes', async () => {
      await readOnly(false);
      const miss = `/${hashPart(upstream.closure.leaf)}.narinfo`;
      let status = 0;
      for (let i = 0; i < 50 && status !== 200; i++) {
        status = (await request(ncps.url, miss)).status;
        if (status !== 200) await sleep(200);
      }
      assert.equal(status, 200, 'the miss was remembered as absent');
    });
  });

  describe('at start (SQLite on a read-only file system)', { skip: tmpfsSkipReason() }, () => {
    let tmpfs: Tmpfs | undefined;
    after(async () => {
      if (tmpfs) await run('mount', ['-o', 'remount,rw', tmpfs.dir], { timeoutMs: 10_000 });
      await tmpfs?.unmount();
    });

    it('exits with a message naming the file', async () => {
      const mounted = await mountTmpfs(16 << 20);
      if (typeof mounted === 'string') throw new Error(mounted);
      tmpfs = mounted;
      const dataDir = await makeTempDir('readonly-db-storage');
      const opts = { upstreams: [upstream.url], publicKeys: [upstream.key.publicKey], dataDir, extraArgs: [`--cache-database-url=sqlite:${path.join(tmpfs.dir, 'db.sqlite')}`] };
      const first = await startNcps(opts);
      await first.stop();
      assert.equal((await run('mount', ['-o', 'remount,ro', tmpfs.dir], { timeoutMs: 10_000 })).code, 0);
      await assert.rejects(startNcps(opts), (error: Error) => {
        assert.match(error.message, /ncps exited with code [1-9]/);
        assert.match(error.message, /the SQLite database .*db\.sqlite cannot be written \(EROFS/);
        return true;
      });
    });
  });
});
