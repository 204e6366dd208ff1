// Real-Nix fixtures: build closures, make signed binary caches, substitute into chroot stores.
// Written for (and checked against) Debian's nix-bin, Nix 2.8, running as root without a daemon.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { makeTempDir, run, type RunResult } from './proc';

export { run, makeTempDir, cleanupTempDirs, removeDir, sleep } from './proc';
export type { RunOptions, RunResult } from './proc';

let available: boolean | undefined;

/** True when the Nix client tools (nix-store, nix-build, nix) can be run. */
export function nixAvailable(): boolean {
  if (available === undefined) {
    available = ['nix-store', 'nix-build', 'nix'].every((cmd) => {
      const r = spawnSync(cmd, ['--version'], { stdio: 'ignore', timeout: 20_000 });
      return r.status === 0;
    });
  }
  return available;
}

/**
 * A Nix client the tests run: the host's (Debian 12's nix-bin, Nix 2.8), or Nix 2.26 from a Debian
 * 13 root that `.ci/run` makes with debootstrap (NCPS_NIX_ROOT_2_26), run with `chroot`. It shares
 * the network, so it reaches ncps on loopback; its files live under the root.
 */
export interface NixClient {
  /** For test names and messages. */
  label: string;
  /** The directory to chroot into; undefined for the host's client. */
  root?: string;
}

export const HOST_NIX: NixClient = { label: 'Nix 2.8' };

let nix226: NixClient | string | undefined;

/** The Nix 2.26 client, or why it cannot be run here. */
export function nix226Client(): NixClient | string {
  if (nix226 === undefined) {
    const root = process.env.NCPS_NIX_ROOT_2_26;
    if (!root) nix226 = 'NCPS_NIX_ROOT_2_26 is not set (.ci/run makes a Debian 13 root with Nix 2.26 and sets it)';
    else if (!existsSync(path.join(root, 'usr', 'bin', 'nix-store'))) nix226 = `NCPS_NIX_ROOT_2_26=${root} has no usr/bin/nix-store`;
    else if (!existsSync(path.join(root, 'proc', 'self'))) nix226 = `NCPS_NIX_ROOT_2_26=${root} has no proc mounted`;
    else {
      const r = spawnSync('chroot', [root, 'nix-store', '--version'], { encoding: 'utf8', timeout: 30_000 });
      nix226 = r.status === 0 && /\b2\.26\./.test(r.stdout) ? { label: 'Nix 2.26', root } : `chroot ${root} nix-store --version: ${(r.stdout || r.stderr || r.error?.message || '').trim()}`;
    }
  }
  return nix226;
}

/** Every client a test should run with, each with its skip reason (false: runs). */
export function nixClients(): Array<{ client: NixClient; skip: string | false }> {
  const newer = nix226Client();
  return [
    { client: HOST_NIX, skip: nixAvailable() ? false : 'nix-bin not installed' },
    typeof newer === 'string' ? { client: { label: 'Nix 2.26' }, skip: newer } : { client: newer, skip: false },
  ];
}

/** A fresh directory the client can use: `inside` is its path as the client sees it. */
export async function clientTempDir(client: NixClient, prefix: string): Promise<{ inside: string; outside: string }> {
  if (!client.root) {
    const dir = await makeTempDir(prefix);
    return { inside: dir, outside: dir };
  }
  const outside = await makeTempDir(prefix, path.join(client.root, 'tmp'));
  return { inside: `/${path.relative(client.root, outside)}`, outside };
}

/** Runs one of the client's commands (`nix`, `nix-store`, …), with a private XDG_CACHE_HOME. */
export async function runNixClient(client: NixClient, cmd: string, args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<RunResult> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NIX_REMOTE;
  delete env.NIX_CONFIG;
  env.XDG_CACHE_HOME = (await clientTempDir(client, 'xdg-cache')).inside;
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return client.root ? run('chroot', [client.root, cmd, ...args], { env, timeoutMs }) : run(cmd, args, { env, timeoutMs });
}

/** Options every local build/copy needs here: no network substituters, no sandbox, no build users. */
const BUILD_OPTIONS = [
  '--option', 'substituters', '',
  '--option', 'sandbox', 'false',
  '--option', 'build-users-group', '',
];

