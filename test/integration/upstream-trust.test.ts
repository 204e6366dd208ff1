// Upstream trust as a Go ncps user meets it: a private upstream that does not sign. This ncps stays
// strict (a narinfo no configured key signed is a 404), but says so at start, naming the upstream,
// and again with the evidence once it sees such a narinfo; `?allow-unsigned=true` on that
// upstream's URL lets the real Nix client substitute through ncps (which signs with its own key).
// A signature under a configured key's name that does not verify is refused even then.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { substituteAndVerify, teardown } from '../helpers/fixture';
import { request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { buildClosure, generateKeyPair, hashPart, makeBinaryCache, makeTempDir, nixAvailable, type Closure, type KeyPair } from '../helpers/nix';
import { startStaticCache, type StaticCache } from '../helpers/static-cache';

const skip = nixAvailable() ? false : 'nix-store not installed';
const TIMEOUT = 180_000;

describe('an upstream that does not sign', { skip, timeout: 600_000 }, () => {
  let closure: Closure;
  let forged: Closure;
  let unsigned: StaticCache;
  let key: KeyPair;
  const running: NcpsProcess[] = [];

  before(async () => {
    key = await generateKeyPair('private-cache-1', await makeTempDir('trust-keys'));
    closure = await buildClosure({ label: 'trust-unsigned' });
    forged = await buildClosure({ label: 'trust-forged' });
    const dir = await makeTempDir('trust-upstream');
    await makeBinaryCache(dir, [...closure.paths, ...forged.paths], { secretKeyFile: undefined, compression: 'xz' });
    // One narinfo carries a signature under the configured key's name that was never made by it.
    const file = path.join(dir, `${hashPart(forged.top)}.narinfo`);
    await writeFile(file, `${await readFile(file, 'utf8')}Sig: private-cache-1:${randomBytes(64).toString('base64')}\n`);
    for (const name of await readdir(dir)) {
      if (name.endsWith('.narinfo') && name !== path.basename(file)) {
        assert.doesNotMatch(await readFile(path.join(dir, name), 'utf8'), /^Sig:/m, `${name} is unsigned`);
      }
    }
    unsigned = await startStaticCache(dir);
  });

  after(async () => {
    await teardown(...running, unsigned);
  });

  it('is named in a warning at start, and its narinfos are 404s with the reason logged once', { timeout: TIMEOUT }, async () => {
    const ncps = await startNcps({ upstreams: [unsigned.url], publicKeys: [key.publicKey] });
    running.push(ncps);
    const startup = ncps.logs();
    assert.match(startup, new RegExp(`upstream ${unsigned.url.replace(/[.]/g, '\\.')}/: no configured --cache-upstream-public-key is named 127\\.0\\.0\\.1:\\d+-<n>`), startup);
    assert.match(startup, /allow-unsigned=true/);
    for (const p of closure.paths) {
      const r = await request(ncps.url, `/${hashPart(p)}.narinfo`, { timeoutMs: 20_000 });
      assert.equal(r.status, 404, `${p}: ${r.status}`);
    }
    const evidence = ncps.logs().split('\n').filter((l) => l.includes('serves unsigned narinfos'));
    assert.equal(evidence.length, 1, `one warning with the evidence, not one per path:\n${ncps.logs().slice(-4000)}`);
  });

  it('with ?allow-unsigned=true, the Nix client substitutes through ncps, which signs with its own key', { timeout: TIMEOUT }, async () => {
    const ncps = await startNcps({ upstreams: [`${unsigned.url}?allow-unsigned=true&priority=30`], publicKeys: [key.publicKey] });
    running.push(ncps);
    assert.match(ncps.logs(), /allow-unsigned is set, so its narinfos are served even when no configured public key signed them/);
    await substituteAndVerify(closure, { substituter: ncps.url, trustedPublicKey: await ncps.publicKey(), ncps });
    // Even so, a signature under a configured key's name that does not verify means a changed narinfo.
    const r = await request(ncps.url, `/${hashPart(forged.top)}.narinfo`, { timeoutMs: 20_000 });
    assert.equal(r.status, 404, `forged narinfo: ${r.status} ${r.text}`);
    assert.match(ncps.logs(), /signature under a trusted key name that does not verify/);
    const other = await request(ncps.url, `/${hashPart(forged.paths.find((p) => p !== forged.top)!)}.narinfo`, { timeoutMs: 20_000 });
    assert.equal(other.status, 200, 'the unsigned rest of that closure is served');
  });
});
