// The Nix side of the repository, checked without building anything (no nixpkgs, no network here):
// every .nix file parses; the npm dependency hash of the Nix package belongs to the current
// package-lock.json; flake.lock pins nixpkgs. With a copy of nixpkgs' lib in NCPS_NIXPKGS_LIB,
// the NixOS module is evaluated (nix/tests/eval-module.nix) and what it generates is checked against
// ncps itself: config keys against the option table, and the config files and migration flags
// against ncps's own configuration loader.
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load';
import { OPTIONS, optionsFor } from '../../src/config/options';

const REPO = path.resolve(__dirname, '../../..');
const SKIP_DIRS = new Set(['node_modules', '.git', 'build', 'dist', 'result']);

function run(cmd: string, args: readonly string[], input?: string): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd: REPO, encoding: 'utf8', input, timeout: 120_000, maxBuffer: 64 * 1024 * 1024 });
}

const haveNix = run('nix-instantiate', ['--version']).status === 0;
// Relative to the checkout, as .ci/run sets it (../shared/nixpkgs-lib).
const nixpkgsLib = process.env.NCPS_NIXPKGS_LIB ? path.resolve(REPO, process.env.NCPS_NIXPKGS_LIB) : '';

function nixFiles(dir: string, found: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    if (SKIP_DIRS.has(name)) continue;
    const full = path.join(dir, name);
    const stat = statSync(full);
    if (stat.isDirectory()) nixFiles(full, found);
    else if (name.endsWith('.nix')) found.push(full);
  }
  return found;
}

describe('Nix files', () => {
  it('every .nix file parses', { skip: haveNix ? false : 'nix-instantiate not installed' }, () => {
    const files = nixFiles(REPO);
    for (const expected of ['flake.nix', 'nix/module.nix', 'nix/package.nix', 'nix/tests/default.nix']) {
      assert.ok(files.includes(path.join(REPO, expected)), `${expected} is missing`);
    }
    for (const file of files) {
      const r = run('nix-instantiate', ['--parse', file]);
      assert.equal(r.status, 0, `${path.relative(REPO, file)} does not parse:\n${r.stderr}`);
    }
  });

  it('the npm dependency hash belongs to the current package-lock.json', () => {
    const r = run(process.execPath, ['nix/npm-deps.mjs', 'fingerprint', 'package-lock.json']);
    assert.equal(r.status, 0, r.stderr);
    const recorded = JSON.parse(readFileSync(path.join(REPO, 'nix/npm-deps.json'), 'utf8')) as {
      hash: string;
      lockFingerprint: string;
    };
    assert.match(recorded.hash, /^sha256-[A-Za-z0-9+/]{43}=$/);
    assert.equal(
      r.stdout.trim(),
      recorded.lockFingerprint,
      'package-lock.json changed, so the Nix build would fetch other npm tarballs than nix/npm-deps.json ' +
        'has a hash for. Run `bash nix/update-npm-deps.sh` (needs npm registry access and nix-bin) and commit nix/npm-deps.json.',
    );
  });

  it('the npm helper lists one tarball per locked package, for Linux x64 and arm64 only', () => {
    const r = run(process.execPath, ['nix/npm-deps.mjs', 'specs', 'package-lock.json']);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    const files = lines.map((line) => line.split('\t')[1]);
    assert.equal(new Set(files).size, files.length, 'duplicate tarball names');
    assert.ok(files.some((f) => f?.startsWith('better-sqlite3-')), 'better-sqlite3 must be fetched');
    const esbuildPlatforms = files.filter((f) => f?.startsWith('@esbuild+')).map((f) => f!.replace(/-[\d.]+\.tgz$/, ''));
    assert.deepEqual(esbuildPlatforms.sort(), ['@esbuild+linux-arm64', '@esbuild+linux-x64']);
    const closure = run(process.execPath, ['nix/npm-deps.mjs', 'runtime-closure', 'package-lock.json', 'better-sqlite3', '--exclude', 'prebuild-install']);
    assert.equal(closure.status, 0, closure.stderr);
    assert.ok(closure.stdout.split('\n').includes('node_modules/better-sqlite3'));
    assert.ok(!closure.stdout.includes('prebuild-install'));
  });

  it('flake.lock pins nixpkgs on the branch flake.nix follows', () => {
    const lock = JSON.parse(readFileSync(path.join(REPO, 'flake.lock'), 'utf8')) as {
      version: number;
      root: string;
      nodes: Record<string, { inputs?: Record<string, string>; locked?: Record<string, unknown>; original?: Record<string, unknown> }>;
    };
    assert.equal(lock.version, 7);
    assert.equal(lock.nodes[lock.root]?.inputs?.nixpkgs, 'nixpkgs');
    const nixpkgs = lock.nodes.nixpkgs!;
    assert.equal(nixpkgs.locked?.type, 'github');
    assert.match(String(nixpkgs.locked?.rev), /^[0-9a-f]{40}$/);
    assert.match(String(nixpkgs.locked?.narHash), /^sha256-[A-Za-z0-9+/]{43}=$/);
    const flake = readFileSync(path.join(REPO, 'flake.nix'), 'utf8');
    assert.ok(
      flake.includes(`github:${String(nixpkgs.original?.owner)}/${String(nixpkgs.original?.repo)}/${String(nixpkgs.original?.ref)}`),
      'flake.nix and flake.lock disagree on the nixpkgs input',
    );
  });
});

