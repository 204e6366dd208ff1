// An upstream cannot make ncps fetch internal URLs: a validly signed narinfo whose `URL:` (not
// covered by the signature) points at a loopback service, a name that resolves to loopback, or a
// NAR request redirected to a loopback service or to ncps's own port — none of them is fetched,
// and nothing of the internal service reaches the client. A redirect to another host that the
// configuration allows (standing in for object storage or a CDN) keeps working with the real Nix
// client; public hosts are allowed without configuration (checked in test/unit/destinations).
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { signedBinaryCache, substituteAndVerify, teardown } from '../helpers/fixture';
import { redirect, rewriteNarinfo, startFaultUpstream, startLoopbackService, type FaultUpstream, type LoopbackService } from '../helpers/fault-upstream';
import { request } from '../helpers/http';
import { parseNarinfo } from '../helpers/narinfo';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { buildClosure, hashPart, makeBinaryCache, nixAvailable, sleep, type Closure } from '../helpers/nix';
import { startStaticCache, type StaticCache } from '../helpers/static-cache';

const skip = nixAvailable() ? false : 'nix-bin not installed';

describe('upstream URLs that point inside', { skip, timeout: 300_000 }, () => {
  let upstream: FaultUpstream;
  let cdn: StaticCache;
  let secret: LoopbackService;
  let ncps: NcpsProcess;
  let attacked: Closure;
  let fine: Closure;
  let cacheDir: string;
  let key: string;

  const narUrlOf = async (storePath: string) => parseNarinfo(await readFile(path.join(cacheDir, `${hashPart(storePath)}.narinfo`), 'utf8')).url;

  before(async () => {
    const cache = await signedBinaryCache({ label: 'urls-attacked' });
    attacked = cache.closure;
    cacheDir = cache.cacheDir;
    key = cache.key.publicKey;
    fine = await buildClosure({ label: 'urls-fine' });
    await makeBinaryCache(cacheDir, fine.paths, { secretKeyFile: cache.key.secretKeyFile, compression: 'xz' });
    upstream = await startFaultUpstream(cacheDir);
    cdn = await startStaticCache(cacheDir);
    secret = await startLoopbackService();
    ncps = await startNcps({
      upstreams: [upstream.url],
      publicKeys: [key],
      // The stand-in for object storage lives on loopback too, so it must be allowed explicitly.
      extraArgs: [`--cache-upstream-allowed-host=127.0.0.1:${cdn.port}`],
    });
  });
  after(() => teardown(ncps, upstream, cdn, secret));

  it('ignores a signed narinfo whose URL points at a loopback service (by address or by name)', async () => {
    for (const [storePath, url] of [
      [attacked.leaf, `http://127.0.0.1:${secret.port}/secret`],
      [attacked.mid, `http://localhost:${secret.port}/secret`],
    ] as const) {
      const p = `/${hashPart(storePath)}.narinfo`;
      upstream.on(p, rewriteNarinfo((f) => f.set('URL', url)));
      const r = await request(ncps.url, p);
      assert.equal(r.status, 404, `${url}: narinfo answered ${r.status}:\n${r.text}`);
      assert.equal(upstream.count('GET', p), 1, 'the upstream was asked');
      assert.match(ncps.logs(), /upstream narinfo points at a NAR ncps may not fetch; ignored/);
    }
    assert.equal(secret.hits(), 0, 'ncps fetched from the internal service');
  });

  it('does not follow a NAR redirect to a loopback service or to its own port', async () => {
    const top = `/${hashPart(attacked.top)}.narinfo`;
    const narPath = `/${await narUrlOf(attacked.top)}`;
    upstream.on(narPath, redirect(`http://127.0.0.1:${secret.port}/secret`), { times: 2 });
    const narinfo = await request(ncps.url, top);
    assert.equal(narinfo.status, 200, 'the narinfo itself is fine');
    const ours = parseNarinfo(narinfo.text).url;
    const nar = await request(ncps.url, `/${ours}`, { timeoutMs: 30_000 });
    assert.notEqual(nar.status, 200, 'the redirected NAR must not be served');
    assert.ok(!nar.text.includes('internal secret'), 'the internal answer reached the client');
    assert.equal(secret.hits(), 0, 'ncps followed the redirect to the internal service');
    assert.match(ncps.logs(), /refused to fetch from 127\.0\.0\.1:\d+: 127\.0\.0\.1 is a loopback address/);

    // The same NAR redirected to ncps's own port (a loop through itself).
    upstream.reset();
    upstream.on(narPath, redirect(`http://127.0.0.1:${ncps.port}${narPath}`));
    const before = ncps.logs().length;
    const again = await request(ncps.url, `/${ours}`, { timeoutMs: 30_000 });
    assert.notEqual(again.status, 200);
    for (let i = 0; i < 50 && !/own port/.test(ncps.logs().slice(before)); i++) await sleep(100);
    assert.match(ncps.logs().slice(before), /127\.0\.0\.1:\d+ is ncps's own port/);
    upstream.reset();
  });

  it('follows a redirect to an allowed other host, and the real Nix client substitutes through it', async () => {
    // Every NAR of this closure is answered with a 307 to the "object storage" host, as real caches do.
    for (const p of fine.paths) {
      const narPath = `/${await narUrlOf(p)}`;
      upstream.on(narPath, redirect(`${cdn.url}${narPath}`, 307));
    }
    // And one narinfo names its NAR by an absolute URL on that host.
    const leafNar = await narUrlOf(fine.leaf);
    upstream.on(`/${hashPart(fine.leaf)}.narinfo`, rewriteNarinfo((f) => f.set('URL', `${cdn.url}/${leafNar}`)));
    await substituteAndVerify(fine, { substituter: ncps.url, trustedPublicKey: await ncps.publicKey(), ncps });
    assert.ok(cdn.count('GET', '.nar.xz') >= fine.paths.length, 'the NARs came from the other host');
    assert.equal(secret.hits(), 0);
  });
});
