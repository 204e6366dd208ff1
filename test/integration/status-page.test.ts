// The status page at `/`: browsers get a self-contained HTML page (hit ratio, bytes from the cache
// and from upstream, storage against the limit, upstreams, recent misses, plots), everything else
// keeps the JSON index; the page needs the read token when one is set. Rendered by a real headless
// Chromium at a phone's width, and the screenshot is looked at: not blank, the plot colours there.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { encodeNix32, generateSecretKey, narInfoFingerprint, parseNarInfo, signFingerprint } from '../../src/nix';
import { COLOURS } from '../../src/server/routes/status-page';
import { request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { countColour, decodePng, distinctColours } from '../helpers/png';
import { cleanupTempDirs, makeTempDir, run, sleep } from '../helpers/proc';
import { startStaticCache, type StaticCache } from '../helpers/static-cache';

const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz';
const key = generateSecretKey('status-upstream-1');
const BROWSER_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

function addPath(dir: string, nar: Buffer): { hash: string; narName: string; url: string } {
  const hash = Array.from(randomBytes(32), (b) => NIX32[b % 32]).join('');
  const digest = encodeNix32(createHash('sha256').update(nar).digest());
  mkdirSync(path.join(dir, 'nar'), { recursive: true });
  writeFileSync(path.join(dir, 'nar', `${digest}.nar`), nar);
  const text = `StorePath: /nix/store/${hash}-status\nURL: nar/${digest}.nar\nCompression: none\nFileHash: sha256:${digest}\nFileSize: ${nar.length}\nNarHash: sha256:${digest}\nNarSize: ${nar.length}\nReferences: \n`;
  writeFileSync(path.join(dir, `${hash}.narinfo`), `${text}Sig: ${signFingerprint(key, narInfoFingerprint(parseNarInfo(text)))}\n`);
  return { hash, narName: `${digest}.nar`, url: `/nar/${digest}.nar` };
}

describe('status page', { timeout: 180_000 }, () => {
  let dir: string;
  let upstream: StaticCache;
  let ncps: NcpsProcess;
  let absent: string;

  before(async () => {
    dir = await makeTempDir('status-upstream');
    writeFileSync(path.join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\nPriority: 40\n');
    upstream = await startStaticCache(dir);
    ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [key.publicKey.text], extraArgs: ['--cache-max-size=1G'] });
    // Some traffic: misses, hits, NAR bytes from upstream and from the cache, a path no upstream has.
    for (const size of [200_000, 400_000]) {
      const item = addPath(dir, randomBytes(size));
      assert.equal((await request(ncps.url, `/${item.hash}.narinfo`)).status, 200);
      assert.equal((await request(ncps.url, `/${item.hash}.narinfo`)).status, 200);
      const stored = path.join(ncps.dataDir, 'store', 'nar', item.narName[0]!, item.narName.slice(0, 2), item.narName);
      while (!existsSync(stored)) await sleep(50);
      for (let i = 0; i < 3; i++) assert.equal((await request(ncps.url, item.url)).status, 200);
    }
    absent = Array.from(randomBytes(32), (b) => NIX32[b % 32]).join('');
    assert.equal((await request(ncps.url, `/${absent}.narinfo`)).status, 404);
  });

  after(async () => {
    await ncps?.stop();
    await upstream?.stop();
    await cleanupTempDirs();
  });

  it('keeps the JSON index for every client that does not prefer HTML', async () => {
    for (const accept of [undefined, '*/*', 'application/json', 'application/json, text/html;q=0.5', 'text/plain']) {
      const response = await request(ncps.url, '/', accept ? { headers: { accept } } : {});
      assert.equal(response.status, 200);
      assert.match(String(response.headers['content-type']), /^application\/json/, `Accept: ${accept}`);
      assert.deepEqual(Object.keys(JSON.parse(response.text) as object).sort(), ['hostname', 'publicKey']);
    }
  });

  it('gives browsers one self-contained page with the figures', async () => {
    const response = await request(ncps.url, '/', { headers: { accept: BROWSER_ACCEPT } });
    assert.equal(response.status, 200);
    assert.match(String(response.headers['content-type']), /^text\/html/);
    assert.match(String(response.headers.vary), /Accept/i);
    const html = response.text;
    assert.match(html, /<meta name="viewport" content="width=device-width/);
    assert.doesNotMatch(html, /<script|<link|\bsrc=|url\(/i, 'no script, no external assets');
    assert.match(html, /narinfo hit ratio<\/h3><div class="big">40%/, '2 hits of 5 narinfo lookups');
    assert.match(html, /from cache, .* from upstream/);
    assert.match(html, /of 1\.0 GiB/);
    assert.match(html, /1 \/ 1 healthy/);
    assert.ok(html.includes(`/${absent}.narinfo`), 'the recent misses list the absent path');
    assert.ok(html.includes(upstream.url), 'the upstream is listed');
  });

  it('shows the whole instance with several workers, whichever worker answers', async () => {
    const workers = await startNcps({ upstreams: [upstream.url], publicKeys: [key.publicKey.text], extraArgs: ['--server-workers=2'] });
    try {
      const item = addPath(dir, randomBytes(1_000));
      // New connections each time: the kernel spreads them over the workers.
      for (let i = 0; i < 10; i++) assert.equal((await request(workers.url, `/${item.hash}.narinfo`)).status, 200);
      for (let i = 0; i < 4; i++) {
        const page = await request(workers.url, '/', { headers: { accept: BROWSER_ACCEPT } });
        assert.match(page.text, /9 hits, 1 misses since start/, 'every worker shows the sum of all of them');
      }
    } finally {
      await workers.stop();
    }
  });

  it('needs the read token when one is set (the JSON index does not)', async () => {
    const guarded = await startNcps({ upstreams: [upstream.url], publicKeys: [key.publicKey.text], extraArgs: ['--cache-get-token=s3cret'] });
    try {
      assert.equal((await request(guarded.url, '/')).status, 200);
      const refused = await request(guarded.url, '/', { headers: { accept: BROWSER_ACCEPT } });
      assert.equal(refused.status, 401);
      assert.match(String(refused.headers['www-authenticate']), /^Basic /);
      const basic = `Basic ${Buffer.from('me:s3cret').toString('base64')}`;
      const shown = await request(guarded.url, '/', { headers: { accept: BROWSER_ACCEPT, authorization: basic } });
      assert.equal(shown.status, 200);
      assert.match(shown.text, /<title>ncps · ncps-test<\/title>/);
    } finally {
      await guarded.stop();
    }
  });

  it('renders in headless Chromium at a phone\'s width, with the plots drawn', { skip: existsSync(CHROMIUM) ? false : `no ${CHROMIUM}` }, async () => {
    const out = await makeTempDir('status-shot');
    const shot = path.join(out, 'status.png');
    const result = await run(
      CHROMIUM,
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--hide-scrollbars',
        `--user-data-dir=${path.join(out, 'profile')}`,
        `--screenshot=${shot}`,
        '--window-size=412,1600',
        `${ncps.url}/`,
      ],
      { timeoutMs: 90_000, env: { ...process.env, HOME: out } },
    );
    assert.ok(existsSync(shot), `no screenshot: ${result.stdout}\n${result.stderr}`);
    if (process.env.NCPS_TEST_KEEP_SCREENSHOT) writeFileSync(process.env.NCPS_TEST_KEEP_SCREENSHOT, readFileSync(shot));
    const image = decodePng(readFileSync(shot));
    assert.equal(image.width, 412);
    assert.ok(distinctColours(image) > 200, `the page is not blank (${distinctColours(image)} colours)`);
    // The plots: hits and bytes from the cache (green), misses and bytes from upstream (orange),
    // the store size (blue line). Thin elements, so counts are modest but far from zero.
    const green = countColour(image, COLOURS.cache);
    const orange = countColour(image, COLOURS.upstream);
    const blue = countColour(image, COLOURS.store);
    assert.ok(green > 200, `green pixels: ${green}`);
    assert.ok(orange > 200, `orange pixels: ${orange}`);
    assert.ok(blue > 100, `blue pixels: ${blue}`);
  });
});
