// The hot path (src/server/hot-path.ts) answers narinfos ncps holds (memoised a moment ago, or in
// the database) before fastify sees the request. It must answer exactly as the fastify route does, count and log alike, and leave
// everything it is unsure about (tokens, query strings, other routes) to fastify. A request with
// a query string always goes through fastify, so it is the reference the hot path is compared to.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MEMO_TTL_MS } from '../../src/cache/narinfo-memo';
import { encodeNix32, generateSecretKey, narInfoFingerprint, parseNarInfo, signFingerprint } from '../../src/nix';
import { request, type HttpResponse } from '../helpers/http';
import { randomStoreHash, writeSyntheticLegacyNarInfos } from '../helpers/legacy';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir } from '../helpers/proc';
import { startStaticCache, type StaticCache } from '../helpers/static-cache';

const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz';
const key = generateSecretKey('hot-path-upstream-1');
const READ_TOKEN = 'hot-read-7Qx';

function addPath(dir: string): string {
  const nar = randomBytes(1000);
  const hash = Array.from(randomBytes(32), (b) => NIX32[b % 32]).join('');
  const digest = encodeNix32(createHash('sha256').update(nar).digest());
  mkdirSync(path.join(dir, 'nar'), { recursive: true });
  writeFileSync(path.join(dir, 'nar', `${digest}.nar`), nar);
  const text = `StorePath: /nix/store/${hash}-hot\nURL: nar/${digest}.nar\nCompression: none\nFileHash: sha256:${digest}\nFileSize: ${nar.length}\nNarHash: sha256:${digest}\nNarSize: ${nar.length}\nReferences: \n`;
  writeFileSync(path.join(dir, `${hash}.narinfo`), `${text}Sig: ${signFingerprint(key, narInfoFingerprint(parseNarInfo(text)))}\n`);
  return hash;
}

/** Headers that legitimately differ between two answers. */
function comparable(res: HttpResponse): Record<string, unknown> {
  const { date: _date, ...rest } = res.headers;
  return rest;
}

/** ncps_narinfo_served_total for hits, from /metrics. */
async function narInfoHits(ncps: NcpsProcess, headers: Record<string, string> = {}): Promise<number> {
  const text = (await request(ncps.url, '/metrics', { headers })).text;
  const line = text.split('\n').find((l) => l.startsWith('ncps_narinfo_served_total{result="hit",status="success",source="database"}'));
  return Number(line?.split(' ').pop() ?? 0);
}

