// End to end: the real Nix client substitutes a closure through ncps, which pulls it from a
// signed upstream binary cache, re-signs it, and keeps serving it when the upstream is gone.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { signedUpstream, substituteAndVerify, teardown, type SignedUpstream } from '../helpers/fixture';
import { downloadHashed, request } from '../helpers/http';
import { hasValidSignature, narHashOfFile, narUrlPath, nix32Encode, normaliseHash, parseNarinfo } from '../helpers/narinfo';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { hashPart, makeTempDir, nixAvailable, nixClients, type Compression } from '../helpers/nix';

const skip = nixAvailable() ? false : 'nix-bin not installed';
const TIMEOUT = 120_000;

for (const compression of ['xz', 'zstd', 'none'] as const satisfies readonly Compression[]) {
  describe(`substitution through ncps (upstream compression: ${compression})`, { skip }, () => {
    let upstream: SignedUpstream;
    let ncps: NcpsProcess | undefined;
    let ncpsKey: string;

    before(
      async () => {
        upstream = await signedUpstream({ label: `subst-${compression}`, compression });
        ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [upstream.key.publicKey] });
      },
      { timeout: TIMEOUT },
    );

    after(() => teardown(ncps, upstream), { timeout: TIMEOUT });

    it('publishes its own public key named after --cache-hostname', { timeout: TIMEOUT }, async () => {
      assert.ok(ncps);
      ncpsKey = await ncps.publicKey();
      const [name, b64] = ncpsKey.split(':');
      assert.equal(name, 'ncps-test');
      assert.equal(Buffer.from(b64 ?? '', 'base64').length, 32, `public key ${ncpsKey} should hold 32 bytes`);
      assert.notEqual(ncpsKey, upstream.key.publicKey);

      const info = await request(ncps.url, '/nix-cache-info');
      assert.equal(info.status, 200);
      assert.match(info.text, /^StoreDir: \/nix\/store$/m);
    });

    // Each client in turn (the first makes ncps download, the next is served from its storage).
    for (const { client, skip: clientSkip } of nixClients()) {
      it(`lets ${client.label} substitute the whole closure, trusting only ncps's key`, { timeout: TIMEOUT, skip: clientSkip }, async () => {
        assert.ok(ncps);
        await substituteAndVerify(upstream.closure, { substituter: ncps.url, trustedPublicKey: ncpsKey, ncps, client });
      });
    }

    it('serves narinfos re-signed as ncps-test that keep the upstream signature', { timeout: TIMEOUT }, async () => {
      assert.ok(ncps);
      for (const storePath of upstream.closure.paths) {
        const hash = hashPart(storePath);
        const upstreamText = await readFile(path.join(upstream.dir, `${hash}.narinfo`), 'utf8');
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
        assert.ok(hasValidSignature(ni, upstream.key.publicKey));

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

    for (const { client, skip: clientSkip } of nixClients()) {
      it(`still substitutes for ${client.label} from its own storage once the upstream is gone`, { timeout: TIMEOUT, skip: clientSkip }, async () => {
        assert.ok(ncps);
        await upstream.stop();
        await substituteAndVerify(upstream.closure, { substituter: ncps.url, trustedPublicKey: ncpsKey, ncps, client });
      });
    }

    it('keeps its key and its cache across a restart (upstream still down)', { timeout: TIMEOUT }, async () => {
      assert.ok(ncps);
      const dataDir = ncps.dataDir;
      const code = await ncps.stop('SIGTERM');
      assert.equal(code, 0, `ncps should exit 0 on SIGTERM (graceful shutdown); logs:\n${ncps.logs().slice(-4000)}`);

      ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [upstream.key.publicKey], dataDir });
      assert.equal(await ncps.publicKey(), ncpsKey, 'the signing key must persist in the data dir / database');

      await substituteAndVerify(upstream.closure, { substituter: ncps.url, trustedPublicKey: ncpsKey, ncps });
    });
  });
}
