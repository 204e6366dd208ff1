// The set-up most integration tests share: an upstream binary cache written by the real Nix client,
// signed, and served over HTTP for ncps to pull from; the check that the Nix client substitutes a
// closure through ncps intact; and the teardown. Kept in one place so that each test spells out
// only what it does differently.
import assert from 'node:assert/strict';
import type { NcpsProcess } from './ncps';
import {
  buildClosure,
  cleanupTempDirs,
  deleteBuiltPaths,
  generateKeyPair,
  makeBinaryCache,
  makeTempDir,
  substitute,
  verifyStorePath,
  type Closure,
  type Compression,
  type KeyPair,
  type NixClient,
  type SubstituteResult,
} from './nix';
import { startStaticCache, type StaticCache } from './static-cache';

export interface SigningOptions {
  /** Sign with this key instead of a freshly generated one. */
  key?: KeyPair;
  /** Name of the generated key; default `test-upstream-1`. */
  keyName?: string;
  /** How the NARs are compressed; default `xz`. */
  compression?: Compression;
  /** Also write `<hash>.ls` NAR listings. */
  narListing?: boolean;
}

export interface SignedBinaryCache {
  key: KeyPair;
  closure: Closure;
  /** What `nix copy --to file://…` wrote. */
  cacheDir: string;
}

async function signingKey(opts: SigningOptions): Promise<KeyPair> {
  return opts.key ?? generateKeyPair(opts.keyName ?? 'test-upstream-1', await makeTempDir('keys'));
}

/** Builds a fresh closure (see buildClosure) and copies it, signed, into a new binary cache
 * directory. Nothing serves it. */
export async function signedBinaryCache(
  opts: SigningOptions & { label: string; leafBytes?: number },
): Promise<SignedBinaryCache> {
  const key = await signingKey(opts);
  const closure = await buildClosure({ label: opts.label, leafBytes: opts.leafBytes });
  const cacheDir = await makeTempDir(`upstream-${opts.label}`);
  await makeBinaryCache(cacheDir, closure.paths, {
    secretKeyFile: key.secretKeyFile,
    compression: opts.compression ?? 'xz',
    narListing: opts.narListing,
  });
  return { key, closure, cacheDir };
}

/** A signed binary cache directory (`dir`) served over HTTP as ncps's upstream, to which more
 * closures can be added while it runs. */
export interface SignedCache extends StaticCache {
  /** Signs everything published here unless `signedBy` says otherwise. */
  key: KeyPair;
  /** Copies `closure` into the cache (compression: the cache's default unless given). */
  publish(closure: Closure, opts?: { signedBy?: KeyPair; compression?: Compression }): Promise<void>;
}

export interface ServeOptions {
  /** Throttle every response to about this rate. */
  bytesPerSecond?: number;
}

async function serve(key: KeyPair, cacheDir: string, opts: SigningOptions & ServeOptions): Promise<SignedCache> {
  const server = await startStaticCache(cacheDir, { bytesPerSecond: opts.bytesPerSecond });
  return Object.assign(server, {
    key,
    publish: (closure: Closure, p: { signedBy?: KeyPair; compression?: Compression } = {}) =>
      makeBinaryCache(cacheDir, closure.paths, {
        secretKeyFile: (p.signedBy ?? key).secretKeyFile,
        compression: p.compression ?? opts.compression ?? 'xz',
        narListing: opts.narListing,
      }),
  });
}

/** An empty signed cache, already served; fill it with publish(). */
export async function startSignedCache(opts: SigningOptions & ServeOptions & { label: string }): Promise<SignedCache> {
  const key = await signingKey(opts);
  return serve(key, await makeTempDir(`upstream-${opts.label}`), opts);
}

export interface SignedUpstream extends SignedCache {
  /** Built for this upstream and published before it started serving. */
  closure: Closure;
}

/** The usual upstream: one fresh closure in a signed binary cache, served over HTTP. */
export async function signedUpstream(
  opts: SigningOptions & ServeOptions & { label: string; leafBytes?: number },
): Promise<SignedUpstream> {
  // Build and copy first: if that fails, no server is left running.
  const { key, closure, cacheDir } = await signedBinaryCache(opts);
  return Object.assign(await serve(key, cacheDir, opts), { closure });
}

/** Stops each of `running` in the order given (skipping what never started), then deletes the store
 * paths buildClosure() made and every temp dir: the usual `after` hook. */
export async function teardown(...running: Array<{ stop(): Promise<unknown> } | undefined>): Promise<void> {
  for (const r of running) await r?.stop();
  await deleteBuiltPaths();
  await cleanupTempDirs();
}

export interface SubstituteVia {
  /** Usually ncps.url. */
  substituter: string;
  /** The only key the Nix client trusts. */
  trustedPublicKey: string;
  /** Extra `--option NAME VALUE` pairs. */
  options?: Record<string, string>;
  timeoutMs?: number;
  /** Whose log tail a failure message shows. */
  ncps?: NcpsProcess;
  /** Prefix for failure messages, where a test substitutes several closures. */
  what?: string;
  /** Which Nix client substitutes; the host's by default. */
  client?: NixClient;
}

function prefixed(what: string | undefined, message: string): string {
  return what === undefined ? message : `${what}: ${message}`;
}

/** Realises `closure.top` through `via` into a fresh chroot store with the real Nix client and
 * asserts that nix-store succeeded. */
export async function substituteClosure(closure: Closure, via: SubstituteVia): Promise<SubstituteResult> {
  const r = await substitute(closure.top, {
    substituter: via.substituter,
    trustedPublicKey: via.trustedPublicKey,
    options: via.options,
    timeoutMs: via.timeoutMs,
    ...(via.client ? { client: via.client } : {}),
  });
  const logs = via.ncps ? `\n--- ncps logs (tail)\n${via.ncps.logs().slice(-6000)}` : '';
  const who = via.client?.root ? ` (${via.client.label})` : '';
  assert.equal(r.code, 0, prefixed(via.what, `nix-store${who} exit ${r.code}\n--- nix stderr\n${r.stderr.slice(-8000)}${logs}`));
  return r;
}

/** Asserts that every path of `closure` is valid in the chroot store at `storeRoot` and still
 * matches its NAR hash. */
export async function assertClosureValid(storeRoot: string, closure: Closure, what?: string, client?: NixClient): Promise<void> {
  for (const p of closure.paths) {
    assert.equal(await verifyStorePath(storeRoot, p, client), true, prefixed(what, `${p} should be valid in the chroot store ${storeRoot}${client?.root ? ` (${client.label})` : ''}`));
  }
}

/** substituteClosure(), then assertClosureValid() on the store it filled. */
export async function substituteAndVerify(closure: Closure, via: SubstituteVia): Promise<SubstituteResult> {
  const r = await substituteClosure(closure, via);
  await assertClosureValid(r.storeRoot, closure, via.what, r.client);
  return r;
}
