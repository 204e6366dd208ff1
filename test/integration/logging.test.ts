// Logging never stops the server: when the reader of stdout goes away (`ncps serve | head`) or
// stops reading (a stuck log shipper), requests are still answered, SIGTERM still ends the
// process, and the lost lines are counted in ncps_log_lines_dropped_total.

import assert from 'node:assert/strict';
import { closeSync, constants, openSync } from 'node:fs';
import path from 'node:path';
import { after, it } from 'node:test';
import { request } from '../helpers/http';
import { startNcps } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir, run } from '../helpers/proc';

after(() => cleanupTempDirs());

const KEY = 'test-1:Zz8UoMw3ADmHtIaF4dp1kXJj5xHCn2D8bnEJnqC0lKM=';

function droppedLines(metrics: string): number {
  const match = /^ncps_log_lines_dropped_total (\d+)$/m.exec(metrics);
  assert.ok(match, `no ncps_log_lines_dropped_total in\n${metrics}`);
  return Number(match[1]);
}

/** Every request writes a log line this long (the URL is in it). */
const LONG_QUERY = `?padding=${'x'.repeat(7_000)}`;

it('keeps serving and stops on SIGTERM after the reader of stdout went away', { timeout: 60_000 }, async () => {
  const ncps = await startNcps({ upstreams: ['http://127.0.0.1:9'], publicKeys: [KEY], extraArgs: ['--prometheus-enabled'] });
  try {
    // Like `ncps serve | head`: the reading end is closed; the next write meets EPIPE.
    ncps.proc.stdout!.destroy();
    for (let i = 0; i < 50; i++) {
      const response = await request(ncps.url, '/nix-cache-info', { timeoutMs: 5_000 });
      assert.equal(response.status, 200);
    }
    const metrics = await request(ncps.url, '/metrics', { timeoutMs: 5_000 });
    assert.equal(metrics.status, 200);
    assert.ok(droppedLines(metrics.text) >= 50, metrics.text);
  } finally {
    const started = Date.now();
    const code = await ncps.stop('SIGTERM');
    assert.equal(code, 0, ncps.logs());
    assert.ok(Date.now() - started < 8_000, `shutdown took ${Date.now() - started} ms`);
  }
});

it('keeps serving and stops on SIGTERM while the reader of stdout reads nothing', { timeout: 90_000 }, async () => {
  const dir = await makeTempDir('ncps-stalled-log');
  const fifo = path.join(dir, 'stdout.fifo');
  assert.equal((await run('mkfifo', [fifo])).code, 0);
  // A reader that never reads: the pipe fills (64 KiB), then every further write would block.
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const writer = openSync(fifo, constants.O_WRONLY);
  let ncps;
  try {
    ncps = await startNcps({ upstreams: ['http://127.0.0.1:9'], publicKeys: [KEY], extraArgs: ['--prometheus-enabled'], stdoutFd: writer });
  } finally {
    closeSync(writer);
  }
  try {
    // 2 MiB of log lines: more than the pipe and ncps's own buffer (1 MiB) hold together.
    for (let i = 0; i < 300; i++) {
      const response = await request(ncps.url, `/nix-cache-info${LONG_QUERY}`, { timeoutMs: 5_000 });
      assert.equal(response.status, 200);
    }
    const metrics = await request(ncps.url, '/metrics', { timeoutMs: 5_000 });
    assert.equal(metrics.status, 200);
    assert.ok(droppedLines(metrics.text) > 0, metrics.text);
  } finally {
    const started = Date.now();
    const code = await ncps.stop('SIGTERM');
    closeSync(reader);
    assert.equal(code, 0, ncps.logs());
    assert.ok(Date.now() - started < 8_000, `shutdown took ${Date.now() - started} ms`);
  }
});
