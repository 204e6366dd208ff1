// End to end: the real Nix client substitutes a closure through ncps, which pulls it from a
// signed upstream binary cache, re-signs it, and keeps serving it when the upstream is gone.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { downloadHashed, request } from '../helpers/http';
import { hasValidSignature, narHashOfFile, narUrlPath, nix32Encode, normaliseHash, parseNarinfo } from '../helpers/narinfo';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import {
  buildClosure,
  cleanupTempDirs,
  deleteBuiltPaths,
  generateKeyPair,
  hashPart,
  makeBinaryCache,
  makeTempDir,
  nixAvailable,
  substitute,
  verifyStorePath,
  type Closure,
  type Compression,
  type KeyPair,
  type SubstituteResult,
} from '../helpers/nix';
import { startStaticCache, type StaticCache } from '../helpers/static-cache';

const skip = nixAvailable() ? false : 'nix-bin not installed';
const TIMEOUT = 120_000;

function diag(r: SubstituteResult, ncps?: NcpsProcess): string {
  const logs = ncps ? ncps.logs() : '';
  return `nix-store exit ${r.code}\n--- nix stderr\n${r.stderr}\n--- ncps logs (tail)\n${logs.slice(-6000)}`;
}

async function assertClosureValid(storeRoot: string, closure: Closure): Promise<void> {
  for (const p of closure.paths) {
    assert.equal(await verifyStorePath(storeRoot, p), true, `${p} should be valid in the chroot store ${storeRoot}`);
  }
}

for (const compression of ['xz', 'zstd', 'none'] as const satisfies readonly Compression[]) {
  describe(`substitution through ncps (upstream compression: ${compression})`, { skip }, () => {
    let upstreamKey: KeyPair;
    let closure: Closure;
    let cacheDir: string;
    let upstream: StaticCache;
    let ncps: NcpsProcess | undefined;
    let ncpsKey: string;

    before(
      async () => {
        const keyDir = await makeTempDir('keys');
        upstreamKey = await generateKeyPair('test-upstream-1', keyDir);
        closure = await buildClosure({ label: `subst-${compression}` });
        cacheDir = await makeTempDir(`upstream-${compression}`);
        await makeBinaryCache(cacheDir, closure.paths, { secretKeyFile: upstreamKey.secretKeyFile, compression });
        upstream = await startStaticCache(cacheDir);
        ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [upstreamKey.publicKey] });
      },
      { timeout: TIMEOUT },
    );

    after(
      async () => {
        await ncps?.stop();
        await upstream?.stop();
        await deleteBuiltPaths();
        await cleanupTempDirs();
      },
      { timeout: TIMEOUT },
    );

    it('publishes its own public key named after --cache-hostname', { timeout: TIMEOUT }, async () => {
      assert.ok(ncps);
      ncpsKey = await ncps.publicKey();
      const [name, b64] = ncpsKey.split(':');
      assert.equal(name, 'ncps-test');
      assert.equal(Buffer.from(b64 ?? '', 'base64').length, 32, `public key ${ncpsKey} should hold 32 bytes`);
      assert.notEqual(ncpsKey, upstreamKey.publicKey);

      const info = await request(ncps.url, '/nix-cache-info');
      assert.equal(info.status, 200);
      assert.match(info.text, /^StoreDir: \/nix\/store$/m);
    });

    it('lets the Nix client substitute the whole closure, trusting only ncps\'s key', { timeout: TIMEOUT }, async () => {
      assert.ok(ncps);
      const r = await substitute(closure.top, { substituter: ncps.url, trustedPublicKey: ncpsKey });
      assert.equal(r.code, 0, diag(r, ncps));
      await assertClosureValid(r.storeRoot, closure);
    });

    it('serves narinfos re-signed as ncps-test that keep the upstream signature', { timeout: TIMEOUT }, async () => {
      assert.ok(ncps);
      for (const storePath of closure.paths) {
        const hash = hashPart(storePath);
        const upstreamText = await readFile(path.join(cacheDir, `${hash}.narinfo`), 'utf8');
        const up = parseNarinfo(upstreamText);

        const res = await request(ncps.url, `/${hash}.narinfo`);
        assert.equal(res.status, 200, `GET /${hash}.narinfo: ${res.text}`);
        assert.match(String(res.headers['content-type']), /^text\/x-nix-narinfo/);
        const ni = parseNarinfo(res.text);

        assert.equal(ni.storePath, storePath);
        assert.equal(normaliseHash(ni.narHash), normaliseHash(up.narHash));
        assert.equal(ni.narSize, up.narSize);
        assert.deepEqual([...ni.references].sort(), [...up.references].sort());

        assert.ok(ni.sigs.some((s) => s.startsWith('ncps-test:')), `no ncps-test signature in:\n${res.text}`);
        assert.ok(hasValidSignature(ni, ncpsKey), `ncps-test signature does not verify:\n${res.text}`);
        for (const sig of up.sigs) assert.ok(ni.sigs.includes(sig), `upstream signature ${sig} was dropped:\n${res.text}`);
        assert.ok(hasValidSignature(ni, upstreamKey.publicKey));

        const head = await request(ncps.url, `/${hash}.narinfo`, { method: 'HEAD' });
        assert.equal(head.status, 200);
        assert.equal(head.body.length, 0);

        // The NAR the narinfo points at is what it claims to be.
        const narDir = await makeTempDir('nar');
        const narFile = path.join(narDir, 'body');
        const nar = await downloadHashed(ncps.url, narUrlPath(ni.url), { saveTo: narFile });
        assert.equal(nar.status, 200, `GET ${ni.url}`);
        const fileHash = `sha256:${nix32Encode(Buffer.from(nar.sha256, 'hex'))}`;
        if (ni.fileHash !== undefined) assert.equal(fileHash, normaliseHash(ni.fileHash), 'FileHash');
        if (ni.fileSize !== undefined) assert.equal(nar.bytes, ni.fileSize, 'FileSize');
        const narHash = await narHashOfFile(narFile, ni.compression);
        if (narHash !== undefined) assert.equal(narHash, normaliseHash(ni.narHash), 'NarHash of the decompressed body');
      }
    });

    it('still substitutes from its own storage once the upstream is gone', { timeout: TIMEOUT }, async () => {
      assert.ok(ncps);
      await upstream.stop();
      const r = await substitute(closure.top, { substituter: ncps.url, trustedPublicKey: ncpsKey });
      assert.equal(r.code, 0, diag(r, ncps));
      await assertClosureValid(r.storeRoot, closure);
    });

    it('keeps its key and its cache across a restart (upstream still down)', { timeout: TIMEOUT }, async () => {
      assert.ok(ncps);
      const dataDir = ncps.dataDir;
      const code = await ncps.stop('SIGTERM');
      assert.equal(code, 0, `ncps should exit 0 on SIGTERM (graceful shutdown); logs:\n${ncps.logs().slice(-4000)}`);

      ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [upstreamKey.publicKey], dataDir });
      assert.equal(await ncps.publicKey(), ncpsKey, 'the signing key must persist in the data dir / database');

      const r = await substitute(closure.top, { substituter: ncps.url, trustedPublicKey: ncpsKey });
      assert.equal(r.code, 0, diag(r, ncps));
      await assertClosureValid(r.storeRoot, closure);
    });
  });
}
