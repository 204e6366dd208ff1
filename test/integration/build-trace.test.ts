// Build trace entries (Nix >= 2.35) through ncps, over HTTP as that Nix asks for them: an upstream
// entry signed by a trusted key is served with ncps's signature added; unsigned, wrongly signed or
// malformed ones are not; uploads are checked the same way and kept.

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  buildTraceVerifies,
  formatBuildTraceValue,
  generateSecretKey,
  parseBuildTraceValue,
  parsePublicKey,
  signBuildTrace,
  type BuildTraceKey,
} from '../../src/nix';
import { request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir } from '../helpers/proc';
import { startStaticCache, type StaticCache } from '../helpers/static-cache';

const DRV = '0c6kzph7l0dcbqmjap64iqx5hw33y1ms-producer.drv';
const OUT = 'q3wx1gab2ysnk5nyvyyg56ana2v4r2ar-produced';

function entry(key: BuildTraceKey, outPath: string, signer?: ReturnType<typeof generateSecretKey>): string {
  const value = { outPath, signatures: [] as string[] };
  return formatBuildTraceValue(signer ? signBuildTrace(key, value, signer) : value);
}

describe('build trace entries', { timeout: 60_000 }, () => {
  const upstreamKey = generateSecretKey('upstream-1');
  const strangerKey = generateSecretKey('upstream-1'); // same name, another key
  const signed: BuildTraceKey = { drvPath: DRV, outputName: 'out' };
  const forged: BuildTraceKey = { drvPath: DRV, outputName: 'dev' };
  const unsigned: BuildTraceKey = { drvPath: DRV, outputName: 'doc' };
  const garbage: BuildTraceKey = { drvPath: DRV, outputName: 'lib' };
  let upstream: StaticCache;
  let ncps: NcpsProcess;

  before(async () => {
    const dir = await makeTempDir('build-trace-upstream');
    mkdirSync(path.join(dir, 'build-trace-v2', DRV), { recursive: true });
    writeFileSync(path.join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
    const put = (key: BuildTraceKey, text: string) => writeFileSync(path.join(dir, 'build-trace-v2', DRV, `${key.outputName}.doi`), text);
    put(signed, entry(signed, OUT, upstreamKey));
    put(forged, entry(forged, OUT, strangerKey));
    put(unsigned, entry(unsigned, OUT));
    put(garbage, '{"outPath": 42}');
    upstream = await startStaticCache(dir);
    ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [upstreamKey.publicKey.text], extraArgs: ['--cache-allow-put-verb'] });
  });

  after(async () => {
    await ncps?.stop();
    await upstream?.stop();
    await cleanupTempDirs();
  });

  it('serves a signed upstream entry with both signatures, as JSON, and keeps it', async () => {
    const head = await request(ncps.url, `/build-trace-v2/${DRV}/out.doi`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.text, '');
    const res = await request(ncps.url, `/build-trace-v2/${DRV}/out.doi`);
    assert.equal(res.status, 200);
    assert.match(String(res.headers['content-type']), /^application\/json/);
    assert.equal(res.headers['content-length'], head.headers['content-length'], 'HEAD announces the GET body');
    const value = parseBuildTraceValue(res.text);
    assert.equal(value.outPath, OUT);
    assert.equal(value.signatures.length, 2);
    assert.ok(buildTraceVerifies(signed, value, [upstreamKey.publicKey]), 'the upstream signature still verifies');
    assert.ok(buildTraceVerifies(signed, value, [parsePublicKey(await ncps.publicKey())]), 'ncps signed it');
    assert.equal(buildTraceVerifies({ ...signed, outputName: 'dev' }, value, [parsePublicKey(await ncps.publicKey())]), false);
    await upstream.stop();
    const again = await request(ncps.url, `/build-trace-v2/${DRV}/out.doi`);
    assert.equal(again.status, 200, 'served from storage with the upstream gone');
    assert.equal(again.text, res.text);
  });

  it('does not serve entries that a trusted key did not sign, or that do not parse', async () => {
    for (const key of [forged, unsigned, garbage]) {
      assert.equal((await request(ncps.url, `/build-trace-v2/${DRV}/${key.outputName}.doi`)).status, 404, key.outputName);
    }
    assert.equal((await request(ncps.url, `/build-trace-v2/${DRV}/missing.doi`)).status, 404);
  });

  it('answers malformed names with 400', async () => {
    for (const bad of [
      `/build-trace-v2/${DRV}/out`,
      `/build-trace-v2/${DRV.replace('.drv', '')}/out.doi`,
      `/build-trace-v2/${DRV}/.hidden.doi`,
      `/build-trace-v2/${encodeURIComponent('../../etc')}/passwd.doi`,
      `/build-trace-v2/${DRV}/${encodeURIComponent('../x')}.doi`,
    ]) {
      assert.equal((await request(ncps.url, bad)).status, 400, bad);
    }
  });

  it('accepts uploads under /upload, merges signatures for the same output, and serves them there', async () => {
    const key: BuildTraceKey = { drvPath: DRV, outputName: 'bin' };
    const builder = generateSecretKey('builder-1');
    const url = `/upload/build-trace-v2/${DRV}/bin.doi`;
    const put = await request(ncps.url, url, { method: 'PUT', body: entry(key, OUT, builder), headers: { 'content-type': 'application/json' } });
    assert.equal(put.status, 204, put.text);
    const ncpsKey = parsePublicKey(await ncps.publicKey());
    const first = parseBuildTraceValue((await request(ncps.url, url)).text);
    assert.ok(buildTraceVerifies(key, first, [ncpsKey]));
    assert.ok(buildTraceVerifies(key, first, [builder.publicKey]));

    // A second builder uploads the same result: both builders' signatures are kept.
    const other = generateSecretKey('builder-2');
    assert.equal((await request(ncps.url, url, { method: 'PUT', body: entry(key, OUT, other) })).status, 204);
    const merged = parseBuildTraceValue((await request(ncps.url, `/build-trace-v2/${DRV}/bin.doi`)).text);
    assert.deepEqual(
      [builder, other].map((k) => buildTraceVerifies(key, merged, [k.publicKey])),
      [true, true],
    );
    assert.equal(merged.signatures.length, 3);

    assert.equal((await request(ncps.url, url, { method: 'PUT', body: '{"outPath":"nope"}' })).status, 400);
    assert.equal((await request(ncps.url, `/upload/build-trace-v2/${DRV}/bin`, { method: 'PUT', body: entry(key, OUT) })).status, 400);
  });
});

