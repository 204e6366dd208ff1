// Storage that runs full (a small tmpfs mounted for the test). A NAR that does not fit, and every
// NAR while the disk is full, is streamed from upstream to the client without being kept — the
// real Nix client substitutes through it — and ncps says so in its log, its metrics and /readyz.
// A download that runs out of space midway fails that one transfer, and the next request passes
// through. Uploads answer 507 and leave no partial file. Once space is back, NARs are kept again.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, openSync, statfsSync, writeSync } from 'node:fs';
import { readFile, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { signedBinaryCache, substituteAndVerify, teardown } from '../helpers/fixture';
import { rewriteNarinfo, startFaultUpstream, transformFile, type FaultUpstream } from '../helpers/fault-upstream';
import { downloadHashed, request } from '../helpers/http';
import { parseNarinfo } from '../helpers/narinfo';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { buildClosure, hashPart, makeBinaryCache, makeTempDir, nixAvailable, sleep, type Closure } from '../helpers/nix';
import { mountTmpfs, tmpfsSkipReason, type Tmpfs } from '../helpers/tmpfs';

const MiB = 1 << 20;
const skip = !nixAvailable() ? 'nix-bin not installed' : tmpfsSkipReason();

const freeBytes = (dir: string) => {
  const fs = statfsSync(dir);
  return fs.bavail * fs.bsize;
};

/** Writes zeros into `file` until only `leave` bytes are free (0: until the file system is full). */
function fill(file: string, leave: number): void {
  const fd = openSync(file, 'a');
  const block = Buffer.alloc(MiB);
  try {
    for (;;) {
      const free = freeBytes(path.dirname(file));
      if (free <= leave) return;
      try {
        writeSync(fd, block, 0, Math.min(block.length, free - leave));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOSPC') return;
        throw error;
      }
    }
  } finally {
    closeSync(fd);
  }
}

describe('a full disk', { skip, timeout: 420_000 }, () => {
  let tmpfs: Tmpfs;
  let upstream: FaultUpstream;
  let ncps: NcpsProcess;
  let big: Closure; // its leaf does not fit
  let midway: Closure; // its leaf runs out of space while downloading
  let small: Closure; // fits, but the disk is full
  let later: Closure; // after space is back
  let cacheDir: string;

  const storeTmp = () => path.join(tmpfs.dir, 'store', 'tmp');
  const parts = async () => (await readdir(storeTmp()).catch(() => [])).filter((f) => f.endsWith('.part'));
  const storedNars = async () => (await readdir(path.join(tmpfs.dir, 'store', 'nar'), { recursive: true }).catch(() => [])).filter((f) => String(f).includes('.nar'));
  const metric = async (name: string) => {
    const text = (await request(ncps.url, '/metrics')).text;
    return Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  };
  const narUrl = async (storePath: string) => parseNarinfo(await readFile(path.join(cacheDir, `${hashPart(storePath)}.narinfo`), 'utf8')).url;

  before(async () => {
    const cache = await signedBinaryCache({ label: 'disk-full-big', leafBytes: 40 * MiB, compression: 'zstd' });
    big = cache.closure;
    cacheDir = cache.cacheDir;
    midway = await buildClosure({ label: 'disk-full-midway', leafBytes: 24 * MiB });
    small = await buildClosure({ label: 'disk-full-small' });
    later = await buildClosure({ label: 'disk-full-later' });
    await makeBinaryCache(cacheDir, [...midway.paths, ...small.paths, ...later.paths], { secretKeyFile: cache.key.secretKeyFile, compression: 'zstd' });
    upstream = await startFaultUpstream(cacheDir);
    const mounted = await mountTmpfs(48 * MiB);
    if (typeof mounted === 'string') throw new Error(mounted);
    tmpfs = mounted;
    const dbDir = await makeTempDir('disk-full-db');
    ncps = await startNcps({
      upstreams: [upstream.url],
      publicKeys: [cache.key.publicKey],
      dataDir: tmpfs.dir,
      extraArgs: [`--cache-database-url=sqlite:${path.join(dbDir, 'db.sqlite')}`, '--prometheus-enabled', '--cache-allow-put-verb'],
    });
  });
  after(async () => {
    await teardown(ncps, upstream);
    await tmpfs?.unmount();
  });

  it('streams a NAR that does not fit without keeping it, and the Nix client substitutes it', async () => {
    assert.ok(freeBytes(tmpfs.dir) <= 48 * MiB && freeBytes(tmpfs.dir) > 40 * MiB);
    await substituteAndVerify(big, { substituter: ncps.url, trustedPublicKey: await ncps.publicKey(), ncps });
    const bigNar = path.basename(await narUrl(big.leaf));
    assert.ok(!(await storedNars()).some((f) => String(f).endsWith(bigNar)), 'the NAR that does not fit was stored');
    assert.ok((await storedNars()).length >= 2, 'the small NARs of the closure are kept');
    assert.match(ncps.logs(), /"reason":"the NAR does not fit in the space left".*NAR streamed from upstream without keeping it/);
    assert.ok((await metric('ncps_nar_streamed_unstored_total')) >= 1);
    assert.equal(await metric('ncps_storage_full'), 0, 'one NAR that does not fit is not a full disk');
    assert.deepEqual(await parts(), []);
  });

  it('fails only the download that runs out of space midway; the next request is streamed through', async () => {
    // Its size unknown up front (no FileSize, no Content-Length), so ncps starts storing it.
    const url = await narUrl(midway.leaf);
    upstream.on(`/${hashPart(midway.leaf)}.narinfo`, rewriteNarinfo((f) => f.delete('FileSize')));
    upstream.on(`/${url}`, transformFile((d) => d, { contentLength: false }));
    fill(path.join(tmpfs.dir, 'filler-1'), 20 * MiB);
    const expected = createHash('sha256').update(await readFile(path.join(cacheDir, url))).digest('hex');
    assert.equal((await request(ncps.url, `/${hashPart(midway.leaf)}.narinfo`)).status, 200);
    let served: Awaited<ReturnType<typeof downloadHashed>> | undefined;
    for (let attempt = 1; attempt <= 3 && !served; attempt++) {
      served = await downloadHashed(ncps.url, `/${url}`, { timeoutMs: 60_000 }).catch(() => undefined);
      if (served && served.status !== 200) served = undefined;
    }
    assert.ok(served, 'no attempt got the NAR');
    assert.equal(served.sha256, expected);
    assert.match(ncps.logs(), /no space left for the download/);
    assert.match(ncps.logs(), /storage is full: NAR downloads are streamed to clients without being kept/);
    await sleep(200);
    assert.deepEqual(await parts(), [], 'a partial download was left behind');
  });

  it('while the disk is full: serves through, answers uploads 507 and leaves no partial file, says so', async () => {
    fill(path.join(tmpfs.dir, 'filler-2'), 0);
    await substituteAndVerify(small, { substituter: ncps.url, trustedPublicKey: await ncps.publicKey(), ncps });
    assert.equal(await metric('ncps_storage_full'), 1);
    const ready = await request(ncps.url, '/readyz');
    assert.equal(ready.status, 503);
    assert.match(ready.text, /storage is full/);

    const nar = await readFile(path.join(cacheDir, await narUrl(later.leaf)));
    for (const [what, p, body] of [
      ['log', `/upload/log/${hashPart(later.top)}-x.drv`, 'a build log\n'.repeat(1000)],
      ['listing', `/upload/${hashPart(later.top)}.ls`, JSON.stringify({ version: 1, root: { type: 'directory', entries: {} } })],
      ['NAR', `/upload/${await narUrl(later.leaf)}`, nar],
    ] as const) {
      const r = await request(ncps.url, p, { method: 'PUT', body });
      assert.equal(r.status, 507, `${what} upload: ${r.status} ${r.text}`);
      assert.match(r.text, /insufficient storage/);
      assert.deepEqual(await parts(), [], `${what} upload left a partial file`);
    }
  });

  it('keeps NARs again once there is room', async () => {
    await rm(path.join(tmpfs.dir, 'filler-1'));
    await rm(path.join(tmpfs.dir, 'filler-2'));
    await sleep(1_100); // the full state is looked at again once a second
    await substituteAndVerify(later, { substituter: ncps.url, trustedPublicKey: await ncps.publicKey(), ncps });
    const laterNar = path.basename(await narUrl(later.leaf));
    for (let i = 0; i < 100 && !(await storedNars()).some((f) => String(f).endsWith(laterNar)); i++) await sleep(50);
    assert.ok((await storedNars()).some((f) => String(f).endsWith(laterNar)), 'the NAR was not kept after space came back');
    assert.equal(await metric('ncps_storage_full'), 0);
    assert.match(ncps.logs(), /storage has room again/);
  });
});