interface Generated {
  configText: string;
  configKeys: string[];
  serveFlags: string[];
  migrateNarinfoFlags: string[];
  fsckFlags: string[];
  migrateNarinfoArgs: string[];
  migrateUpArgs: string[];
}

interface Evaluation {
  failed: string[];
  passed: number;
  total: number;
  knownKeys: string[];
  secretKeys: string[];
  generated: Record<string, Generated>;
  refusals: Record<string, string[]>;
}

describe('NixOS module evaluated against nixpkgs lib', () => {
  const skip = !haveNix
    ? 'nix-instantiate not installed'
    : !nixpkgsLib
      ? 'set NCPS_NIXPKGS_LIB to a checkout of nixpkgs lib (see docs/nixos.md)'
      : false;
  let evaluation: Evaluation | undefined;
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'ncps-nix-'));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  const evaluate = (): Evaluation => {
    if (!evaluation) {
      const r = run('bash', ['scripts/check-nix.sh', '--json', nixpkgsLib]);
      assert.equal(r.status, 0, `scripts/check-nix.sh failed:\n${r.stderr}`);
      evaluation = JSON.parse(r.stdout) as Evaluation;
    }
    return evaluation;
  };

  const keys = new Set(OPTIONS.map((o) => o.key));
  const sensitive = new Set(OPTIONS.filter((o) => o.sensitive).map((o) => o.key));

  it('every module check holds', { skip }, () => {
    const e = evaluate();
    assert.deepEqual(e.failed, [], `failed: ${e.failed.join(', ')}`);
    assert.ok(e.total >= 40, `only ${e.total} checks`);
    assert.ok(Object.keys(e.refusals).length >= 10);
    for (const [name, messages] of Object.entries(e.refusals)) assert.equal(messages.length, 1, `${name}: ${messages.join(' / ')}`);
  });

  it('generates only config keys ncps knows, none of them secret', { skip }, () => {
    const e = evaluate();
    for (const key of e.knownKeys) assert.ok(keys.has(key), `the harness lists ${key}, which ncps no longer has`);
    for (const key of sensitive) {
      if (key === 'cache.database-url') continue; // a plain sqlite:/postgresql:///socket URL is fine
      assert.ok(e.secretKeys.includes(key), `${key} is sensitive in ncps but not checked by the harness`);
    }
    for (const [name, g] of Object.entries(e.generated)) {
      for (const key of g.configKeys) {
        assert.ok(keys.has(key), `${name}: generated key ${key} is not an ncps option`);
        assert.ok(key === 'cache.database-url' || !sensitive.has(key), `${name}: secret key ${key} in the config file`);
      }
    }
  });

  it('the generated config files and migration flags pass ncps’s configuration loader', { skip }, () => {
    const e = evaluate();
    const accept = (what: string, command: string, argv: string[]) => {
      try {
        loadConfig(command, argv, {});
      } catch (error) {
        assert.fail(`${what}: ncps ${command} rejects ${argv.join(' ')}: ${(error as Error).message}`);
      }
    };
    for (const [name, g] of Object.entries(e.generated)) {
      const file = path.join(tmp, `${name}.json`);
      writeFileSync(file, g.configText);
      accept(`${name} config file`, 'serve', [`--config=${file}`]);
      if (g.migrateNarinfoArgs.length > 0) accept(name, 'migrate-narinfo', g.migrateNarinfoArgs);
      if (g.migrateUpArgs.length > 0) accept(name, 'migrate up', g.migrateUpArgs);
      if (g.fsckFlags.length > 0) {
        // The fsck unit runs `ncps fsck --config=<the serve config> …` with these flags.
        accept(`${name} fsck`, 'fsck', [`--config=${file}`]);
        const fsckFlags = new Set(optionsFor('fsck').map((o) => o.flag));
        for (const flag of g.fsckFlags) assert.ok(fsckFlags.has(flag), `${name}: the fsck unit passes --${flag}, which ncps fsck does not take`);
      }
    }
    assert.ok(Object.values(e.generated).some((g) => g.fsckFlags.includes('repair')), 'a configuration with the fsck timer repairing');
  });
});
