// Realisations through ncps: an upstream realisation that Nix signed is served with ncps's own
// signature added; one that does not verify is not served; uploads are checked the same way.

import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parsePublicKey, parseRealisation, realisationVerifies } from '../../src/nix';
import { request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir } from '../helpers/proc';
import { startStaticCache, type StaticCache } from '../helpers/static-cache';

// A realisation Nix 2.8 wrote and signed with the key `up-1` (see test/unit/realisation.test.ts).
const fixtures = path.join(__dirname, '../../../test/unit/fixtures');
const original = readFileSync(path.join(fixtures, 'realisation-ca-test.doi'), 'utf8').trim();
const upstreamKey = readFileSync(path.join(fixtures, 'realisation-up-1.public'), 'utf8').trim();
const id = parseRealisation(original).id;

describe('realisations', { timeout: 60_000 }, () => {
  let upstream: StaticCache;
  let ncps: NcpsProcess;
  const tamperedId = `sha256:${'1'.repeat(64)}!out`;

  before(async () => {
    const dir = await makeTempDir('realisations-upstream');
    mkdirSync(path.join(dir, 'realisations'));
    writeFileSync(path.join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
    writeFileSync(path.join(dir, 'realisations', `${id}.doi`), original);
    // Signed for another id: the signature cannot verify for this one.
    writeFileSync(path.join(dir, 'realisations', `${tamperedId}.doi`), original.replace(id, tamperedId));
    upstream = await startStaticCache(dir);
    ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [upstreamKey], extraArgs: ['--cache-allow-put-verb'] });
  });

  after(async () => {
    await ncps?.stop();
    await upstream?.stop();
    await cleanupTempDirs();
  });

  it('serves a verified upstream realisation with both signatures, and keeps it', async () => {
    const res = await request(ncps.url, `/realisations/${id}.doi`);
    assert.equal(res.status, 200);
    const served = parseRealisation(res.text);
    assert.equal(served.signatures.length, 2);
    assert.ok(realisationVerifies(served, [parsePublicKey(upstreamKey)]), 'the upstream signature still verifies');
    assert.ok(realisationVerifies(served, [parsePublicKey(await ncps.publicKey())]), 'ncps signed it');
    await upstream.stop();
    assert.equal((await request(ncps.url, `/realisations/${id}.doi`)).status, 200, 'served from storage afterwards');
  });

  it('refuses realisations that do not verify, and malformed names', async () => {
    assert.equal((await request(ncps.url, `/realisations/${tamperedId}.doi`)).status, 404);
    assert.equal((await request(ncps.url, '/realisations/sha256:abc!out.doi')).status, 400);
    assert.equal((await request(ncps.url, `/realisations/${encodeURIComponent('../../etc/passwd')}`)).status, 400);
  });

  it('accepts uploads under /upload and serves them there', async () => {
    const uploadedId = `sha256:${'2'.repeat(64)}!out`;
    const body = original.replace(id, uploadedId);
    const put = await request(ncps.url, `/upload/realisations/${uploadedId}.doi`, { method: 'PUT', body, headers: { 'content-type': 'application/json' } });
    assert.equal(put.status, 204, put.text);
    const got = await request(ncps.url, `/upload/realisations/${uploadedId}.doi`);
    assert.equal(got.status, 200);
    assert.ok(realisationVerifies(parseRealisation(got.text), [parsePublicKey(await ncps.publicKey())]));
    const wrong = await request(ncps.url, `/upload/realisations/${uploadedId}.doi`.replace('2222', '3333'), { method: 'PUT', body });
    assert.equal(wrong.status, 400, 'the id in the body must match the URL');
  });
});
