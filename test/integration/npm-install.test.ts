// `npm install -g` gives a working `ncps` on PATH: the package names its bin (the bundle, with its
// shebang) and its man page, a packed tarball carries them, and an install from the checkout into
// a fresh prefix runs: --version, the completion scripts, and a server that answers /healthz.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { request } from '../helpers/http';
import { REPO_ROOT } from '../helpers/ncps';
import { cleanupTempDirs, freePort, killOnExit, makeTempDir, run, sleep } from '../helpers/proc';

after(() => cleanupTempDirs());

const pkg = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as {
  version: string;
  bin: Record<string, string>;
  man: string[];
  scripts: Record<string, string>;
};
/** npm without the developer's own settings (no global prefix, registry or cache changes). */
const npmEnv = (home: string) => ({ ...process.env, HOME: home, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' });

describe('npm install -g', { timeout: 240_000 }, () => {
  it('the package names the bundle as its bin and ships it, the man page and the completions', async () => {
    assert.equal(pkg.bin.ncps, 'dist/ncps.cjs');
    assert.deepEqual(pkg.man, ['./dist/man/ncps.1']);
    assert.match(pkg.scripts.prepare ?? '', /scripts\/build\.mjs/, 'installs from git build the bundle');
    assert.equal(readFileSync(path.join(REPO_ROOT, 'dist', 'ncps.cjs'), 'utf8').split('\n', 1)[0], '#!/usr/bin/env node');
    const home = await makeTempDir('npm-home');
    const packed = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: REPO_ROOT, env: npmEnv(home), timeoutMs: 120_000 });
    assert.equal(packed.code, 0, packed.stderr);
    const files = new Set((JSON.parse(packed.stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path));
    for (const file of ['package.json', 'dist/ncps.cjs', 'dist/man/ncps.1', 'dist/completions/ncps.bash', 'dist/completions/_ncps', 'dist/completions/ncps.fish']) {
      assert.ok(files.has(file), `${file} is in the package`);
    }
    assert.equal([...files].some((f) => f.startsWith('src/') || f.startsWith('test/')), false, 'no sources or tests');
  });

  it('from the checkout into a fresh prefix: ncps runs from PATH and serves', async () => {
    const home = await makeTempDir('npm-home');
    const prefix = await makeTempDir('npm-prefix');
    const install = await run('npm', ['install', '-g', '--prefix', prefix, '--offline', REPO_ROOT], { env: npmEnv(home), timeoutMs: 180_000 });
    assert.equal(install.code, 0, `${install.stdout}\n${install.stderr}`);
    const bin = path.join(prefix, 'bin', 'ncps');
    assert.equal(realpathSync(bin), realpathSync(path.join(REPO_ROOT, 'dist', 'ncps.cjs')));
    assert.ok(realpathSync(path.join(prefix, 'share', 'man', 'man1', 'ncps.1')).endsWith(path.join('dist', 'man', 'ncps.1')), 'man ncps finds the page');
    const env = { ...process.env, PATH: `${path.join(prefix, 'bin')}:${process.env.PATH}` };

    const version = await run('ncps', ['--version'], { env });
    assert.equal(version.code, 0, version.stderr);
    assert.equal(version.stdout.trim(), `ncps version ${pkg.version}`);
    const completion = await run('ncps', ['completion', 'bash'], { env });
    assert.match(completion.stdout, /complete -F _ncps ncps/);

    // The installed command, run through its shebang, serves.
    const data = await makeTempDir('npm-serve');
    const port = await freePort();
    const server = spawn('ncps', ['serve', `--server-addr=127.0.0.1:${port}`, `--cache-storage-local=${data}`, '--cache-hostname=npm-test'], { env, stdio: 'ignore' });
    killOnExit(server);
    try {
      const deadline = Date.now() + 30_000;
      let status = 0;
      while (Date.now() < deadline) {
        status = await request(`http://127.0.0.1:${port}`, '/healthz', { timeoutMs: 1_000 }).then((r) => r.status, () => 0);
        if (status === 200) break;
        await sleep(100);
      }
      assert.equal(status, 200, 'the installed ncps answers /healthz');
    } finally {
      server.kill('SIGTERM');
      await new Promise((resolve) => server.once('exit', resolve));
    }
  });
});
