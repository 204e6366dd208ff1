#!/usr/bin/env node
// Helper for building ncps with Nix from a package-lock.json whose entries carry `integrity` but no
// `resolved` URL (that is how npm writes lock files on the machines this project is developed on).
// nixpkgs' fetchNpmDeps and importNpmLock both need `resolved`, so the Nix build does this instead:
//
//   1. a fixed-output derivation runs `npm pack` for every entry listed by `specs` against npm's
//      default registry, checks every tarball against the lock's integrity (`verify`) and keeps
//      only the tarballs: the output is the registry's bytes, so its hash does not depend on the
//      npm version that fetched them;
//   2. the package build points every lock entry at its tarball (`rewrite`) and runs
//      `npm ci --offline --ignore-scripts`, then builds better-sqlite3's addon itself;
//   3. `runtime-closure` lists the installed packages the bundle needs at run time.
//
// `fingerprint` condenses what step 1 fetches into one line; nix/npm-deps.json records it next to
// the output hash so a test can tell when the hash has to be refreshed (nix/update-npm-deps.sh).
//
// Plain JavaScript with no dependencies: it runs under Nix's nodejs before anything is installed.

import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The platforms the Nix package is built for, as npm spells them. */
export const PLATFORMS = [
  { os: 'linux', cpu: 'x64', libc: 'glibc' },
  { os: 'linux', cpu: 'arm64', libc: 'glibc' },
];

function allows(list, value) {
  if (list === undefined || list === null) return true;
  const values = Array.isArray(list) ? list : [list];
  if (values.includes(`!${value}`)) return false;
  const positive = values.filter((v) => !v.startsWith('!'));
  return positive.length === 0 || positive.includes(value);
}

/** Whether npm would install this lock entry on at least one of PLATFORMS. */
export function wantedOnSomePlatform(entry) {
  return PLATFORMS.some((p) => allows(entry.os, p.os) && allows(entry.cpu, p.cpu) && allows(entry.libc, p.libc));
}

/** The package name of a lock path such as node_modules/a/node_modules/@s/b. */
export function nameFromLockPath(lockPath) {
  const index = lockPath.lastIndexOf('node_modules/');
  return lockPath.slice(index + 'node_modules/'.length);
}

/**
 * The tarballs the build needs: one per distinct name@version, with the integrity npm recorded.
 * Returns [{ spec, file, integrity, paths }], sorted by file name.
 */
export function tarballs(lock) {
  if (lock.lockfileVersion !== 2 && lock.lockfileVersion !== 3) {
    throw new Error(`unsupported lockfileVersion ${lock.lockfileVersion}; expected 2 or 3`);
  }
  const byFile = new Map();
  for (const [lockPath, entry] of Object.entries(lock.packages ?? {})) {
    if (lockPath === '' || entry.link || entry.inBundle) continue;
    if (!lockPath.includes('node_modules/')) continue; // workspace sources live in the repository
    if (!wantedOnSomePlatform(entry)) continue;
    const name = entry.name ?? nameFromLockPath(lockPath);
    if (entry.resolved && !/^https?:/.test(entry.resolved)) {
      throw new Error(`${lockPath}: resolved "${entry.resolved}" is not a registry tarball; the Nix build cannot fetch it`);
    }
    if (!entry.version || !entry.integrity) {
      throw new Error(`${lockPath}: needs "version" and "integrity" in package-lock.json (run npm install to repair the lock)`);
    }
    const spec = entry.resolved ?? `${name}@${entry.version}`;
    const file = `${name.replace(/\//g, '+')}-${entry.version}.tgz`;
    const known = byFile.get(file);
    if (known) {
      if (known.integrity !== entry.integrity) throw new Error(`${file}: two different integrity values in the lock`);
      known.paths.push(lockPath);
    } else {
      byFile.set(file, { spec, file, integrity: entry.integrity, paths: [lockPath] });
    }
  }
  return [...byFile.values()].sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
}

/**
 * Moves the tarballs `npm pack --json` wrote to packDir into outDir under the names tarballs()
 * gives them. packJson is npm's JSON report (an array with name, version and filename).
 */
export function collect(lock, packJson, packDir, outDir) {
  const wanted = new Map(tarballs(lock).map((t) => [t.file, t]));
  for (const packed of packJson) {
    const file = `${packed.name.replace(/\//g, '+')}-${packed.version}.tgz`;
    if (!wanted.has(file)) throw new Error(`npm pack produced ${packed.filename} (${packed.name}@${packed.version}), which the lock does not list`);
    renameSync(path.join(packDir, packed.filename), path.join(outDir, file));
  }
}

