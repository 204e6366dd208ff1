// Uploads that lie are refused before ncps signs anything: a narinfo whose NarHash or NarSize does
// not describe the uploaded NAR (decompressed, as Nix will check it), a NAR whose bytes are not
// the format its extension promises (xz uploaded as .nar.zst), or one that does not decompress.
// The honest upload is accepted, and the real Nix client substitutes it from ncps.
import assert from 'node:assert/strict';
import { randomBytes, createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { signedBinaryCache, substituteAndVerify, teardown } from '../helpers/fixture';
import { request } from '../helpers/http';
import { nix32Encode, parseNarinfo } from '../helpers/narinfo';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { hashPart, nixAvailable, type Closure } from '../helpers/nix';

const skip = nixAvailable() ? false : 'nix-bin not installed';

describe('uploads that lie', { skip, timeout: 240_000 }, () => {
  let ncps: NcpsProcess;
  let closure: Closure;
  let cacheDir: string;

  const put = (p: string, body: Buffer | string) => request(ncps.url, p, { method: 'PUT', body });
  const narinfoText = (storePath: string) => readFile(path.join(cacheDir, `${hashPart(storePath)}.narinfo`), 'utf8');
  /** Uploads the NAR of `storePath` as `nix copy` would, before its narinfo. */
  const uploadNarOf = async (storePath: string) => {
    const url = parseNarinfo(await narinfoText(storePath)).url;
    const r = await put(`/upload/${url}`, await readFile(path.join(cacheDir, url)));
    assert.equal(r.status, 204, r.text);
  };

  before(async () => {
    const cache = await signedBinaryCache({ label: 'upload-lies' });
    closure = cache.closure;
    cacheDir = cache.cacheDir;
    ncps = await startNcps({ upstreams: ['http://127.0.0.1:1'], publicKeys: [cache.key.publicKey], extraArgs: ['--cache-allow-put-verb', '--cache-upstream-dialer-timeout=1s'] });
  });
  after(() => teardown(ncps));

  it('refuses a narinfo whose NarHash or NarSize does not match the uploaded NAR, and signs nothing', async () => {
    const storePath = closure.leaf;
    await uploadNarOf(storePath);
    const honest = await narinfoText(storePath);
    const otherHash = `sha256:${nix32Encode(randomBytes(32))}`;
    const size = parseNarinfo(honest).narSize;
    for (const [what, text] of [
      ['NarHash', honest.replace(/^NarHash: .*$/m, `NarHash: ${otherHash}`)],
      ['NarSize', honest.replace(/^NarSize: .*$/m, `NarSize: ${size + 1}`)],
    ] as const) {
      const r = await put(`/upload/${hashPart(storePath)}.narinfo`, text);
      assert.equal(r.status, 400, `${what} changed: ${r.status} ${r.text}`);
      assert.match(r.text, /NarHash\/NarSize .* do not match the uploaded NAR/);
      for (const prefix of ['', '/upload']) {
        assert.equal((await request(ncps.url, `${prefix}/${hashPart(storePath)}.narinfo`)).status, 404, `${what}: a lying narinfo is served`);
      }
    }
  });

  it('refuses NAR bytes that are not what the extension says, or do not decompress', async () => {
    const url = parseNarinfo(await narinfoText(closure.mid)).url;
    const xz = await readFile(path.join(cacheDir, url));
    // The same xz bytes under the name .nar.zst (named by their hash, as nix copy names NARs).
    const zst = url.replace(/\.nar\.xz$/, '.nar.zst');
    const asZstd = await put(`/upload/${zst}`, xz);
    assert.equal(asZstd.status, 400, `${asZstd.status} ${asZstd.text}`);
    assert.match(asZstd.text, /bytes are not zstd data \(they are xz\)/);

    // Bytes with an xz header that do not decompress, named by their hash.
    const junk = Buffer.concat([xz.subarray(0, 6), randomBytes(4096)]);
    const junkName = `${nix32Encode(createHash('sha256').update(junk).digest())}.nar.xz`;
    const broken = await put(`/upload/nar/${junkName}`, junk);
    assert.equal(broken.status, 400, `${broken.status} ${broken.text}`);
    assert.match(broken.text, /does not decompress as xz/);
    assert.equal((await request(ncps.url, `/upload/nar/${junkName}`)).status, 404, 'refused bytes were kept');
  });

  it('accepts the honest uploads, and the Nix client substitutes them from ncps', async () => {
    for (const p of closure.paths) {
      await uploadNarOf(p);
      const r = await put(`/upload/${hashPart(p)}.narinfo`, await narinfoText(p));
      assert.equal(r.status, 204, `${p}: ${r.status} ${r.text}`);
    }
    await substituteAndVerify(closure, { substituter: ncps.url, trustedPublicKey: await ncps.publicKey(), ncps });
  });
});
