// The ncps command line: bad flags are usage errors (exit 2) that name the flag; --help works.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runNcps } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir, type RunResult } from '../helpers/proc';

const TIMEOUT = 60_000;

function show(r: RunResult): string {
  return `exit ${r.code}${r.timedOut ? ' (timed out: the server probably started)' : ''}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

describe('ncps CLI', () => {
  // An otherwise complete, valid `serve` command line, so the flag under test is the only problem.
  let valid: string[];

  before(async () => {
    const dataDir = await makeTempDir('cli-data');
    valid = [
      '--cache-hostname=ncps-test',
      '--server-addr=127.0.0.1:0',
      `--cache-storage-local=${dataDir}`,
      `--cache-database-url=sqlite:${path.join(dataDir, 'db.sqlite')}`,
      '--cache-upstream-url=http://127.0.0.1:9',
    ];
  });

  after(async () => {
    await cleanupTempDirs();
  });

  it('rejects an unknown flag with exit code 2 and names it', { timeout: TIMEOUT }, async () => {
    const r = await runNcps(['serve', ...valid, '--no-such-flag'], { timeoutMs: 20_000 });
    assert.equal(r.code, 2, show(r));
    assert.match(r.stderr + r.stdout, /no-such-flag/, show(r));
  });

  it('rejects an invalid duration with exit code 2 and names the flag', { timeout: TIMEOUT }, async () => {
    const r = await runNcps(['serve', ...valid, '--cache-upstream-dialer-timeout=banana'], { timeoutMs: 20_000 });
    assert.equal(r.code, 2, show(r));
    assert.match(r.stderr + r.stdout, /cache-upstream-dialer-timeout/, show(r));
  });

  it('serve --help exits 0 and lists --cache-upstream-url', { timeout: TIMEOUT }, async () => {
    const r = await runNcps(['serve', '--help'], { timeoutMs: 20_000 });
    assert.equal(r.code, 0, show(r));
    assert.match(r.stdout, /--cache-upstream-url\b/, show(r));
  });
});
