// Operations on the cache beyond pull-through reads: uploads with the real `nix copy`, deletes,
// read and write tokens (also through the Nix client's netrc), pins, the negative cache and the
// Prometheus metrics.
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startSignedCache, substituteAndVerify, teardown, type SignedCache } from '../helpers/fixture';
import { request, type HttpResponse } from '../helpers/http';
import { hasValidSignature, narUrlPath, normaliseHash, parseNarinfo, sha256Nix32, type Narinfo } from '../helpers/narinfo';
import { freePort, startNcps, type NcpsProcess } from '../helpers/ncps';
import {
  buildClosure,
  generateKeyPair,
  hashPart,
  makeBinaryCache,
  makeTempDir,
  clientTempDir,
  nix226Client,
  nixAvailable,
  run,
  runNixClient,
  sleep,
  substitute,
  verifyStorePath,
  type Closure,
  type KeyPair,
  type NixClient,
  type RunResult,
} from '../helpers/nix';

const skip = nixAvailable() ? false : 'nix-bin not installed';
const TIMEOUT = 180_000;
const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz';
const READ_TOKEN = 'read-token-Zq8w';
const WRITE_TOKEN = 'write-token-Pk3v';

// ---------------------------------------------------------------------------------------------
// Small helpers

function randomNix32(length: number): string {
  let s = '';
  for (let i = 0; i < length; i++) s += NIX32[randomInt(NIX32.length)];
  return s;
}

function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

function basic(user: string, password: string): Record<string, string> {
  return { authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` };
}

/** A URL on loopback where nothing listens. */
async function deadUpstream(): Promise<string> {
  return `http://127.0.0.1:${await freePort()}`;
}

/** Where ncps keeps a NAR file: DATADIR/store/nar/<h0>/<h0h1>/<name>. */
function storedNarPath(dataDir: string, name: string): string {
  return path.join(dataDir, 'store', 'nar', name.slice(0, 1), name.slice(0, 2), name);
}

async function fileExists(file: string): Promise<boolean> {
  try {
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}

/** Files under `dir` (recursively) whose base name contains `needle`. */
async function filesContaining(dir: string, needle: string): Promise<string[]> {
  const files: string[] = await readdir(dir, { recursive: true, encoding: 'utf8' });
  return files.filter((f) => path.basename(f).includes(needle));
}

function narNameOf(ni: Narinfo): string {
  return ni.url.replace(/^nar\//, '');
}

function tail(ncps: NcpsProcess | undefined, n = 5000): string {
  return ncps ? `\n--- ncps logs (tail)\n${ncps.logs().slice(-n)}` : '';
}

function describeResponse(what: string, r: HttpResponse, ncps?: NcpsProcess): string {
  return `${what} answered ${r.status}: ${r.text.slice(0, 300)}${tail(ncps, 3000)}`;
}

function nixDiag(r: RunResult, ncps?: NcpsProcess): string {
  return `exit ${r.code}\n--- nix stderr\n${r.stderr.slice(-4000)}${tail(ncps)}`;
}

/** `nix copy --to TO PATHS…` with the real Nix client (private XDG cache, no daemon, no substituters). */
async function nixCopy(to: string, paths: readonly string[], opts: { netrcFile?: string } = {}): Promise<RunResult> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NIX_REMOTE;
  delete env.NIX_CONFIG;
  env.XDG_CACHE_HOME = await makeTempDir('xdg-cache-copy');
  const args = ['--extra-experimental-features', 'nix-command', 'copy', '--to', to, '--option', 'substituters', ''];
  if (opts.netrcFile) args.push('--option', 'netrc-file', opts.netrcFile);
  args.push(...paths);
  return run('nix', args, { env, timeoutMs: 150_000 });
}

interface PublishedPath {
  hash: string;
  text: string;
  ni: Narinfo;
  narName: string;
  narBytes: Buffer;
}

/** A store path as `nix copy --to file://DIR` wrote it: narinfo text and NAR bytes. */
async function publishedPath(dir: string, storePath: string): Promise<PublishedPath> {
  const hash = hashPart(storePath);
  const text = await readFile(path.join(dir, `${hash}.narinfo`), 'utf8');
  const ni = parseNarinfo(text);
  const narName = narNameOf(ni);
  const narBytes = await readFile(path.join(dir, 'nar', narName));
  return { hash, text, ni, narName, narBytes };
}

/** Replaces (or, with undefined, removes) `Key: value` lines of a narinfo text. */
function editNarinfo(text: string, edits: Record<string, string | undefined>): string {
  const lines = text.split('\n').filter((l) => l !== '');
  const out: string[] = [];
  for (const line of lines) {
    const key = line.slice(0, line.indexOf(':'));
    if (key in edits) {
      const v = edits[key];
      if (v !== undefined) out.push(`${key}: ${v}`);
    } else {
      out.push(line);
    }
  }
  return `${out.join('\n')}\n`;
}

function putNar(ncps: NcpsProcess, name: string, body: Buffer, headers: Record<string, string> = {}): Promise<HttpResponse> {
  return request(ncps.url, `/upload/nar/${name}`, {
    method: 'PUT',
    body,
    headers: { 'content-type': 'application/x-nix-nar', ...headers },
    timeoutMs: 60_000,
  });
}

function putNarinfo(ncps: NcpsProcess, hash: string, text: string, headers: Record<string, string> = {}): Promise<HttpResponse> {
  return request(ncps.url, `/upload/${hash}.narinfo`, {
    method: 'PUT',
    body: text,
    headers: { 'content-type': 'text/x-nix-narinfo', ...headers },
    timeoutMs: 60_000,
  });
}

/** Sums every sample of `name` whose labels include `labels`; undefined when there is none. */
function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  let total: number | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map<string, string>();
    for (const pair of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have.set(pair[1]!, pair[2]!);
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) total = (total ?? 0) + Number(m[4]);
  }
  return total;
}

// ---------------------------------------------------------------------------------------------

