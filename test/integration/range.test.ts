// Byte ranges and caching headers on NARs, from storage and from a download still in flight, so
// that a client resuming an interrupted download does not start again from zero.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { encodeNix32, generateSecretKey, narInfoFingerprint, parseNarInfo, signFingerprint } from '../../src/nix';
import { request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir } from '../helpers/proc';
import { startStaticCache, type StaticCache } from '../helpers/static-cache';

const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz';
const key = generateSecretKey('range-upstream-1');

function addPath(dir: string, nar: Buffer): { hash: string; url: string } {
  const hash = Array.from(randomBytes(32), (b) => NIX32[b % 32]).join('');
  const digest = encodeNix32(createHash('sha256').update(nar).digest());
  mkdirSync(path.join(dir, 'nar'), { recursive: true });
  writeFileSync(path.join(dir, 'nar', `${digest}.nar`), nar);
  const text = `StorePath: /nix/store/${hash}-range\nURL: nar/${digest}.nar\nCompression: none\nFileHash: sha256:${digest}\nFileSize: ${nar.length}\nNarHash: sha256:${digest}\nNarSize: ${nar.length}\nReferences: \n`;
  writeFileSync(path.join(dir, `${hash}.narinfo`), `${text}Sig: ${signFingerprint(key, narInfoFingerprint(parseNarInfo(text)))}\n`);
  return { hash, url: `/nar/${digest}.nar` };
}

describe('ranges and caching headers', { timeout: 120_000 }, () => {
  let dir: string;
  let upstream: StaticCache;
  let ncps: NcpsProcess;

  before(async () => {
    dir = await makeTempDir('range-upstream');
    writeFileSync(path.join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
    upstream = await startStaticCache(dir, { bytesPerSecond: 4 * 1024 * 1024 });
    ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [key.publicKey.text] });
  });

  after(async () => {
    await ncps?.stop();
    await upstream?.stop();
    await cleanupTempDirs();
  });

  it('serves ranges of a NAR while it is still downloading', async () => {
    const nar = randomBytes(8 * 1024 * 1024);
    const item = addPath(dir, nar);
    assert.equal((await request(ncps.url, `/${item.hash}.narinfo`)).status, 200);
    const tail = await request(ncps.url, item.url, { headers: { range: 'bytes=6000000-' } });
    assert.equal(tail.status, 206);
    assert.equal(tail.headers['content-range'], `bytes 6000000-${nar.length - 1}/${nar.length}`);
    assert.ok(tail.body.equals(nar.subarray(6000000)));
    assert.equal(upstream.count('GET', item.url), 1, 'the range joined the one download');
  });

  it('serves ranges, suffixes and 416 from storage, with immutable caching headers', async () => {
    const nar = randomBytes(300_000);
    const item = addPath(dir, nar);
    assert.equal((await request(ncps.url, `/${item.hash}.narinfo`)).status, 200);
    const full = await request(ncps.url, item.url);
    assert.equal(full.status, 200);
    assert.ok(full.body.equals(nar));
    assert.equal(full.headers['accept-ranges'], 'bytes');
    assert.match(String(full.headers['cache-control']), /immutable/);
    const etag = String(full.headers.etag);
    assert.match(etag, /^"[0-9a-z]{52}"$/);

    const middle = await request(ncps.url, item.url, { headers: { range: 'bytes=1000-1999' } });
    assert.equal(middle.status, 206);
    assert.equal(middle.headers['content-length'], '1000');
    assert.equal(middle.headers['content-range'], `bytes 1000-1999/${nar.length}`);
    assert.ok(middle.body.equals(nar.subarray(1000, 2000)));

    const suffix = await request(ncps.url, item.url, { headers: { range: 'bytes=-10' } });
    assert.equal(suffix.status, 206);
    assert.ok(suffix.body.equals(nar.subarray(nar.length - 10)));

    const beyond = await request(ncps.url, item.url, { headers: { range: `bytes=${nar.length}-` } });
    assert.equal(beyond.status, 416);
    assert.equal(beyond.headers['content-range'], `bytes */${nar.length}`);

    const notModified = await request(ncps.url, item.url, { headers: { 'if-none-match': etag } });
    assert.equal(notModified.status, 304);
    assert.equal(notModified.body.length, 0);

    const head = await request(ncps.url, item.url, { method: 'HEAD' });
    assert.equal(head.headers['content-length'], String(nar.length));
    assert.equal(head.body.length, 0);
  });

  it('marks narinfos and absences as short-lived', async () => {
    const item = addPath(dir, randomBytes(1000));
    const narinfo = await request(ncps.url, `/${item.hash}.narinfo`);
    assert.match(String(narinfo.headers['cache-control']), /max-age=300/);
    const missing = await request(ncps.url, '/00000000000000000000000000000000.narinfo');
    assert.equal(missing.status, 404);
    assert.match(String(missing.headers['cache-control']), /max-age=60/);
  });
});
