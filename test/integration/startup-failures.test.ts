// Start-up failures end the process (so systemd can restart it) with a message that says why,
// and lock use shows in the metrics.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, it } from 'node:test';
import { request } from '../helpers/http';
import { NCPS_BUNDLE, startNcps } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir } from '../helpers/proc';

after(() => cleanupTempDirs());

it('exits non-zero when Redis is unreachable at start, instead of hanging', { timeout: 60_000 }, async () => {
  const dir = await makeTempDir('ncps-redis-down');
  const child = spawn(
    process.execPath,
    [NCPS_BUNDLE, 'serve', '--server-addr=127.0.0.1:0', `--cache-storage-local=${dir}`, '--cache-redis-addrs=127.0.0.1:1', '--cache-lock-retry-max-attempts=2'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(timer);
  assert.notEqual(code, null, `ncps was still running after 30 s:\n${output}`);
  assert.notEqual(code, 0);
  assert.match(output, /Redis/i);
});

it('counts lock acquisitions with the Go ncps labels, and by kind', { timeout: 60_000 }, async () => {
  const ncps = await startNcps({
    upstreams: ['http://127.0.0.1:9'],
    publicKeys: ['test-1:Zz8UoMw3ADmHtIaF4dp1kXJj5xHCn2D8bnEJnqC0lKM='],
    extraArgs: ['--prometheus-enabled'],
  });
  try {
    assert.equal((await request(ncps.url, '/00000000000000000000000000000000.narinfo')).status, 404);
    const metrics = (await request(ncps.url, '/metrics')).text;
    assert.match(metrics, /^ncps_lock_acquisitions_total\{type="exclusive",mode="local",result="success",kind="narinfo"\} 1$/m);
    assert.match(metrics, /^ncps_lock_hold_duration_seconds_count\{type="exclusive",mode="local",kind="narinfo"\} 1$/m);
  } finally {
    await ncps.stop();
  }
});
