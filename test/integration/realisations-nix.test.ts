// Realisations with the real Nix client (Nix 2.8, experimental ca-derivations): a client that may
// not build (`--max-jobs 0`) gets a content-addressed derivation's output through ncps only when
// ncps serves the realisation, pulled from a signed upstream or uploaded with `nix copy`.

import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parsePublicKey, parseRealisation, realisationVerifies } from '../../src/nix';
import { teardown } from '../helpers/fixture';
import { request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import {
  buildCaDerivation,
  copyCaBuild,
  generateKeyPair,
  makeTempDir,
  nixAvailable,
  substituteCaBuild,
  verifyStorePath,
  type CaBuild,
  type KeyPair,
  type SubstituteResult,
} from '../helpers/nix';
import { startStaticCache, type StaticCache } from '../helpers/static-cache';

const skip = nixAvailable() ? false : 'nix-bin not installed';
const TIMEOUT = 180_000;

function diag(r: SubstituteResult, ncps: NcpsProcess): string {
  return `nix exit ${r.code}\n--- nix stderr\n${r.stderr.slice(-6000)}\n--- ncps logs (tail)\n${ncps.logs().slice(-4000)}`;
}

/** The ids of the realisations kept in a binary cache directory or an ncps storage tree. */
async function realisationFiles(dir: string): Promise<string[]> {
  const files: string[] = await readdir(dir, { recursive: true, encoding: 'utf8' }).catch(() => []);
  return files.filter((f) => f.endsWith('.doi')).map((f) => path.basename(f, '.doi'));
}

describe('realisations with the real Nix client', { skip, timeout: 4 * TIMEOUT }, () => {
  let key: KeyPair;
  let build: CaBuild;
  let upstream: StaticCache | undefined;
  let puller: NcpsProcess | undefined;
  let pushed: NcpsProcess | undefined;

  before(
    async () => {
      key = await generateKeyPair('ca-builder-1', await makeTempDir('ca-keys'));
      build = await buildCaDerivation({ label: 'ncps-ca-test', secretKeyFile: key.secretKeyFile });
      const cacheDir = await makeTempDir('ca-upstream');
      await copyCaBuild(build, `file://${cacheDir}?secret-key=${key.secretKeyFile}&compression=xz`);
      assert.equal((await realisationFiles(path.join(cacheDir, 'realisations'))).length, 1, 'nix copy wrote the realisation');
      upstream = await startStaticCache(cacheDir);
      puller = await startNcps({ upstreams: [upstream.url], publicKeys: [key.publicKey] });
      pushed = await startNcps({ upstreams: [upstream.url], publicKeys: [], extraArgs: ['--cache-allow-put-verb'] });
    },
    { timeout: TIMEOUT },
  );

  after(() => teardown(puller, pushed, upstream), { timeout: TIMEOUT });

  it('pull-through: the client substitutes the output by its realisation, which ncps signed', { timeout: TIMEOUT }, async () => {
    const ncpsKey = await puller!.publicKey();
    const r = await substituteCaBuild(build, { substituter: puller!.url, trustedPublicKey: ncpsKey });
    assert.equal(r.code, 0, diag(r, puller!));
    assert.ok(await verifyStorePath(r.storeRoot, build.outPath), `${build.outPath} is valid in the client's store`);
    const [id] = await realisationFiles(path.join(puller!.dataDir, 'store', 'realisations'));
    assert.ok(id, 'ncps kept the realisation');
    const served = parseRealisation((await request(puller!.url, `/realisations/sha256:${id}.doi`)).text);
    assert.equal(served.outPath, path.basename(build.outPath));
    assert.ok(realisationVerifies(served, [parsePublicKey(ncpsKey)]), 'signed by ncps');
    assert.ok(realisationVerifies(served, [parsePublicKey(key.publicKey)]), 'the builder signature is kept');
  });

  it('without a realisation it trusts, ncps serves none and the client cannot get the output', { timeout: TIMEOUT }, async () => {
    // `pushed` trusts no upstream key: the upstream realisation is refused.
    const r = await substituteCaBuild(build, { substituter: pushed!.url, trustedPublicKey: await pushed!.publicKey() });
    assert.notEqual(r.code, 0, 'building is forbidden, so only a served realisation could have made this succeed');
    assert.deepEqual(await realisationFiles(path.join(pushed!.dataDir, 'store', 'realisations')), []);
  });

  it('upload: nix copy to /upload sends the realisation, and clients substitute by it', { timeout: TIMEOUT }, async () => {
    await upstream!.stop();
    upstream = undefined;
    await copyCaBuild(build, `${pushed!.url}/upload`);
    const r = await substituteCaBuild(build, { substituter: pushed!.url, trustedPublicKey: await pushed!.publicKey() });
    assert.equal(r.code, 0, diag(r, pushed!));
    assert.ok(await verifyStorePath(r.storeRoot, build.outPath));
  });
});
