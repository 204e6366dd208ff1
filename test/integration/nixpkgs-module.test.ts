// nixpkgs' own ncps NixOS test configurations (nix/tests/nixpkgs-cases.nix), evaluated with
// nixpkgs' lib (NCPS_NIXPKGS_LIB; .ci/run sets it) both ways: nix/module.nix with nixpkgs' module
// present as in NixOS, and nixpkgs' module alone with only the package swapped for this one
// (nix/tests/eval-nixpkgs-cases.nix). What the evaluations generate is then run through the built
// CLI: every config file and start script is accepted, and for the SQLite configurations the
// generated scripts themselves — nixpkgs' `dbmate-ncps up` pre-start and its
// `ncps --config FILE serve` wrapper, and this module's migration and serve scripts — start ncps,
// which serves the real Nix client. Host names of the test networks and paths are replaced by
// loopback servers and temp directories; nothing else in the generated text is changed.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { signedUpstream, substituteAndVerify, teardown, type SignedUpstream } from '../helpers/fixture';
import { request } from '../helpers/http';
import { NCPS_BUNDLE, REPO_ROOT } from '../helpers/ncps';
import { generateKeyPair, makeTempDir, nixAvailable, type KeyPair } from '../helpers/nix';
import { freePort, killOnExit, run, sleep } from '../helpers/proc';

const lib = process.env.NCPS_NIXPKGS_LIB ? path.resolve(REPO_ROOT, process.env.NCPS_NIXPKGS_LIB) : '';
const haveNixInstantiate = spawnSync('nix-instantiate', ['--version'], { stdio: 'ignore' }).status === 0;
const skip = !haveNixInstantiate
  ? 'nix-instantiate not installed'
  : !lib
    ? 'set NCPS_NIXPKGS_LIB to nixpkgs lib (.ci/run sets ../shared/nixpkgs-lib)'
    : !nixAvailable()
      ? 'nix not installed'
      : false;

interface Generated {
  failedAssertions: string[];
  warnings: string[];
  configText: string;
}
interface Ours extends Generated {
  serveScript: string;
  migrateScript: string;
  type: string;
  tmpfiles: string[];
}
interface Nixpkgs extends Generated {
  wrapperScript: string;
  wrapperPath: string;
  execStart: string;
  preStart: string;
  credentials: string[];
}
interface Evaluation {
  upstreamKey: string;
  packagePath: string;
  cases: Record<string, { ours: Ours; nixpkgs: Nixpkgs }>;
}

const SQLITE_CASES = ['ncps', 'ncps-custom-sqlite-directory', 'ncps-custom-storage-local'];