/** An environment for one nix invocation: a private XDG_CACHE_HOME (the client caches narinfo
 * answers there) and no NIX_REMOTE (always talk to a local store directly, never a daemon). */
async function nixEnv(): Promise<NodeJS.ProcessEnv> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NIX_REMOTE;
  delete env.NIX_CONFIG;
  env.XDG_CACHE_HOME = await makeTempDir('xdg-cache');
  return env;
}

function failure(what: string, r: RunResult): Error {
  return new Error(`${what} failed (exit ${r.code}${r.signal ? `, ${r.signal}` : ''})\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
}

export interface KeyPair {
  secretKeyFile: string;
  publicKeyFile: string;
  /** `name:base64(64 bytes)` */
  secretKey: string;
  /** `name:base64(32 bytes)` */
  publicKey: string;
}

/** Generates an Ed25519 binary-cache key pair with `nix-store --generate-binary-cache-key`. */
export async function generateKeyPair(name: string, dir: string): Promise<KeyPair> {
  const base = name.replace(/[^A-Za-z0-9._-]/g, '_');
  const secretKeyFile = path.join(dir, `${base}.sec`);
  const publicKeyFile = path.join(dir, `${base}.pub`);
  const r = await run('nix-store', ['--generate-binary-cache-key', name, secretKeyFile, publicKeyFile], {
    env: await nixEnv(),
    timeoutMs: 30_000,
  });
  if (r.code !== 0) throw failure('nix-store --generate-binary-cache-key', r);
  const secretKey = (await readFile(secretKeyFile, 'utf8')).trim();
  const publicKey = (await readFile(publicKeyFile, 'utf8')).trim();
  return { secretKeyFile, publicKeyFile, secretKey, publicKey };
}

// Three derivations: leaf (random data), mid (refers to leaf), top (refers to mid and leaf, and
// carries an executable, symlinks and nested/empty files so NAR serialisation gets exercised).
// Every derivation gets the nonce, so each buildClosure() call yields brand-new store paths.
const CLOSURE_EXPR = `{ label, nonce, leafBytes }:
let
  mk = name: script: extra: derivation ({
    name = "\${label}-\${name}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
    inherit nonce;
  } // extra);
  leaf = mk "leaf" ''
    set -e
    mkdir -p $out
    printf '%s\\n' "$nonce" > $out/nonce
    head -c \${toString leafBytes} /dev/urandom > $out/data
  '' { };
  mid = mk "mid" ''
    set -e
    mkdir -p $out/share
    printf '%s\\n' "$leaf" > $out/share/leaf-path
    printf 'middle %s\\n' "$nonce" > $out/share/readme
  '' { inherit leaf; };
  top = mk "top" ''
    set -e
    mkdir -p $out/bin $out/nested/deeper
    printf '#!/bin/sh\\necho %s %s\\n' "$mid" "$leaf" > $out/bin/hello
    chmod +x $out/bin/hello
    ln -s $leaf/data $out/leaf-data
    ln -s ../../bin/hello $out/nested/deeper/hello-link
    : > $out/nested/deeper/empty
  '' { inherit leaf mid; };
in top
`;

export interface Closure {
  /** The top store path (refers to mid and leaf). */
  top: string;
  mid: string;
  leaf: string;
  /** The full closure of `top` (`nix-store -qR`), dependencies first. */
  paths: string[];
}

const builtPaths = new Set<string>();

/** Builds a fresh three-path closure in the real /nix/store. The leaf holds `leafBytes`
 * (default 64 KiB) of random, incompressible data. */
export async function buildClosure(opts: { label: string; leafBytes?: number }): Promise<Closure> {
  const leafBytes = opts.leafBytes ?? 64 * 1024;
  if (!Number.isSafeInteger(leafBytes) || leafBytes < 0) throw new Error(`bad leafBytes ${leafBytes}`);
  const label = opts.label.replace(/[^A-Za-z0-9+._?=-]/g, '-').replace(/^\.+/, '') || 'closure';
  const nonce = randomBytes(12).toString('hex');
  const dir = await makeTempDir(`closure-${label}`);
  const exprFile = path.join(dir, 'closure.nix');
  await writeFile(exprFile, CLOSURE_EXPR);

  const env = await nixEnv();
  const build = await run(
    'nix-build',
    [
      exprFile, '--no-out-link',
      '--argstr', 'label', label,
      '--argstr', 'nonce', nonce,
      '--arg', 'leafBytes', String(leafBytes),
      ...BUILD_OPTIONS,
    ],
    { env, timeoutMs: 300_000 },
  );
  if (build.code !== 0) throw failure('nix-build', build);
  const top = build.stdout.trim().split('\n').pop() ?? '';
  if (!top.startsWith('/nix/store/')) throw failure(`nix-build (unexpected output ${JSON.stringify(top)})`, build);

  const q = await run('nix-store', ['-qR', top], { env, timeoutMs: 60_000 });
  if (q.code !== 0) throw failure('nix-store -qR', q);
  const paths = q.stdout.split('\n').map((l) => l.trim()).filter(Boolean);
  const leaf = paths.find((p) => p.endsWith(`-${label}-leaf`));
  const mid = paths.find((p) => p.endsWith(`-${label}-mid`));
  if (!leaf || !mid || paths.length < 3) throw new Error(`unexpected closure of ${top}: ${paths.join(' ')}`);
  for (const p of paths) builtPaths.add(p);
  const d = await run('nix-store', ['-q', '--deriver', ...paths], { env, timeoutMs: 60_000 });
  if (d.code === 0) {
    for (const drv of d.stdout.split('\n').map((l) => l.trim())) if (drv.endsWith('.drv')) builtPaths.add(drv);
  }
  return { top, mid, leaf, paths };
}

/** Best-effort removal of everything buildClosure() put into the real store (outputs and their
 * .drv files; none of them are GC roots). */
export async function deleteBuiltPaths(): Promise<void> {
  const paths = [...builtPaths];
  builtPaths.clear();
  if (paths.length === 0) return;
  await run('nix-store', ['--delete', ...paths], { env: await nixEnv(), timeoutMs: 120_000 }).catch(() => undefined);
}

export type Compression = 'xz' | 'zstd' | 'none';

/** Writes a signed binary cache of `paths` into `dir` with `nix copy --to file://…`; with
 * `narListing`, also the `<hash>.ls` listings. */
export async function makeBinaryCache(
  dir: string,
  paths: readonly string[],
  /** Without secretKeyFile the cache is unsigned (as a private cache that never signs). */
  opts: { secretKeyFile: string | undefined; compression: Compression; narListing?: boolean },
): Promise<void> {
  const listing = opts.narListing ? '&write-nar-listing=true' : '';
  const signing = opts.secretKeyFile ? `secret-key=${opts.secretKeyFile}&` : '';
  const to = `file://${dir}?${signing}compression=${opts.compression}${listing}`;
  const r = await run(
    'nix',
    ['--extra-experimental-features', 'nix-command', 'copy', '--to', to, ...BUILD_OPTIONS, ...paths],
    { env: await nixEnv(), timeoutMs: 300_000 },
  );
  if (r.code !== 0) throw failure('nix copy', r);
}

export interface SubstituteResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Root of the chroot store the path was realised into (`--store ROOT`), as the client sees it. */
  storeRoot: string;
  /** The client that did it. */
  client: NixClient;
}

/** Realises `storePath` (and its closure) into a chroot store with the real Nix client, using
 * `substituter` as the only substituter and trusting only `trustedPublicKey`. */
export async function substitute(
  storePath: string,
  opts: {
    substituter: string;
    trustedPublicKey: string;
    storeRoot?: string;
    /** Extra `--option NAME VALUE` pairs. */
    options?: Record<string, string>;
    timeoutMs?: number;
    /** Which Nix client substitutes; the host's by default. */
    client?: NixClient;
  },
): Promise<SubstituteResult> {
  const client = opts.client ?? HOST_NIX;
  const storeRoot = opts.storeRoot ?? (await clientTempDir(client, 'chroot-store')).inside;
  const args = ['--store', storeRoot, '-r', storePath, ...clientOptions(opts)];
  const r = await runNixClient(client, 'nix-store', args, { timeoutMs: opts.timeoutMs ?? 110_000 });
  return { code: r.code, stdout: r.stdout, stderr: r.stderr, storeRoot, client };
}

/** `--option` pairs for a client that may substitute only from `substituter`, trusting only `trustedPublicKey`. */
function clientOptions(opts: { substituter: string; trustedPublicKey: string; options?: Record<string, string> }): string[] {
  const options: Record<string, string> = {
    substituters: opts.substituter,
    'trusted-public-keys': opts.trustedPublicKey,
    'require-sigs': 'true',
    // No narinfo-cache TTL options: the private XDG_CACHE_HOME already starts empty, and a
    // positive TTL of 0 makes Nix 2.8 re-GET every narinfo four or five times.
    // Fail instead of waiting five minutes on a stuck download.
    'connect-timeout': '10',
    'stalled-download-timeout': '60',
    ...opts.options,
  };
  return Object.entries(options).flatMap(([k, v]) => ['--option', k, v]);
}

/** True when `storePath` is registered as valid in the chroot store at `storeRoot` and its
 * contents still match the recorded NAR hash (`nix-store --verify-path`). */
export async function verifyStorePath(storeRoot: string, storePath: string, client: NixClient = HOST_NIX): Promise<boolean> {
  const r = await runNixClient(client, 'nix-store', ['--store', storeRoot, '--verify-path', storePath], { timeoutMs: 60_000 });
  return r.code === 0;
}

/** The 32-character hash part of a store path (`/nix/store/<hash>-name`). */
export function hashPart(storePath: string): string {
  return path.basename(storePath).slice(0, 32);
}

/** A content-addressed derivation built in the real store; its realisation is signed at build time. */
export interface CaBuild {
  /** The Nix file that defines it, for `--file`. */
  exprFile: string;
  drvPath: string;
  outPath: string;
}

const CA_FEATURES = ['--extra-experimental-features', 'nix-command ca-derivations'];

/** Builds a fresh content-addressed derivation (experimental `ca-derivations`): Nix records a
 * realisation for its output and signs it with `secretKeyFile`. */
export async function buildCaDerivation(opts: { label: string; secretKeyFile: string }): Promise<CaBuild> {
  const dir = await makeTempDir(`ca-${opts.label}`);
  const exprFile = path.join(dir, 'ca.nix');
  const nonce = randomBytes(12).toString('hex');
  await writeFile(
    exprFile,
    `derivation {
  name = "${opts.label}"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "echo ${nonce} > $out" ]; PATH = "/usr/bin:/bin";
  __contentAddressed = true; outputHashMode = "recursive"; outputHashAlgo = "sha256";
}
`,
  );
  const env = await nixEnv();
  const build = await run(
    'nix-build',
    [exprFile, '--no-out-link', ...CA_FEATURES, '--option', 'secret-key-files', opts.secretKeyFile, ...BUILD_OPTIONS],
    { env, timeoutMs: 300_000 },
  );
  if (build.code !== 0) throw failure('nix-build (content-addressed)', build);
  const outPath = build.stdout.trim().split('\n').pop() ?? '';
  const d = await run('nix-store', ['-q', '--deriver', outPath], { env, timeoutMs: 60_000 });
  const drvPath = d.stdout.trim();
  if (!outPath.startsWith('/nix/store/') || !drvPath.endsWith('.drv')) throw failure('nix-build (content-addressed)', build);
  builtPaths.add(outPath);
  builtPaths.add(drvPath);
  return { exprFile, drvPath, outPath };
}

/** `nix copy --file` of a content-addressed build: its output and its realisation. */
export async function copyCaBuild(build: CaBuild, to: string): Promise<void> {
  const r = await run('nix', [...CA_FEATURES, 'copy', '--to', to, '--file', build.exprFile, ...BUILD_OPTIONS], {
    env: await nixEnv(),
    timeoutMs: 300_000,
  });
  if (r.code !== 0) throw failure('nix copy (content-addressed)', r);
}

/** Realises a content-addressed build into a fresh chroot store with building forbidden
 * (`--max-jobs 0`): it succeeds only when the substituter serves its realisation and output. */
export async function substituteCaBuild(
  build: CaBuild,
  opts: { substituter: string; trustedPublicKey: string },
): Promise<SubstituteResult> {
  const storeRoot = await makeTempDir('chroot-store-ca');
  const args = [...CA_FEATURES, 'build', '--store', storeRoot, '--file', build.exprFile, '--no-link', '--max-jobs', '0', ...clientOptions(opts)];
  const r = await run('nix', args, { env: await nixEnv(), timeoutMs: 110_000 });
  return { code: r.code, stdout: r.stdout, stderr: r.stderr, storeRoot, client: HOST_NIX };
}