/** Locks taken to look for a legacy narinfo file (kind "migrate"), from /metrics. */
async function legacyLookups(ncps: NcpsProcess): Promise<number> {
  const text = (await request(ncps.url, '/metrics')).text;
  return text
    .split('\n')
    .filter((l) => l.startsWith('ncps_lock_acquisitions_total{') && l.includes('kind="migrate"'))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

describe('narinfo hot path', { timeout: 120_000 }, () => {
  let dir: string;
  let upstream: StaticCache;
  let open: NcpsProcess;
  let guarded: NcpsProcess;

  before(async () => {
    dir = await makeTempDir('hot-path-upstream');
    writeFileSync(path.join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
    upstream = await startStaticCache(dir);
    const common = { upstreams: [upstream.url], publicKeys: [key.publicKey.text] };
    open = await startNcps({ ...common, extraArgs: ['--prometheus-enabled'] });
    guarded = await startNcps({ ...common, extraArgs: ['--prometheus-enabled', `--cache-get-token=${READ_TOKEN}`] });
  });

  after(async () => {
    await open?.stop();
    await guarded?.stop();
    await upstream?.stop();
    await cleanupTempDirs();
  });

  it('answers GET and HEAD exactly as the fastify route does, and counts each hit', async () => {
    const hash = addPath(dir);
    assert.equal((await request(open.url, `/${hash}.narinfo`)).status, 200, 'fetched from upstream');
    const hitsBefore = await narInfoHits(open);
    for (const method of ['GET', 'HEAD']) {
      const viaFastify = await request(open.url, `/${hash}.narinfo?reference`, { method });
      const hot = await request(open.url, `/${hash}.narinfo`, { method });
      assert.equal(hot.status, 200);
      assert.equal(hot.headers['x-cache'], 'HIT');
      assert.deepEqual(comparable(hot), comparable(viaFastify), `${method} headers`);
      assert.ok(hot.body.equals(viaFastify.body), `${method} body`);
    }
    assert.match((await request(open.url, `/${hash}.narinfo`)).text, new RegExp(`^StorePath: /nix/store/${hash}-hot$`, 'm'));
    // Once the memo has let it go, from the database (still the hot path), answered alike too.
    await new Promise((resolve) => setTimeout(resolve, MEMO_TTL_MS + 200));
    const fromDatabase = await request(open.url, `/${hash}.narinfo`);
    const reference = await request(open.url, `/${hash}.narinfo?reference`);
    assert.deepEqual(comparable(fromDatabase), comparable(reference));
    assert.ok(fromDatabase.body.equals(reference.body));
    // GETs and HEADs are counted (as by the Go ncps): two GETs and a HEAD via fastify's
    // reference, three GETs and a HEAD on the hot path.
    assert.equal((await narInfoHits(open)) - hitsBefore, 7);
    assert.equal(upstream.count('GET', `/${hash}.narinfo`), 1, 'later answers came from ncps');
  });

  it('looks a narinfo it does not hold up once: fastify goes on to upstream without looking again', async () => {
    // With a narinfo file of an older ncps in storage, every lookup also looks for such a file,
    // under a lock /metrics counts.
    const dataDir = await makeTempDir('hot-path-legacy');
    await writeSyntheticLegacyNarInfos(dataDir, 1);
    const legacy = await startNcps({ upstreams: [upstream.url], publicKeys: [key.publicKey.text], dataDir, extraArgs: ['--prometheus-enabled'] });
    try {
      const before = await legacyLookups(legacy);
      const absent = randomStoreHash();
      assert.equal((await request(legacy.url, `/${absent}.narinfo`)).status, 404);
      assert.equal(upstream.count('GET', `/${absent}.narinfo`), 1, 'asked upstream');
      assert.equal((await legacyLookups(legacy)) - before, 1, 'hot path and fastify looked up once between them');
      // The reference: fastify alone (a query string) looks up once as well.
      assert.equal((await request(legacy.url, `/${randomStoreHash()}.narinfo?reference`)).status, 404);
      assert.equal((await legacyLookups(legacy)) - before, 2);
    } finally {
      await legacy.stop();
    }
  });

  it('leaves requests it is not sure about to fastify: tokens, unknown paths', async () => {
    const hash = addPath(dir);
    const auth = { authorization: `Bearer ${READ_TOKEN}` };
    assert.equal((await request(guarded.url, `/${hash}.narinfo`, { headers: auth })).status, 200);
    // Memoised now; without the token or with a wrong one the answer is still fastify's 401.
    const missing = await request(guarded.url, `/${hash}.narinfo`);
    assert.equal(missing.status, 401);
    assert.equal(missing.text, 'authentication required\n');
    const wrong = await request(guarded.url, `/${hash}.narinfo`, { headers: { authorization: 'Bearer nope' } });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.text, 'invalid token\n');
    const basic = { authorization: `Basic ${Buffer.from(`nix:${READ_TOKEN}`).toString('base64')}` };
    assert.equal((await request(guarded.url, `/${hash}.narinfo`, { headers: basic })).status, 200, 'netrc-style Basic auth');
    // Not a store path hash: fastify's 400, whatever the hot path matched on.
    assert.equal((await request(open.url, `/${'e'.repeat(32)}.narinfo`)).status, 400);
    assert.equal((await request(open.url, `/upload/${hash}.narinfo`)).status, 404, 'uploads area is not the pull-through cache');
  });
});