describe("nixpkgs' ncps test configurations", { skip, timeout: 900_000 }, () => {
  let evaluation: Evaluation;
  let upstream: SignedUpstream;
  let key: KeyPair;
  let shims: string;
  const children: ChildProcess[] = [];

  before(async () => {
    const r = await run('nix-instantiate', ['--eval', '--strict', '--json', 'nix/tests/eval-nixpkgs-cases.nix', '--argstr', 'libPath', path.join(lib, 'lib')], {
      cwd: REPO_ROOT,
      timeoutMs: 120_000,
    });
    assert.equal(r.code, 0, r.stderr);
    evaluation = JSON.parse(r.stdout) as Evaluation;
    upstream = await signedUpstream({ label: 'nixpkgs-module', keyName: 'cache.example.com-1' });
    key = await generateKeyPair('ncps', await makeTempDir('nixpkgs-module-key'));
    // What the package puts in bin/: ncps and dbmate-ncps (nix/ncps-launcher.sh), as shims.
    shims = await makeTempDir('nixpkgs-module-package');
    mkdirSync(path.join(shims, 'bin'));
    for (const [name, extra] of [['ncps', ''], ['dbmate-ncps', ' dbmate']] as const) {
      writeFileSync(path.join(shims, 'bin', name), `#!/bin/sh\nexec ${process.execPath} ${NCPS_BUNDLE}${extra} "$@"\n`, { mode: 0o755 });
    }
  });

  after(async () => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    await teardown(upstream);
  });

  it('evaluate without a failed assertion, nixpkgs module present and replaced, or alone with this package', () => {
    const names = Object.keys(evaluation.cases);
    for (const expected of ['ncps', 'ncps-custom-sqlite-directory', 'ncps-custom-storage-local', 'ncps-ha-pg-redis-ncps0', 'ncps-ha-pg-redis-cdc-ncps1']) {
      assert.ok(names.includes(expected), expected);
    }
    for (const [name, c] of Object.entries(evaluation.cases)) {
      assert.deepEqual(c.ours.failedAssertions, [], `${name} with nix/module.nix`);
      assert.deepEqual(c.nixpkgs.failedAssertions, [], `${name} with nixpkgs' module`);
      assert.equal(c.ours.type, 'notify', `${name}: this package notifies systemd`);
      assert.equal(c.nixpkgs.execStart, `${c.nixpkgs.wrapperPath} serve`, `${name}: nixpkgs runs "<wrapper> serve"`);
      assert.match(c.nixpkgs.wrapperScript, /exec \S+\/bin\/ncps --config "\S+" "\$@"/);
      assert.match(c.nixpkgs.preStart, /\/bin\/dbmate-ncps up$/m);
    }
    assert.ok(evaluation.cases['ncps-ha-pg-redis-cdc-ncps0']!.ours.warnings.some((w) => /cdc/.test(w)));
  });

  /** The generated text with this machine's stand-ins for the test network and paths. */
  const localise = (text: string, dirs: { data: string; custom: string; port: number }) =>
    text
      .replaceAll('/var/lib/ncps', dirs.data)
      .replaceAll('/path/to/ncps', dirs.custom)
      .replaceAll('http://harmonia:5000', upstream.url)
      .replaceAll(evaluation.upstreamKey, upstream.key.publicKey)
      .replaceAll('":8501"', `"127.0.0.1:${dirs.port}"`)
      .replaceAll(evaluation.packagePath, shims);

  /** Writes every config file a script names (rewritten), and returns the rewritten script. */
  function scriptWithConfig(script: string, configText: string, dir: string, dirs: { data: string; custom: string; port: number }): string {
    const file = path.join(dir, `config-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(file, localise(configText, dirs));
    return localise(script, dirs).replace(/\/nix\/store\/[a-z0-9]+-ncps-config\.json/g, file);
  }

  it('every generated config file and command line is accepted by the built CLI', { timeout: 300_000 }, async () => {
    for (const [name, c] of Object.entries(evaluation.cases)) {
      const dir = await makeTempDir(`nixpkgs-${name}`);
      const dirs = { data: path.join(dir, 'data'), custom: path.join(dir, 'custom'), port: 8501 };
      // The credentials systemd would hand over (LoadCredential).
      copyFileSync(key.secretKeyFile, path.join(dir, 'secretKey'));
      writeFileSync(path.join(dir, 'databaseURL'), 'postgres://ncps:easypwd@postgres:5432/ncps?sslmode=disable');
      for (const name of ['redisPassword', 's3AccessKeyId', 's3SecretAccessKey']) writeFileSync(path.join(dir, name), 'easy');
      for (const [who, script] of [
        ['nixpkgs wrapper', scriptWithConfig(c.nixpkgs.wrapperScript, c.nixpkgs.configText, dir, dirs)],
        // This module's script takes no arguments: --help goes at the end of its exec line.
        ['nix/module.nix serve', `${scriptWithConfig(c.ours.serveScript, c.ours.configText, dir, dirs).trimEnd()} --help\n`],
      ] as const) {
        // `serve --help` loads and checks the whole configuration without opening anything.
        const args = who === 'nixpkgs wrapper' ? ['serve', '--help'] : [];
        const r = await run('bash', ['-c', `${script.replace(/^#!.*\n/, '')}`, 'sh', ...args], {
          env: { ...process.env, CREDENTIALS_DIRECTORY: dir, PATH: process.env.PATH ?? '' },
          timeoutMs: 60_000,
        });
        assert.equal(r.code, 0, `${name}, ${who}: exit ${r.code}\n${r.stderr}\n${script}`);
        assert.match(r.stdout, /Usage: ncps serve/, `${name}, ${who}`);
      }
    }
  });

  for (const name of SQLITE_CASES) {
    it(`${name}: nixpkgs' pre-start and wrapper with this package, and this module's scripts, serve the real Nix client`, { timeout: 300_000 }, async () => {
      const c = evaluation.cases[name]!;
      for (const who of ['nixpkgs', 'ours'] as const) {
        const dir = await makeTempDir(`nixpkgs-run-${name}`);
        const dirs = { data: path.join(dir, 'var-lib-ncps'), custom: path.join(dir, 'custom'), port: await freePort() };
        // What systemd provides: the state directory, credentials, the directories of tmpfiles rules.
        mkdirSync(dirs.data, { recursive: true });
        mkdirSync(dirs.custom, { recursive: true });
        const credentials = path.join(dir, 'credentials');
        mkdirSync(credentials);
        copyFileSync(key.secretKeyFile, path.join(credentials, 'secretKey'));
        const env = { ...process.env, CREDENTIALS_DIRECTORY: credentials };
        let serve: string;
        if (who === 'nixpkgs') {
          const pre = await run('sh', ['-euc', localise(c.nixpkgs.preStart, dirs)], { env, timeoutMs: 60_000 });
          assert.equal(pre.code, 0, `${name}: nixpkgs' pre-start (dbmate-ncps up): ${pre.stderr}${pre.stdout}`);
          serve = `${scriptWithConfig(c.nixpkgs.wrapperScript, c.nixpkgs.configText, dir, dirs).replace(/^#!.*\n/, '')}`;
        } else {
          if (c.ours.migrateScript) {
            const migrate = await run('bash', ['-c', localise(c.ours.migrateScript, dirs).replace(/^#!.*\n/, '')], { env, timeoutMs: 60_000 });
            assert.equal(migrate.code, 0, `${name}: ncps-migrate-narinfo: ${migrate.stderr}`);
          }
          serve = scriptWithConfig(c.ours.serveScript, c.ours.configText, dir, dirs).replace(/^#!.*\n/, '');
        }
        const child = spawn('bash', ['-c', serve, 'ncps-wrapper', ...(who === 'nixpkgs' ? ['serve'] : [])], { env, stdio: ['ignore', 'pipe', 'pipe'] });
        children.push(child);
        killOnExit(child);
        let logs = '';
        child.stdout!.on('data', (b: Buffer) => (logs += b.toString()));
        child.stderr!.on('data', (b: Buffer) => (logs += b.toString()));
        const url = `http://127.0.0.1:${dirs.port}`;
        for (let i = 0; ; i++) {
          if (child.exitCode !== null) assert.fail(`${name} (${who}): ncps exited ${child.exitCode}:\n${logs}`);
          const r = await request(url, '/healthz', { timeoutMs: 1_000 }).catch(() => undefined);
          if (r?.status === 200) break;
          if (i > 300) assert.fail(`${name} (${who}): not healthy:\n${logs}`);
          await sleep(100);
        }
        // nixpkgs' test script: `curl -f http://ncps:8501/ | grep '"hostname":"ncps"'`.
        const index = await request(url, '/');
        assert.match(index.text, /"hostname":"ncps"/);
        await substituteAndVerify(upstream.closure, { substituter: url, trustedPublicKey: key.publicKey, what: `${name} (${who})` });
        if (who === 'nixpkgs') assert.match(logs, /analytics reporting is not part of this ncps; this ncps never sends usage reports anywhere/);
        assert.doesNotMatch(logs, /"level":"(error|fatal)"/, logs);
        child.kill('SIGTERM');
        const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
        assert.equal(code, 0, `${name} (${who}): SIGTERM drains and exits 0\n${logs.slice(-2000)}`);
      }
    });
  }
});