describe('build trace uploads with trusted upload keys', { timeout: 60_000 }, () => {
  let ncps: NcpsProcess;
  const trusted = generateSecretKey('ci-1');
  const key: BuildTraceKey = { drvPath: DRV, outputName: 'out' };

  before(async () => {
    const dir = await makeTempDir('build-trace-upstream-2');
    writeFileSync(path.join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
    const upstream = await startStaticCache(dir);
    ncps = await startNcps({
      upstreams: [upstream.url],
      publicKeys: [],
      extraArgs: ['--cache-allow-put-verb', '--cache-require-trusted-signature', `--cache-trusted-upload-key=${trusted.publicKey.text}`],
    });
    await upstream.stop();
  });

  after(async () => {
    await ncps?.stop();
    await cleanupTempDirs();
  });

  it('refuses an entry no trusted upload key signed (403) and accepts a signed one', async () => {
    const url = `/upload/build-trace-v2/${DRV}/out.doi`;
    assert.equal((await request(ncps.url, url, { method: 'PUT', body: entry(key, OUT) })).status, 403);
    assert.equal((await request(ncps.url, url, { method: 'PUT', body: entry(key, OUT, generateSecretKey('ci-1')) })).status, 403);
    assert.equal((await request(ncps.url, `/build-trace-v2/${DRV}/out.doi`)).status, 404, 'nothing was stored');
    assert.equal((await request(ncps.url, url, { method: 'PUT', body: entry(key, OUT, trusted) })).status, 204);
    assert.equal((await request(ncps.url, `/build-trace-v2/${DRV}/out.doi`)).status, 200);
  });
});