describe('operations', { skip }, () => {
  let keyDir: string;
  let upstreamKey: KeyPair; // signs the static upstream's narinfos
  let uploadKey: KeyPair; // trusted for uploads
  let otherKey: KeyPair; // not trusted for anything
  let unusedKey: KeyPair; // configured as the upstream key of ncps instances whose upstream is dead

  // Closures that exist only locally (uploaded with nix copy).
  let copied: Closure;
  let copiedByNewerNix: Closure; // uploaded by Nix 2.26
  let signedCopy: Closure;
  let unsignedCopy: Closure;
  let deletable: Closure;
  let nixCopyWithToken: Closure;
  let bothTokensCopy: Closure;
  let zstdCopy: Closure;
  let noneCopy: Closure;
  // Closures written to local file:// caches, whose files the tests PUT by hand.
  let manual: Closure;
  let manualDir: string; // signed by uploadKey, xz
  let manualZstdDir: string; // the same closure, signed by uploadKey, zstd
  let inFlight: Closure; // big leaf, for a delete while its NAR is being fetched
  let foreign: Closure;
  let foreignDir: string; // signed by otherKey, xz
  // Closures served by the static upstream.
  let pub: Closure;
  let authC: Closure;
  let pinC: Closure;
  let metC: Closure;
  let lateC: Closure; // published upstream only during the negative-cache test
  let upstream: SignedCache;

  const started: NcpsProcess[] = [];
  /** ncps in front of the static upstream, or (with `upstreamUrl`) of an upstream it does not trust. */
  async function ncpsWith(opts: { extraArgs?: string[]; upstreamUrl?: string }): Promise<NcpsProcess> {
    const n = await startNcps({
      upstreams: [opts.upstreamUrl ?? upstream.url],
      publicKeys: [opts.upstreamUrl ? unusedKey.publicKey : upstreamKey.publicKey],
      extraArgs: opts.extraArgs ?? [],
    });
    started.push(n);
    return n;
  }

  before(
    async () => {
      keyDir = await makeTempDir('keys');
      upstreamKey = await generateKeyPair('test-upstream-1', keyDir);
      uploadKey = await generateKeyPair('upload-key-1', keyDir);
      otherKey = await generateKeyPair('other-key-1', keyDir);
      unusedKey = await generateKeyPair('unused-upstream-1', keyDir);

      copied = await buildClosure({ label: 'ops-copied' });
      copiedByNewerNix = await buildClosure({ label: 'ops-copied-226' });
      signedCopy = await buildClosure({ label: 'ops-signed' });
      unsignedCopy = await buildClosure({ label: 'ops-unsigned' });
      deletable = await buildClosure({ label: 'ops-delete' });
      nixCopyWithToken = await buildClosure({ label: 'ops-copy-token' });
      bothTokensCopy = await buildClosure({ label: 'ops-copy-both-tokens' });
      zstdCopy = await buildClosure({ label: 'ops-copy-zstd' });
      noneCopy = await buildClosure({ label: 'ops-copy-none' });

      manual = await buildClosure({ label: 'ops-manual' });
      manualDir = await makeTempDir('manual-cache');
      await makeBinaryCache(manualDir, manual.paths, { secretKeyFile: uploadKey.secretKeyFile, compression: 'xz' });
      manualZstdDir = await makeTempDir('manual-cache-zstd');
      await makeBinaryCache(manualZstdDir, manual.paths, { secretKeyFile: uploadKey.secretKeyFile, compression: 'zstd' });
      inFlight = await buildClosure({ label: 'ops-in-flight', leafBytes: 8 * 1024 * 1024 });
      foreign = await buildClosure({ label: 'ops-foreign' });
      foreignDir = await makeTempDir('foreign-cache');
      await makeBinaryCache(foreignDir, foreign.paths, { secretKeyFile: otherKey.secretKeyFile, compression: 'xz' });

      pub = await buildClosure({ label: 'ops-pub' });
      authC = await buildClosure({ label: 'ops-auth' });
      pinC = await buildClosure({ label: 'ops-pin' });
      metC = await buildClosure({ label: 'ops-metrics', leafBytes: 256 * 1024 });
      lateC = await buildClosure({ label: 'ops-late' });
      upstream = await startSignedCache({ label: 'ops', key: upstreamKey });
      for (const c of [pub, authC, pinC, metC]) await upstream.publish(c);
    },
    { timeout: 600_000 },
  );

  after(() => teardown(...started, upstream), { timeout: TIMEOUT });

  // -------------------------------------------------------------------------------------------
  describe('uploads', () => {
    let plain: NcpsProcess; // no write flags at all
    let put: NcpsProcess; // --cache-allow-put-verb, dead upstream

    before(
      async () => {
        plain = await ncpsWith({ upstreamUrl: await deadUpstream() });
        put = await ncpsWith({ upstreamUrl: await deadUpstream(), extraArgs: ['--cache-allow-put-verb'] });
      },
      { timeout: TIMEOUT },
    );

    it('refuses PUT with 405 without --cache-allow-put-verb', { timeout: TIMEOUT }, async () => {
      const leaf = await publishedPath(manualDir, manual.leaf);
      const nar = await putNar(plain, leaf.narName, leaf.narBytes);
      assert.equal(nar.status, 405, describeResponse('PUT NAR', nar, plain));
      const ni = await putNarinfo(plain, leaf.hash, leaf.text);
      assert.equal(ni.status, 405, describeResponse('PUT narinfo', ni, plain));
      assert.equal((await request(plain.url, `/upload/nar/${leaf.narName}`)).status, 404);
      assert.equal((await request(plain.url, `/${leaf.hash}.narinfo`)).status, 404);
      assert.deepEqual(await filesContaining(plain.dataDir, leaf.narName.slice(0, 52)), [], 'nothing may be stored');

      const copy = await nixCopy(`${plain.url}/upload`, [copied.top]);
      assert.notEqual(copy.code, 0, 'nix copy must fail against a cache that refuses uploads');
    });

    it('accepts `nix copy --to …/upload`, and the Nix client then substitutes the closure from ncps alone', { timeout: TIMEOUT }, async () => {
      const copy = await nixCopy(`${put.url}/upload`, [copied.top]);
      assert.equal(copy.code, 0, nixDiag(copy, put));

      const ncpsKey = await put.publicKey();
      for (const p of copied.paths) {
        for (const prefix of ['', '/upload']) {
          const r = await request(put.url, `${prefix}/${hashPart(p)}.narinfo`);
          assert.equal(r.status, 200, describeResponse(`GET ${prefix}/${hashPart(p)}.narinfo`, r, put));
          const ni = parseNarinfo(r.text);
          assert.equal(ni.storePath, p);
          assert.ok(hasValidSignature(ni, ncpsKey), `uploaded narinfo must carry a valid ncps signature:\n${r.text}`);
          const nar = await request(put.url, narUrlPath(ni.url), { method: 'HEAD' });
          assert.equal(nar.status, 200, `HEAD ${ni.url}`);
          assert.equal(await fileExists(storedNarPath(put.dataDir, narNameOf(ni))), true, `${ni.url} should be in storage`);
        }
      }

      // The upstream does not exist: everything must come from what was uploaded.
      await substituteAndVerify(copied, { substituter: put.url, trustedPublicKey: ncpsKey, ncps: put });
    });

    const newer = nix226Client();
    it('accepts `nix copy --to …/upload` from Nix 2.26 too, and Nix 2.26 substitutes the closure from ncps alone', { timeout: TIMEOUT, skip: typeof newer === 'string' ? newer : false }, async () => {
      const client = newer as NixClient;
      // The closure reaches Nix 2.26 as a binary cache in its own root, written by the host's Nix.
      const source = await clientTempDir(client, 'copy-source');
      await makeBinaryCache(source.outside, copiedByNewerNix.paths, { secretKeyFile: uploadKey.secretKeyFile, compression: 'zstd' });
      const copy = await runNixClient(
        client,
        'nix',
        ['--extra-experimental-features', 'nix-command', 'copy', '--no-check-sigs', '--from', `file://${source.inside}`, '--to', `${put.url}/upload`, '--option', 'substituters', '', copiedByNewerNix.top],
        { timeoutMs: 150_000 },
      );
      assert.equal(copy.code, 0, nixDiag(copy, put));
      const ncpsKey = await put.publicKey();
      for (const p of copiedByNewerNix.paths) {
        const r = await request(put.url, `/upload/${hashPart(p)}.narinfo`);
        assert.equal(r.status, 200, describeResponse(`GET /upload/${hashPart(p)}.narinfo`, r, put));
        assert.ok(hasValidSignature(parseNarinfo(r.text), ncpsKey), `uploaded narinfo must carry a valid ncps signature:\n${r.text}`);
      }
      await substituteAndVerify(copiedByNewerNix, { substituter: put.url, trustedPublicKey: ncpsKey, ncps: put, client });
    });

    it('accepts nix copy with compression zstd and none as well', { timeout: TIMEOUT }, async () => {
      const ncpsKey = await put.publicKey();
      for (const [compression, c, ext] of [['zstd', zstdCopy, '.nar.zst'], ['none', noneCopy, '.nar']] as const) {
        const copy = await nixCopy(`${put.url}/upload?compression=${compression}`, [c.top]);
        assert.equal(copy.code, 0, `${compression}: ${nixDiag(copy, put)}`);
        for (const p of c.paths) {
          const r = await request(put.url, `/${hashPart(p)}.narinfo`);
          assert.equal(r.status, 200, describeResponse(`${compression}: GET narinfo of ${p}`, r, put));
          const ni = parseNarinfo(r.text);
          assert.equal(ni.compression, compression);
          assert.ok(ni.url.endsWith(ext), `${compression}: URL ${ni.url}`);
        }
        await substituteAndVerify(c, { substituter: put.url, trustedPublicKey: ncpsKey, ncps: put, what: compression });
      }
    });

    it('never asks the upstream for GET/HEAD under /upload', { timeout: TIMEOUT }, async () => {
      const n = await ncpsWith({ extraArgs: ['--cache-allow-put-verb'] });
      const leaf = await publishedPath(upstream.dir, pub.leaf);
      const np = `/${leaf.hash}.narinfo`;
      const narPath = `/nar/${leaf.narName}`;
      assert.equal((await request(upstream.url, np)).status, 200, 'the upstream has the path');
      const before = upstream.count('GET', np) + upstream.count('HEAD', np);
      const narBefore = upstream.count('GET', narPath) + upstream.count('HEAD', narPath);

      const g = await request(n.url, `/upload${np}`, { timeoutMs: 20_000 });
      assert.equal(g.status, 404, describeResponse(`GET /upload${np}`, g, n));
      const h = await request(n.url, `/upload${np}`, { method: 'HEAD', timeoutMs: 20_000 });
      assert.equal(h.status, 404, `HEAD /upload${np}: ${h.status}`);
      const gn = await request(n.url, `/upload${narPath}`, { timeoutMs: 20_000 });
      assert.equal(gn.status, 404, describeResponse(`GET /upload${narPath}`, gn, n));
      await sleep(300);
      assert.equal(upstream.count('GET', np) + upstream.count('HEAD', np), before, 'ncps asked the upstream for an /upload narinfo');
      assert.equal(upstream.count('GET', narPath) + upstream.count('HEAD', narPath), narBefore, 'ncps asked the upstream for an /upload NAR');

      // The root route does pull it; afterwards /upload serves what is stored.
      const root = await request(n.url, np, { timeoutMs: 20_000 });
      assert.equal(root.status, 200, describeResponse(`GET ${np}`, root, n));
      assert.ok(upstream.count('GET', np) + upstream.count('HEAD', np) > before, 'the root route should have asked the upstream');
      const again = await request(n.url, `/upload${np}`);
      assert.equal(again.status, 200, 'a stored narinfo is visible under /upload too');
    });

    it('refuses a NAR whose bytes do not hash to its file name (400) and stores nothing', { timeout: TIMEOUT }, async () => {
      const leaf = await publishedPath(manualDir, manual.leaf);
      const corrupt = Buffer.from(leaf.narBytes);
      const i = Math.floor(corrupt.length / 2);
      corrupt[i] = (corrupt[i] ?? 0) ^ 0xff;
      const r = await putNar(put, leaf.narName, corrupt);
      assert.equal(r.status, 400, describeResponse('PUT corrupted NAR', r, put));
      assert.equal((await request(put.url, `/upload/nar/${leaf.narName}`)).status, 404);
      assert.equal((await request(put.url, `/nar/${leaf.narName}`, { method: 'HEAD' })).status, 404);
      assert.equal(await fileExists(storedNarPath(put.dataDir, leaf.narName)), false);
      assert.deepEqual(await filesContaining(put.dataDir, leaf.narName.slice(0, 52)), [], 'no stored or temp file may remain');

      // Arbitrary bytes under a made-up name, too.
      const junk = randomBytes(4096);
      const name = `${randomNix32(52)}.nar`;
      const j = await putNar(put, name, junk);
      assert.equal(j.status, 400, describeResponse('PUT junk NAR', j, put));
      assert.equal(await fileExists(storedNarPath(put.dataDir, name)), false);
    });

    it('refuses a narinfo whose NAR was not uploaded (400)', { timeout: TIMEOUT }, async () => {
      const mid = await publishedPath(manualDir, manual.mid);
      const r = await putNarinfo(put, mid.hash, mid.text);
      assert.equal(r.status, 400, describeResponse('PUT narinfo before its NAR', r, put));
      assert.equal((await request(put.url, `/upload/${mid.hash}.narinfo`)).status, 404);
      assert.equal((await request(put.url, `/${mid.hash}.narinfo`)).status, 404);
    });

    it('refuses a narinfo whose FileHash or FileSize do not match the uploaded NAR (400), accepts the matching one', { timeout: TIMEOUT }, async () => {
      const leaf = await publishedPath(manualDir, manual.leaf);
      const nar = await putNar(put, leaf.narName, leaf.narBytes);
      assert.ok(nar.status === 204 || nar.status === 200, describeResponse('PUT NAR', nar, put));
      const stored = await readFile(storedNarPath(put.dataDir, leaf.narName));
      assert.ok(stored.equals(leaf.narBytes), 'the stored NAR must equal the uploaded bytes');
      assert.equal(leaf.ni.fileSize, leaf.narBytes.length);

      const badSize = editNarinfo(leaf.text, { FileSize: String(leaf.narBytes.length + 1) });
      const r1 = await putNarinfo(put, leaf.hash, badSize);
      assert.equal(r1.status, 400, describeResponse('PUT narinfo with a wrong FileSize', r1, put));

      const badHash = editNarinfo(leaf.text, { FileHash: sha256Nix32(randomBytes(64)) });
      const r2 = await putNarinfo(put, leaf.hash, badHash);
      assert.equal(r2.status, 400, describeResponse('PUT narinfo with a wrong FileHash', r2, put));

      // URL and FileHash of another uploaded NAR (consistent with each other) but this NAR's size.
      const other = await publishedPath(manualDir, manual.top);
      const o = await putNar(put, other.narName, other.narBytes);
      assert.ok(o.status === 204 || o.status === 200, describeResponse('PUT other NAR', o, put));
      const swapped = editNarinfo(leaf.text, { URL: other.ni.url, FileHash: other.ni.fileHash });
      const r3 = await putNarinfo(put, leaf.hash, swapped);
      assert.equal(r3.status, 400, describeResponse('PUT narinfo pointing at a NAR of another size', r3, put));

      assert.equal((await request(put.url, `/upload/${leaf.hash}.narinfo`)).status, 404, 'no rejected narinfo may be stored');

      const ok = await putNarinfo(put, leaf.hash, leaf.text);
      assert.equal(ok.status, 204, describeResponse('PUT the genuine narinfo', ok, put));
      const g = await request(put.url, `/${leaf.hash}.narinfo`);
      assert.equal(g.status, 200);
      const served = parseNarinfo(g.text);
      assert.equal(normaliseHash(served.narHash), normaliseHash(leaf.ni.narHash));
      assert.equal(served.url, leaf.ni.url);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('trusted upload signatures', () => {
    it('accepts nix copy signed by the trusted key and refuses unsigned or otherwise signed narinfos with 403', { timeout: TIMEOUT }, async () => {
      const n = await ncpsWith({
        upstreamUrl: await deadUpstream(),
        extraArgs: ['--cache-allow-put-verb', '--cache-require-trusted-signature', `--cache-trusted-upload-key=${uploadKey.publicKey}`],
      });
      const ncpsKey = await n.publicKey();

      const copy = await nixCopy(`${n.url}/upload?secret-key=${uploadKey.secretKeyFile}`, [signedCopy.top]);
      assert.equal(copy.code, 0, nixDiag(copy, n));
      for (const p of signedCopy.paths) {
        const r = await request(n.url, `/${hashPart(p)}.narinfo`);
        assert.equal(r.status, 200, describeResponse(`GET narinfo of ${p}`, r, n));
        const ni = parseNarinfo(r.text);
        assert.ok(hasValidSignature(ni, uploadKey.publicKey), `the uploader's signature should be kept:\n${r.text}`);
        assert.ok(hasValidSignature(ni, ncpsKey), `ncps should add its own signature:\n${r.text}`);
      }

      // Signed by a key that is not trusted; the NAR itself is uploaded first so the signature
      // is the only thing wrong.
      const leaf = await publishedPath(foreignDir, foreign.leaf);
      const nar = await putNar(n, leaf.narName, leaf.narBytes);
      assert.ok(nar.status === 204 || nar.status === 200, describeResponse('PUT NAR', nar, n));
      const wrongKey = await putNarinfo(n, leaf.hash, leaf.text);
      assert.equal(wrongKey.status, 403, describeResponse('PUT narinfo signed by an untrusted key', wrongKey, n));
      const unsigned = await putNarinfo(n, leaf.hash, editNarinfo(leaf.text, { Sig: undefined }));
      assert.equal(unsigned.status, 403, describeResponse('PUT unsigned narinfo', unsigned, n));
      const forgedText = leaf.text.replace(/^Sig: other-key-1:/m, 'Sig: upload-key-1:');
      assert.notEqual(forgedText, leaf.text);
      const forged = await putNarinfo(n, leaf.hash, forgedText);
      assert.equal(forged.status, 403, describeResponse('PUT narinfo with a forged signature under the trusted name', forged, n));
      assert.equal((await request(n.url, `/${leaf.hash}.narinfo`)).status, 404);

      // The real client uploading without signing fails, and nothing of it is served.
      const plainCopy = await nixCopy(`${n.url}/upload`, [unsignedCopy.top]);
      assert.notEqual(plainCopy.code, 0, 'an unsigned nix copy must be refused');
      for (const p of unsignedCopy.paths) assert.equal((await request(n.url, `/${hashPart(p)}.narinfo`)).status, 404, p);
    });

    it('with --cache-require-trusted-signature but no trusted key, refuses every narinfo upload', { timeout: TIMEOUT }, async () => {
      const n = await ncpsWith({
        upstreamUrl: await deadUpstream(),
        extraArgs: ['--cache-allow-put-verb', '--cache-require-trusted-signature'],
      });
      const leaf = await publishedPath(manualDir, manual.leaf); // signed by uploadKey
      await putNar(n, leaf.narName, leaf.narBytes);
      const r = await putNarinfo(n, leaf.hash, leaf.text);
      assert.equal(r.status, 403, describeResponse('PUT signed narinfo with no trusted key configured', r, n));
      const u = await putNarinfo(n, leaf.hash, editNarinfo(leaf.text, { Sig: undefined }));
      assert.equal(u.status, 403, describeResponse('PUT unsigned narinfo with no trusted key configured', u, n));
      assert.equal((await request(n.url, `/${leaf.hash}.narinfo`)).status, 404);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('deletes', () => {
    let del: NcpsProcess;
    let delKey: string;

    before(
      async () => {
        del = await ncpsWith({ upstreamUrl: await deadUpstream(), extraArgs: ['--cache-allow-put-verb', '--cache-allow-delete-verb'] });
        delKey = await del.publicKey();
        const copy = await nixCopy(`${del.url}/upload`, [deletable.top]);
        assert.equal(copy.code, 0, nixDiag(copy, del));
      },
      { timeout: TIMEOUT },
    );

    async function served(storePath: string): Promise<Narinfo> {
      const r = await request(del.url, `/${hashPart(storePath)}.narinfo`);
      assert.equal(r.status, 200, describeResponse(`GET narinfo of ${storePath}`, r, del));
      return parseNarinfo(r.text);
    }

    it('refuses DELETE with 405 without --cache-allow-delete-verb', { timeout: TIMEOUT }, async () => {
      const n = await ncpsWith({ upstreamUrl: await deadUpstream(), extraArgs: ['--cache-allow-put-verb'] });
      const copy = await nixCopy(`${n.url}/upload`, [deletable.leaf]);
      assert.equal(copy.code, 0, nixDiag(copy, n));
      const r = await request(n.url, `/${hashPart(deletable.leaf)}.narinfo`);
      assert.equal(r.status, 200);
      const name = narNameOf(parseNarinfo(r.text));
      const d1 = await request(n.url, `/${hashPart(deletable.leaf)}.narinfo`, { method: 'DELETE' });
      assert.equal(d1.status, 405, describeResponse('DELETE narinfo', d1, n));
      const d2 = await request(n.url, `/nar/${name}`, { method: 'DELETE' });
      assert.equal(d2.status, 405, describeResponse('DELETE NAR', d2, n));
      assert.equal((await request(n.url, `/${hashPart(deletable.leaf)}.narinfo`)).status, 200, 'still served');
      assert.equal((await request(n.url, `/nar/${name}`, { method: 'HEAD' })).status, 200, 'NAR still served');
      assert.equal(await fileExists(storedNarPath(n.dataDir, name)), true);
    });

    it('DELETE /<hash>.narinfo answers 204, then the narinfo is 404 and its NAR file is gone', { timeout: TIMEOUT }, async () => {
      const ni = await served(deletable.top);
      const name = narNameOf(ni);
      const file = storedNarPath(del.dataDir, name);
      assert.equal(await fileExists(file), true, `${file} should exist before the delete`);

      const d = await request(del.url, `/${hashPart(deletable.top)}.narinfo`, { method: 'DELETE' });
      assert.equal(d.status, 204, describeResponse('DELETE narinfo', d, del));
      assert.equal((await request(del.url, `/${hashPart(deletable.top)}.narinfo`)).status, 404);
      assert.equal((await request(del.url, `/${hashPart(deletable.top)}.narinfo`, { method: 'HEAD' })).status, 404);
      assert.equal((await request(del.url, `/upload/${hashPart(deletable.top)}.narinfo`)).status, 404);
      assert.equal(await fileExists(file), false, `${file} is referenced by no narinfo any more and must be deleted`);
      assert.equal((await request(del.url, `/nar/${name}`)).status, 404);

      // The rest of the closure is untouched.
      for (const p of [deletable.mid, deletable.leaf]) {
        const other = await served(p);
        assert.ok(hasValidSignature(other, delKey));
        assert.equal((await request(del.url, narUrlPath(other.url), { method: 'HEAD' })).status, 200);
      }
    });

    it('DELETE /nar/<name> answers 204 and removes the narinfo that points at it too', { timeout: TIMEOUT }, async () => {
      const ni = await served(deletable.mid);
      const name = narNameOf(ni);
      const file = storedNarPath(del.dataDir, name);
      assert.equal(await fileExists(file), true);

      const d = await request(del.url, `/nar/${name}`, { method: 'DELETE' });
      assert.equal(d.status, 204, describeResponse('DELETE NAR', d, del));
      assert.equal(await fileExists(file), false, `${file} must be deleted`);
      assert.equal((await request(del.url, `/nar/${name}`)).status, 404);
      const g = await request(del.url, `/${hashPart(deletable.mid)}.narinfo`);
      assert.equal(g.status, 404, describeResponse('GET the narinfo of a deleted NAR (must not dangle)', g, del));
      assert.equal((await request(del.url, `/${hashPart(deletable.mid)}.narinfo`, { method: 'HEAD' })).status, 404);
      // The leaf stays.
      await served(deletable.leaf);
    });

    it('leaves no NAR behind when a narinfo replaced by a new upload is deleted', { timeout: TIMEOUT }, async () => {
      const n = await ncpsWith({ upstreamUrl: await deadUpstream(), extraArgs: ['--cache-allow-put-verb', '--cache-allow-delete-verb', '--prometheus-enabled'] });
      const xz = await publishedPath(manualDir, manual.leaf);
      const zst = await publishedPath(manualZstdDir, manual.leaf);
      assert.notEqual(xz.narName, zst.narName);
      for (const v of [xz, zst]) {
        const nar = await putNar(n, v.narName, v.narBytes);
        assert.equal(nar.status, 204, describeResponse(`PUT ${v.narName}`, nar, n));
        const ni = await putNarinfo(n, v.hash, v.text);
        assert.equal(ni.status, 204, describeResponse(`PUT narinfo pointing at ${v.narName}`, ni, n));
      }
      const served = parseNarinfo((await request(n.url, `/${xz.hash}.narinfo`)).text);
      assert.equal(served.url, zst.ni.url, 'the later upload replaces the narinfo');

      const d = await request(n.url, `/${xz.hash}.narinfo`, { method: 'DELETE' });
      assert.equal(d.status, 204, describeResponse('DELETE narinfo', d, n));
      assert.equal((await request(n.url, `/${xz.hash}.narinfo`)).status, 404);
      const left = (await readdir(path.join(n.dataDir, 'store', 'nar'), { recursive: true, encoding: 'utf8' })).filter((f) => f.includes('.nar'));
      const metrics = (await request(n.url, '/metrics')).text;
      assert.deepEqual(
        left,
        [],
        `no narinfo references these NARs any more, so none may stay on disk (ncps_store_total_size_bytes ${metricValue(metrics, 'ncps_store_total_size_bytes')}, ncps_nar_file_count ${metricValue(metrics, 'ncps_nar_file_count')})`,
      );
      assert.equal((await request(n.url, `/nar/${xz.narName}`)).status, 404, 'the replaced NAR must not be served any more');
      assert.equal(metricValue(metrics, 'ncps_store_total_size_bytes'), 0, 'the store is empty again');
    });

    it('leaves no NAR behind when a narinfo is deleted while its NAR is being fetched from upstream', { timeout: TIMEOUT }, async () => {
      const slow = await startSignedCache({ label: 'in-flight', key: upstreamKey, compression: 'none', bytesPerSecond: 4_000_000 });
      try {
        await slow.publish(inFlight);
        const m = await startNcps({ upstreams: [slow.url], publicKeys: [upstreamKey.publicKey], extraArgs: ['--cache-allow-delete-verb'] });
        started.push(m);
        const hash = hashPart(inFlight.leaf);
        const r = await request(m.url, `/${hash}.narinfo`, { timeoutMs: 20_000 });
        assert.equal(r.status, 200, describeResponse('GET narinfo', r, m));
        const name = narNameOf(parseNarinfo(r.text));
        const tmp = path.join(m.dataDir, 'store', 'tmp');
        const partials = async (): Promise<string[]> => (await readdir(tmp)).filter((f) => f.startsWith(name));

        // The narinfo answer starts a background fetch of the NAR; delete while it runs.
        let deadline = Date.now() + 20_000;
        while ((await partials()).length === 0) {
          assert.ok(Date.now() < deadline, `no download of ${name} started${tail(m)}`);
          await sleep(20);
        }
        const d = await request(m.url, `/${hash}.narinfo`, { method: 'DELETE' });
        assert.equal(d.status, 204, describeResponse('DELETE narinfo during the NAR download', d, m));
        assert.ok((await partials()).length > 0, 'the download should still be running (test premise)');

        deadline = Date.now() + 60_000;
        while ((await partials()).length > 0) {
          assert.ok(Date.now() < deadline, `the download of ${name} did not end${tail(m)}`);
          await sleep(100);
        }
        await sleep(500);
        assert.equal(
          await fileExists(storedNarPath(m.dataDir, name)),
          false,
          `the NAR of a deleted narinfo was stored when its download finished; it is referenced by nothing${tail(m, 2000)}`,
        );
        const g = await request(m.url, `/nar/${name}`, { method: 'HEAD' });
        assert.equal(g.status, 404, 'the NAR of a deleted narinfo must not be served');
      } finally {
        await slow.stop();
      }
    });

    it('DELETE of something absent answers 404', { timeout: TIMEOUT }, async () => {
      const top = await request(del.url, `/${hashPart(deletable.top)}.narinfo`, { method: 'DELETE' });
      assert.equal(top.status, 404, describeResponse('DELETE an already deleted narinfo', top, del));
      const unknown = await request(del.url, `/${randomNix32(32)}.narinfo`, { method: 'DELETE' });
      assert.equal(unknown.status, 404, describeResponse('DELETE an unknown narinfo', unknown, del));
      const nar = await request(del.url, `/nar/${randomNix32(52)}.nar.xz`, { method: 'DELETE' });
      assert.equal(nar.status, 404, describeResponse('DELETE an unknown NAR', nar, del));
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('read token', () => {
    let n: NcpsProcess;
    let ncpsKey: string;
    let leafNarPath: string;

    before(
      async () => {
        n = await ncpsWith({ extraArgs: [`--cache-get-token=${READ_TOKEN}`, '--prometheus-enabled'] });
        ncpsKey = await n.publicKey(); // /pubkey is open
        const r = await request(n.url, `/${hashPart(authC.leaf)}.narinfo`, { headers: bearer(READ_TOKEN), timeoutMs: 20_000 });
        assert.equal(r.status, 200, describeResponse('GET narinfo with the token', r, n));
        leafNarPath = narUrlPath(parseNarinfo(r.text).url);
      },
      { timeout: TIMEOUT },
    );

    it('answers 401 with WWW-Authenticate without valid credentials, 200 with Bearer or Basic', { timeout: TIMEOUT }, async () => {
      const paths = [`/${hashPart(authC.leaf)}.narinfo`, `/upload/${hashPart(authC.leaf)}.narinfo`, leafNarPath, '/nix-cache-info'];
      for (const p of paths) {
        for (const method of ['GET', 'HEAD']) {
          const none = await request(n.url, p, { method });
          assert.equal(none.status, 401, describeResponse(`${method} ${p} without credentials`, none, n));
          assert.ok(none.headers['www-authenticate'], `${method} ${p}: a 401 needs a WWW-Authenticate header`);
          assert.match(String(none.headers['www-authenticate']), /^Basic /i, 'Nix (curl) answers a Basic challenge');

          for (const [what, headers] of [
            ['wrong Bearer', bearer('not-the-token')],
            ['Bearer with a longer token', bearer(`${READ_TOKEN}x`)],
            ['Bearer with a prefix of the token', bearer(READ_TOKEN.slice(0, -1))],
            ['wrong Basic password', basic('x', 'not-the-token')],
            ['token as Basic user name', basic(READ_TOKEN, '')],
            ['unknown scheme', { authorization: `Token ${READ_TOKEN}` }],
          ] as const) {
            const r = await request(n.url, p, { method, headers });
            assert.equal(r.status, 401, describeResponse(`${method} ${p} with ${what}`, r, n));
          }
          for (const [what, headers] of [
            ['Bearer', bearer(READ_TOKEN)],
            ['Basic x:token', basic('x', READ_TOKEN)],
            ['Basic anyone:token', basic('anyone-at-all', READ_TOKEN)],
          ] as const) {
            const r = await request(n.url, p, { method, headers });
            assert.equal(r.status, 200, describeResponse(`${method} ${p} with ${what}`, r, n));
          }
        }
      }
      // /metrics as in the Go ncps: Prometheus scrapers carry no token.
      for (const p of ['/healthz', '/pubkey', '/metrics']) {
        const r = await request(n.url, p);
        assert.equal(r.status, 200, describeResponse(`GET ${p} without credentials`, r, n));
      }
      assert.equal((await request(n.url, '/pins')).status, 401, 'GET /pins needs the read token');
    });

    it('lets the Nix client substitute with a netrc file, and not without one', { timeout: TIMEOUT }, async () => {
      const without = await substitute(authC.top, { substituter: n.url, trustedPublicKey: ncpsKey, timeoutMs: 90_000 });
      assert.notEqual(without.code, 0, 'substitution without credentials must fail');
      assert.equal(await verifyStorePath(without.storeRoot, authC.top), false);

      const dir = await makeTempDir('netrc');
      const netrc = path.join(dir, 'netrc');
      await writeFile(netrc, `machine 127.0.0.1 login x password ${READ_TOKEN}\n`);
      const logStart = n.logs().length;
      await substituteAndVerify(authC, { substituter: n.url, trustedPublicKey: ncpsKey, options: { 'netrc-file': netrc }, ncps: n });
      // Diagnostic only: did Nix send the credentials up front, or only after a 401 challenge?
      const lines = n
        .logs()
        .slice(logStart)
        .split('\n')
        .filter((l) => l.includes('"msg":"request"'));
      const unauthorized = lines.filter((l) => l.includes('"status":401')).length;
      process.stderr.write(`# netrc substitution: ${lines.length} requests, ${unauthorized} answered 401 (challenge)\n`);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('write tokens', () => {
    it('with --cache-put-token, PUT, DELETE and pins need the put token (the read token is not enough)', { timeout: TIMEOUT }, async () => {
      const n = await ncpsWith({
        upstreamUrl: await deadUpstream(),
        extraArgs: [`--cache-get-token=${READ_TOKEN}`, `--cache-put-token=${WRITE_TOKEN}`, '--cache-allow-put-verb', '--cache-allow-delete-verb'],
      });
      const leaf = await publishedPath(manualDir, manual.leaf);

      for (const [what, headers] of [
        ['no credentials', {}],
        ['the read token (Bearer)', bearer(READ_TOKEN)],
        ['the read token (Basic)', basic('x', READ_TOKEN)],
        ['a wrong token', bearer('nope')],
      ] as const) {
        const r = await putNar(n, leaf.narName, leaf.narBytes, headers);
        assert.equal(r.status, 401, describeResponse(`PUT NAR with ${what}`, r, n));
      }
      assert.equal(await fileExists(storedNarPath(n.dataDir, leaf.narName)), false);
      const nar = await putNar(n, leaf.narName, leaf.narBytes, bearer(WRITE_TOKEN));
      assert.equal(nar.status, 204, describeResponse('PUT NAR with the put token', nar, n));

      assert.equal((await putNarinfo(n, leaf.hash, leaf.text, bearer(READ_TOKEN))).status, 401, 'narinfo with the read token');
      const ni = await putNarinfo(n, leaf.hash, leaf.text, basic('uploader', WRITE_TOKEN));
      assert.equal(ni.status, 204, describeResponse('PUT narinfo with the put token (Basic)', ni, n));
      const g = await request(n.url, `/${leaf.hash}.narinfo`, { headers: bearer(READ_TOKEN) });
      assert.equal(g.status, 200, describeResponse('GET with the read token', g, n));

      const pinPath = `/pin/${leaf.hash}.narinfo`;
      assert.equal((await request(n.url, pinPath, { method: 'POST', headers: bearer(READ_TOKEN) })).status, 401, 'pin with the read token');
      assert.equal((await request(n.url, pinPath, { method: 'POST' })).status, 401, 'pin without credentials');
      const pin = await request(n.url, pinPath, { method: 'POST', headers: bearer(WRITE_TOKEN) });
      assert.equal(pin.status, 200, describeResponse('pin with the put token', pin, n));
      assert.equal((await request(n.url, pinPath, { method: 'DELETE', headers: bearer(READ_TOKEN) })).status, 401, 'unpin with the read token');
      const unpin = await request(n.url, pinPath, { method: 'DELETE', headers: bearer(WRITE_TOKEN) });
      assert.equal(unpin.status, 200, describeResponse('unpin with the put token', unpin, n));

      const delPath = `/${leaf.hash}.narinfo`;
      assert.equal((await request(n.url, delPath, { method: 'DELETE', headers: bearer(READ_TOKEN) })).status, 401, 'DELETE with the read token');
      assert.equal((await request(n.url, delPath, { method: 'DELETE' })).status, 401, 'DELETE without credentials');
      assert.equal((await request(n.url, delPath, { headers: bearer(READ_TOKEN) })).status, 200, 'a refused DELETE deletes nothing');
      const d = await request(n.url, delPath, { method: 'DELETE', headers: bearer(WRITE_TOKEN) });
      assert.equal(d.status, 204, describeResponse('DELETE with the put token', d, n));
      assert.equal((await request(n.url, delPath, { headers: bearer(READ_TOKEN) })).status, 404);
    });

    it('without --cache-put-token, writes need the read token', { timeout: TIMEOUT }, async () => {
      const n = await ncpsWith({
        upstreamUrl: await deadUpstream(),
        extraArgs: [`--cache-get-token=${READ_TOKEN}`, '--cache-allow-put-verb', '--cache-allow-delete-verb'],
      });
      const leaf = await publishedPath(manualDir, manual.leaf);
      assert.equal((await putNar(n, leaf.narName, leaf.narBytes)).status, 401, 'PUT without credentials');
      assert.equal((await putNar(n, leaf.narName, leaf.narBytes, bearer('nope'))).status, 401, 'PUT with a wrong token');
      const nar = await putNar(n, leaf.narName, leaf.narBytes, bearer(READ_TOKEN));
      assert.equal(nar.status, 204, describeResponse('PUT NAR with the read token', nar, n));
      const ni = await putNarinfo(n, leaf.hash, leaf.text, basic('x', READ_TOKEN));
      assert.equal(ni.status, 204, describeResponse('PUT narinfo with the read token', ni, n));
      const pinPath = `/pin/${leaf.hash}.narinfo`;
      assert.equal((await request(n.url, pinPath, { method: 'POST' })).status, 401, 'pin without credentials');
      assert.equal((await request(n.url, pinPath, { method: 'POST', headers: bearer(READ_TOKEN) })).status, 200, 'pin with the read token');
      const d = await request(n.url, `/${leaf.hash}.narinfo`, { method: 'DELETE', headers: bearer(READ_TOKEN) });
      assert.equal(d.status, 204, describeResponse('DELETE with the read token', d, n));
    });

    it('nix copy uploads with the put token from a netrc file, and is refused without it', { timeout: TIMEOUT }, async () => {
      const n = await ncpsWith({
        upstreamUrl: await deadUpstream(),
        extraArgs: [`--cache-put-token=${WRITE_TOKEN}`, '--cache-allow-put-verb'],
      });
      const refused = await nixCopy(`${n.url}/upload`, [nixCopyWithToken.top]);
      assert.notEqual(refused.code, 0, 'nix copy without credentials must fail');
      for (const p of nixCopyWithToken.paths) assert.equal((await request(n.url, `/${hashPart(p)}.narinfo`)).status, 404, p);

      const dir = await makeTempDir('netrc-put');
      const netrc = path.join(dir, 'netrc');
      await writeFile(netrc, `machine 127.0.0.1 login uploader password ${WRITE_TOKEN}\n`);
      const copy = await nixCopy(`${n.url}/upload`, [nixCopyWithToken.top], { netrcFile: netrc });
      assert.equal(copy.code, 0, nixDiag(copy, n));
      for (const p of nixCopyWithToken.paths) {
        const r = await request(n.url, `/${hashPart(p)}.narinfo`);
        assert.equal(r.status, 200, describeResponse(`GET narinfo of ${p} (reads are open)`, r, n));
      }
    });
    it('nix copy uploads with the put token from a netrc file when a read token is configured too', { timeout: TIMEOUT }, async () => {
      // Nix has one netrc password per host and sends it on every request of the upload. Reads
      // with the put token are refused (401), which Nix 2.8 takes as "not uploaded yet".
      const n = await ncpsWith({
        upstreamUrl: await deadUpstream(),
        extraArgs: [`--cache-get-token=${READ_TOKEN}`, `--cache-put-token=${WRITE_TOKEN}`, '--cache-allow-put-verb'],
      });
      const dir = await makeTempDir('netrc-both');
      const netrc = path.join(dir, 'netrc');
      await writeFile(netrc, `machine 127.0.0.1 login uploader password ${WRITE_TOKEN}\n`);
      const copy = await nixCopy(`${n.url}/upload`, [bothTokensCopy.top], { netrcFile: netrc });
      assert.equal(copy.code, 0, nixDiag(copy, n));
      for (const p of bothTokensCopy.paths) {
        const r = await request(n.url, `/${hashPart(p)}.narinfo`, { headers: bearer(READ_TOKEN) });
        assert.equal(r.status, 200, describeResponse(`GET narinfo of ${p}`, r, n));
      }
      const again = await nixCopy(`${n.url}/upload`, [bothTokensCopy.top], { netrcFile: netrc });
      assert.equal(again.code, 0, `copying the same closure again: ${nixDiag(again, n)}`);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('pins', () => {
    it('refuses POST and DELETE /pin/… with 403 when no token is configured and uploads are closed', { timeout: TIMEOUT }, async () => {
      const n = await ncpsWith({ extraArgs: [] });
      const p = `/pin/${hashPart(pinC.top)}.narinfo`;
      const post = await request(n.url, p, { method: 'POST', timeoutMs: 20_000 });
      assert.equal(post.status, 403, describeResponse('POST pin without any token configured', post, n));
      const del = await request(n.url, p, { method: 'DELETE', timeoutMs: 20_000 });
      assert.equal(del.status, 403, describeResponse('DELETE pin without any token configured', del, n));
      const list = await request(n.url, '/pins');
      if (list.status === 200) {
        const pins = JSON.parse(list.text) as string[];
        assert.equal(pins.length, 0, 'a refused pin must not have been recorded');
      }
    });

    it('without any token, pins are open when uploads are (--cache-allow-put-verb), as in the Go ncps', { timeout: TIMEOUT }, async () => {
      const n = await ncpsWith({ extraArgs: ['--cache-allow-put-verb'] });
      const hash = hashPart(pinC.top);
      const post = await request(n.url, `/pin/${hash}.narinfo`, { method: 'POST', timeoutMs: 20_000 });
      assert.equal(post.status, 200, describeResponse('POST pin, uploads open', post, n));
      assert.deepEqual(JSON.parse((await request(n.url, '/pins')).text), [hash]);
      const del = await request(n.url, `/pin/${hash}.narinfo`, { method: 'DELETE' });
      assert.equal(del.status, 200, describeResponse('DELETE pin, uploads open', del, n));
    });

    it('pins and unpins with a token: 200 (as the Go ncps), 404 for unknown paths, GET /pins in the Go shape', { timeout: TIMEOUT }, async () => {
      const n = await ncpsWith({ extraArgs: [`--cache-put-token=${WRITE_TOKEN}`] });
      const hash = hashPart(pinC.top);
      const p = `/pin/${hash}.narinfo`;
      // The path is not in ncps yet: pinning fetches its narinfo from the upstream.
      const post = await request(n.url, p, { method: 'POST', headers: bearer(WRITE_TOKEN), timeoutMs: 20_000 });
      assert.equal(post.status, 200, describeResponse('POST pin', post, n));
      const again = await request(n.url, p, { method: 'POST', headers: bearer(WRITE_TOKEN) });
      assert.equal(again.status, 200, describeResponse('POST pin again (idempotent)', again, n));
      const unknown = await request(n.url, `/pin/${randomNix32(32)}.narinfo`, { method: 'POST', headers: bearer(WRITE_TOKEN), timeoutMs: 20_000 });
      assert.equal(unknown.status, 404, describeResponse('POST pin of an unknown path', unknown, n));

      const list = await request(n.url, '/pins', { headers: bearer(WRITE_TOKEN) });
      assert.equal(list.status, 200, describeResponse('GET /pins', list, n));
      assert.match(String(list.headers['content-type']), /json/);
      // The Go ncps's shape: an array of narinfo hashes (its clients parse []string).
      assert.deepEqual(JSON.parse(list.text), [hash]);
      const detail = await request(n.url, '/pins?detail=true', { headers: bearer(WRITE_TOKEN) });
      const pins = JSON.parse(detail.text) as Array<{ hash: string; storePath?: string }>;
      assert.equal(pins.length, 1, `exactly one pin expected: ${detail.text}`);
      assert.equal(pins[0]?.hash, hash);
      assert.equal(pins[0]?.storePath, pinC.top);

      const del = await request(n.url, p, { method: 'DELETE', headers: bearer(WRITE_TOKEN) });
      assert.equal(del.status, 200, describeResponse('DELETE pin', del, n));
      const del2 = await request(n.url, p, { method: 'DELETE', headers: bearer(WRITE_TOKEN) });
      assert.equal(del2.status, 200, describeResponse('DELETE pin again (as the Go ncps: nothing left to unpin is fine)', del2, n));
      const after = JSON.parse((await request(n.url, '/pins', { headers: bearer(WRITE_TOKEN) })).text) as unknown[];
      assert.deepEqual(after, []);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('negative cache', () => {
    const asked = (hash: string): number => upstream.count('GET', `/${hash}.narinfo`) + upstream.count('HEAD', `/${hash}.narinfo`);

    it('with --cache-negative-ttl=2s, asks the upstream once within the TTL and again after it', { timeout: TIMEOUT }, async () => {
      const n = await ncpsWith({ extraArgs: ['--cache-negative-ttl=2s'] });
      const absent = randomNix32(32);
      const t0 = Date.now();
      assert.equal((await request(n.url, `/${absent}.narinfo`, { timeoutMs: 20_000 })).status, 404);
      assert.equal((await request(n.url, `/${absent}.narinfo`, { timeoutMs: 20_000 })).status, 404);
      assert.equal((await request(n.url, `/${absent}.narinfo`, { method: 'HEAD', timeoutMs: 20_000 })).status, 404);
      const within = Date.now() - t0;
      if (within < 1_800) assert.equal(asked(absent), 1, `three requests within ${within} ms should reach the upstream once`);
      else process.stderr.write(`# negative cache: requests took ${within} ms, the within-TTL count is not checked\n`);

      // A path the upstream gains meanwhile becomes visible once the TTL has passed.
      const late = hashPart(lateC.top);
      const t1 = Date.now();
      assert.equal((await request(n.url, `/${late}.narinfo`, { timeoutMs: 20_000 })).status, 404);
      assert.equal(asked(late), 1);
      await upstream.publish(lateC);
      assert.equal((await request(upstream.url, `/${late}.narinfo`)).status, 200, 'now published upstream');
      const cached = await request(n.url, `/${late}.narinfo`, { timeoutMs: 20_000 });
      if (Date.now() - t1 < 1_800) assert.equal(cached.status, 404, 'still remembered as absent within the TTL');

      await sleep(Math.max(0, t0 + 2_600 - Date.now()));
      const expired = await request(n.url, `/${absent}.narinfo`, { timeoutMs: 20_000 });
      assert.equal(expired.status, 404);
      assert.equal(asked(absent), 2, 'after the TTL the upstream must be asked again');

      await sleep(Math.max(0, t1 + 2_600 - Date.now()));
      const found = await request(n.url, `/${late}.narinfo`, { timeoutMs: 20_000 });
      assert.equal(found.status, 200, describeResponse('GET a path published upstream after the TTL', found, n));
    });

    it('with --cache-negative-ttl=0, asks the upstream every time', { timeout: TIMEOUT }, async () => {
      const n = await ncpsWith({ extraArgs: ['--cache-negative-ttl=0'] });
      const absent = randomNix32(32);
      for (let i = 0; i < 3; i++) assert.equal((await request(n.url, `/${absent}.narinfo`, { timeoutMs: 20_000 })).status, 404);
      assert.equal(asked(absent), 3);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('metrics', () => {
    const NAMES = [
      'ncps_nar_served_total',
      'ncps_narinfo_served_total',
      'ncps_narinfo_count',
      'ncps_nar_file_count',
      'ncps_store_total_size_bytes',
      'ncps_cache_max_size_bytes',
      'ncps_cache_utilization_ratio',
      'ncps_lru_cleanup_runs_total',
      'ncps_lru_bytes_freed_total',
      'ncps_upstream_narinfo_fetch_duration_seconds',
      'ncps_upstream_nar_fetch_duration_seconds',
      'ncps_background_migration_objects_total',
      'ncps_migration_objects_total',
      'ncps_migration_duration_seconds',
      'ncps_lock_acquisitions_total',
      'ncps_lock_failures_total',
      'ncps_http_request_duration_seconds',
    ];
    let m: NcpsProcess;

    before(
      async () => {
        m = await ncpsWith({ extraArgs: ['--prometheus-enabled'] });
      },
      { timeout: TIMEOUT },
    );

    it('has no /metrics without --prometheus-enabled', { timeout: TIMEOUT }, async () => {
      const n = await ncpsWith({ upstreamUrl: await deadUpstream() });
      const r = await request(n.url, '/metrics');
      assert.equal(r.status, 404, describeResponse('GET /metrics', r, n));
    });

    it('exposes every ncps metric from startup, counters and gauges at zero', { timeout: TIMEOUT }, async () => {
      const r = await request(m.url, '/metrics');
      assert.equal(r.status, 200, describeResponse('GET /metrics', r, m));
      assert.match(String(r.headers['content-type']), /^text\/plain/);
      for (const name of NAMES) {
        assert.match(r.text, new RegExp(`^# TYPE ${name} (counter|gauge|histogram|summary)$`, 'm'), `${name} is missing`);
      }
      for (const name of NAMES.filter((x) => x.endsWith('_total'))) {
        assert.equal(metricValue(r.text, name), 0, `${name} should be present at zero from startup`);
      }
      for (const name of ['ncps_narinfo_count', 'ncps_nar_file_count', 'ncps_store_total_size_bytes', 'ncps_cache_max_size_bytes']) {
        assert.equal(metricValue(r.text, name), 0, `${name} should be 0 for an empty store without a maximum size`);
      }
      assert.equal(metricValue(r.text, 'ncps_nar_served_total', { result: 'hit', status: 'success' }), 0);
      assert.equal(metricValue(r.text, 'ncps_bytes_served_total', { source: 'cache' }), 0);
    });

    it('counts a NAR miss and hit, the bytes served from the cache and the store size', { timeout: TIMEOUT }, async () => {
      const leaf = await publishedPath(upstream.dir, metC.leaf);
      const ni = await request(m.url, `/${leaf.hash}.narinfo`, { timeoutMs: 20_000 });
      assert.equal(ni.status, 200, describeResponse('GET narinfo', ni, m));
      const narPath = narUrlPath(parseNarinfo(ni.text).url);
      const first = await request(m.url, narPath, { timeoutMs: 60_000 });
      assert.equal(first.status, 200);
      assert.equal(first.body.length, leaf.narBytes.length);
      // Wait until the NAR is in storage, then ask again: that one is a hit for sure.
      const file = storedNarPath(m.dataDir, narPath.slice('/nar/'.length));
      const deadline = Date.now() + 30_000;
      while (!(await fileExists(file)) && Date.now() < deadline) await sleep(100);
      assert.equal(await fileExists(file), true, 'the NAR should have been stored');
      const second = await request(m.url, narPath, { timeoutMs: 60_000 });
      assert.equal(second.status, 200);
      assert.ok(second.body.equals(first.body));

      let text = '';
      const ok = (): boolean =>
        (metricValue(text, 'ncps_nar_served_total', { result: 'hit', status: 'success' }) ?? 0) >= 1 &&
        (metricValue(text, 'ncps_bytes_served_total', { source: 'cache' }) ?? 0) >= leaf.narBytes.length &&
        (metricValue(text, 'ncps_store_total_size_bytes') ?? 0) >= leaf.narBytes.length;
      const until = Date.now() + 15_000;
      do {
        text = (await request(m.url, '/metrics')).text;
        if (ok()) break;
        await sleep(200);
      } while (Date.now() < until);
      const show = (name: string, labels: Record<string, string> = {}): string => `${name}${JSON.stringify(labels)} = ${metricValue(text, name, labels)}`;
      const summary = [
        show('ncps_nar_served_total', { result: 'hit', status: 'success' }),
        show('ncps_nar_served_total', { result: 'miss', status: 'success' }),
        show('ncps_bytes_served_total', { source: 'cache' }),
        show('ncps_store_total_size_bytes'),
      ].join('\n');
      assert.ok((metricValue(text, 'ncps_nar_served_total', { result: 'hit', status: 'success' }) ?? 0) >= 1, summary);
      assert.ok((metricValue(text, 'ncps_bytes_served_total', { source: 'cache' }) ?? 0) >= leaf.narBytes.length, summary);
      assert.ok((metricValue(text, 'ncps_store_total_size_bytes') ?? 0) >= leaf.narBytes.length, summary);
      assert.ok((metricValue(text, 'ncps_nar_file_count') ?? 0) >= 1, 'ncps_nar_file_count');
      assert.ok((metricValue(text, 'ncps_narinfo_count') ?? 0) >= 1, 'ncps_narinfo_count');
      assert.ok((metricValue(text, 'ncps_narinfo_served_total', { result: 'miss', status: 'success' }) ?? 0) >= 1, 'narinfo miss counted');
      assert.ok((metricValue(text, 'ncps_upstream_nar_fetch_duration_seconds_count') ?? 0) >= 1, 'upstream NAR fetch timed');
      assert.ok((metricValue(text, 'ncps_http_request_duration_seconds_count', { method: 'GET' }) ?? 0) >= 3, 'HTTP requests timed');
    });
  });
});
