// The ncps command line: bad flags are usage errors (exit 2) that name the flag; --help works.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
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

describe('ncps CLI in the Go shape', () => {
  after(async () => {
    await cleanupTempDirs();
  });

  it('takes global flags before the command with space-separated values, the s alias and help/version', { timeout: TIMEOUT }, async () => {
    const dir = await makeTempDir('cli-go');
    const file = path.join(dir, 'config.yaml');
    await writeFile(file, 'log:\n  level: warn\ncache:\n  hostname: go-shape\n');
    for (const argv of [
      ['--config', file, 'serve', '--help'],
      ['--log-level', 'debug', 's', '--help'],
      ['--config', file, '--log-level', 'debug', 'help', 'serve'],
    ]) {
      const r = await runNcps(argv, { timeoutMs: 20_000 });
      assert.equal(r.code, 0, `${argv.join(' ')}: ${show(r)}`);
      assert.match(r.stdout, /Usage: ncps serve/, show(r));
    }
    for (const argv of [['--version'], ['version'], ['-v']]) {
      const r = await runNcps(argv, { timeoutMs: 20_000 });
      assert.equal(r.code, 0, show(r));
      assert.match(r.stdout, /^ncps version \S+\n$/, show(r));
    }
    const help = await runNcps(['help'], { timeoutMs: 20_000 });
    assert.equal(help.code, 0, show(help));
    assert.match(help.stdout, /serve, s /, show(help));
    // A bad config named before the command is found and reported (it was not taken for a command).
    const bad = await runNcps(['--config', path.join(dir, 'missing.yaml'), 'serve'], { timeoutMs: 20_000 });
    assert.equal(bad.code, 2, show(bad));
    assert.match(bad.stderr, /cannot read config file .*missing\.yaml/, show(bad));
    const unknown = await runNcps(['--no-such-global', 'serve'], { timeoutMs: 20_000 });
    assert.equal(unknown.code, 2, show(unknown));
    assert.match(unknown.stderr, /unknown flag: --no-such-global/, show(unknown));
  });

  it('finds the migrate subcommand after global flags, and refuses migrate down as the Go ncps does', { timeout: TIMEOUT }, async () => {
    const dir = await makeTempDir('cli-migrate');
    const file = path.join(dir, 'config.toml');
    await writeFile(file, `[cache]\ndatabase-url = "sqlite:${path.join(dir, 'db.sqlite')}"\n`);
    const up = await runNcps(['--config', file, 'migrate', 'up'], { timeoutMs: 30_000 });
    assert.equal(up.code, 0, show(up));
    assert.match(up.stdout, /applied 1/, show(up));
    const status = await runNcps(['migrate', '--config', file, 'status'], { timeoutMs: 30_000 });
    assert.equal(status.code, 0, show(status));
    const down = await runNcps(['migrate', 'down'], { timeoutMs: 20_000 });
    assert.equal(down.code, 1, show(down));
    assert.match(down.stderr, /only go forward/, show(down));
    const cdc = await runNcps(['migrate-chunks-to-nar'], { timeoutMs: 20_000 });
    assert.equal(cdc.code, 2, show(cdc));
    assert.match(cdc.stderr, /no content-defined chunking/, show(cdc));
  });
});