/** One line that changes exactly when the set of fetched tarballs changes. */
export function fingerprint(lock) {
  const hash = createHash('sha256');
  for (const t of tarballs(lock)) hash.update(`${t.file} ${t.integrity}\n`);
  return `sha256:${hash.digest('hex')}`;
}

/** Checks a tarball against an SRI integrity string (any of its hashes must match). */
function integrityMatches(data, integrity) {
  return integrity.split(/\s+/).some((sri) => {
    const dash = sri.indexOf('-');
    const algorithm = sri.slice(0, dash);
    if (!['sha512', 'sha384', 'sha256', 'sha1'].includes(algorithm)) return false;
    return createHash(algorithm).update(data).digest('base64') === sri.slice(dash + 1);
  });
}

export function verify(lock, dir) {
  const problems = [];
  for (const t of tarballs(lock)) {
    const file = path.join(dir, t.file);
    if (!existsSync(file)) problems.push(`missing ${t.file} (${t.spec})`);
    else if (!integrityMatches(readFileSync(file), t.integrity)) problems.push(`${t.file}: integrity mismatch`);
  }
  return problems;
}

/** The lock with every fetched entry resolved to file:<dir>/<tarball>. */
export function rewrite(lock, dir) {
  const files = new Map();
  for (const t of tarballs(lock)) for (const p of t.paths) files.set(p, t.file);
  const packages = {};
  for (const [lockPath, entry] of Object.entries(lock.packages)) {
    const file = files.get(lockPath);
    packages[lockPath] = file ? { ...entry, resolved: `file:${path.join(dir, file)}` } : entry;
  }
  return { ...lock, packages };
}

/**
 * The installed packages `root` needs at run time, following `dependencies` (and installed
 * optional ones) the way Node resolves them, leaving out `exclude` (install-time helpers).
 */
export function runtimeClosure(lock, root, exclude = []) {
  const packages = lock.packages ?? {};
  const resolve = (from, name) => {
    let base = from;
    for (;;) {
      const candidate = base ? `${base}/node_modules/${name}` : `node_modules/${name}`;
      if (packages[candidate]) return candidate;
      if (!base) return undefined;
      const index = base.lastIndexOf('/node_modules/');
      base = index === -1 ? '' : base.slice(0, index);
    }
  };
  const start = resolve('', root);
  if (!start) throw new Error(`${root} is not in the lock file`);
  const seen = new Set();
  const queue = [start];
  while (queue.length > 0) {
    const lockPath = queue.shift();
    if (seen.has(lockPath)) continue;
    seen.add(lockPath);
    const entry = packages[lockPath];
    const deps = { ...(entry.dependencies ?? {}), ...(entry.optionalDependencies ?? {}) };
    for (const name of Object.keys(deps)) {
      if (exclude.includes(name)) continue;
      const found = resolve(lockPath, name);
      if (found) queue.push(found);
      else if (!(name in (entry.optionalDependencies ?? {}))) throw new Error(`${lockPath}: dependency ${name} not in the lock`);
    }
  }
  return [...seen].sort();
}

function main(argv) {
  const [command, lockFile, ...rest] = argv;
  const usage =
    'usage: npm-deps.mjs specs|fingerprint LOCK | collect LOCK PACK.json PACKDIR OUTDIR | verify LOCK DIR | rewrite LOCK DIR | runtime-closure LOCK NAME [--exclude NAME]...';
  if (!command || !lockFile) {
    process.stderr.write(`${usage}\n`);
    return 2;
  }
  const lock = JSON.parse(readFileSync(lockFile, 'utf8'));
  switch (command) {
    case 'specs':
      for (const t of tarballs(lock)) process.stdout.write(`${t.spec}\t${t.file}\n`);
      return 0;
    case 'fingerprint':
      process.stdout.write(`${fingerprint(lock)}\n`);
      return 0;
    case 'verify': {
      const problems = verify(lock, rest[0]);
      for (const p of problems) process.stderr.write(`npm-deps: ${p}\n`);
      return problems.length === 0 ? 0 : 1;
    }
    case 'collect':
      collect(lock, JSON.parse(readFileSync(rest[0], 'utf8')), rest[1], rest[2]);
      return 0;
    case 'rewrite':
      process.stdout.write(`${JSON.stringify(rewrite(lock, path.resolve(rest[0])), null, 2)}\n`);
      return 0;
    case 'runtime-closure': {
      const exclude = [];
      for (let i = 1; i < rest.length; i++) if (rest[i - 1] === '--exclude') exclude.push(rest[i]);
      for (const p of runtimeClosure(lock, rest[0], exclude)) process.stdout.write(`${p}\n`);
      return 0;
    }
    default:
      process.stderr.write(`${usage}\n`);
      return 2;
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`npm-deps: ${error.message}\n`);
    process.exitCode = 1;
  }
}
