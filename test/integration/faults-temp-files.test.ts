// Partial files a crash leaves in the temp directory are removed at start-up and periodically once
// they are older than --cache-temp-max-age; a download in progress whose upstream pauses for longer
// than that keeps its file (it is in use) and completes.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { signedBinaryCache, teardown } from '../helpers/fixture';
import { pauseAfter, startFaultUpstream, type FaultUpstream } from '../helpers/fault-upstream';
import { downloadHashed, request } from '../helpers/http';
import { parseNarinfo } from '../helpers/narinfo';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { hashPart, makeTempDir, nixAvailable, sleep, type Closure } from '../helpers/nix';

const skip = nixAvailable() ? false : 'nix-bin not installed';

describe('partial files in the temp directory', { skip, timeout: 180_000 }, () => {
  let upstream: FaultUpstream;
  let ncps: NcpsProcess;
  let closure: Closure;
  let cacheDir: string;
  let tmp: string;

  before(async () => {
    const cache = await signedBinaryCache({ label: 'temp-files', leafBytes: 4 << 20 });
    closure = cache.closure;
    cacheDir = cache.cacheDir;
    upstream = await startFaultUpstream(cacheDir);
    const dataDir = await makeTempDir('temp-files-data');
    tmp = path.join(dataDir, 'store', 'tmp');
    mkdirSync(tmp, { recursive: true });
    // Left by a crash three hours ago, and a file ncps did not write.
    writeFileSync(path.join(tmp, 'upload-old.nar.xz.abc.part'), 'x');
    const old = new Date(Date.now() - 3 * 3600_000);
    utimesSync(path.join(tmp, 'upload-old.nar.xz.abc.part'), old, old);
    writeFileSync(path.join(tmp, 'notes.txt'), 'not ours');
    utimesSync(path.join(tmp, 'notes.txt'), old, old);
    ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [cache.key.publicKey], dataDir, extraArgs: ['--cache-temp-max-age=2s'] });
  });
  after(() => teardown(ncps, upstream));

  it('removes stale partial files at start-up, and new leftovers once they are older than the maximum age', async () => {
    assert.equal(existsSync(path.join(tmp, 'upload-old.nar.xz.abc.part')), false, 'a stale file survived the start');
    assert.equal(existsSync(path.join(tmp, 'notes.txt')), true, 'a file ncps did not write was removed');
    const leftover = path.join(tmp, 'crashed-download.nar.xz.def.part');
    writeFileSync(leftover, 'partial');
    const deadline = Date.now() + 15_000;
    while (existsSync(leftover) && Date.now() < deadline) await sleep(200);
    assert.equal(existsSync(leftover), false, 'a leftover partial file was never removed while serving');
  });

  it('keeps the file of a download whose upstream pauses for longer than the maximum age', async () => {
    const ni = parseNarinfo(await readFile(path.join(cacheDir, `${hashPart(closure.leaf)}.narinfo`), 'utf8'));
    const bytes = await readFile(path.join(cacheDir, ni.url));
    upstream.on(`/${ni.url}`, pauseAfter(1 << 20, { ms: 6_000 }));
    assert.equal((await request(ncps.url, `/${hashPart(closure.leaf)}.narinfo`)).status, 200);
    const download = downloadHashed(ncps.url, `/${ni.url}`, { timeoutMs: 60_000 });
    // Three times the maximum age into the pause, the partial file is still there.
    await sleep(5_000);
    const parts = (await readdir(tmp)).filter((f) => f.endsWith('.part'));
    assert.equal(parts.length, 1, `partial files during the pause: ${parts.join(', ')}`);
    const r = await download;
    assert.equal(r.status, 200);
    assert.equal(r.sha256, createHash('sha256').update(bytes).digest('hex'));
    const stored = async () => (await readdir(path.join(ncps.dataDir, 'store', 'nar'), { recursive: true })).filter((f) => String(f).endsWith('.nar.xz'));
    // The client may finish a moment before the verified file is renamed into storage.
    for (let i = 0; i < 100 && (await stored()).length === 0; i++) await sleep(50);
    assert.equal((await stored()).length, 1);
  });
});
