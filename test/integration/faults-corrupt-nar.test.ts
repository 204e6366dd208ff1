// Corrupt NAR bytes from upstream never reach a client as a clean, complete answer. The client
// streams the download while it runs; ncps holds back the last byte it asked for (of the file, or
// of its range) until the bytes are verified, and cuts the connection when they are not — with
// and without Content-Length, for ranges too, and also when the upstream's FileHash was changed
// to match the corrupt bytes (only the signed NarHash catches that). Bytes that are not the format
// the extension promises (xz served as `.nar.zst`) are refused. Nothing bad is stored, and the
// good NAR is served once the upstream sends it.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { signedBinaryCache, teardown } from '../helpers/fixture';
import { flipByte, rewriteNarinfo, serveFile, startFaultUpstream, truncate, type FaultUpstream } from '../helpers/fault-upstream';
import { downloadHashed, request } from '../helpers/http';
import { nix32Encode, parseNarinfo } from '../helpers/narinfo';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { buildClosure, hashPart, makeBinaryCache, nixAvailable, sleep, type Closure } from '../helpers/nix';

const skip = nixAvailable() ? false : 'nix-bin not installed';

/** GET that reports whether the body ended cleanly (complete, 200) or not. */
async function fetchNar(url: string, p: string, headers: Record<string, string> = {}): Promise<{ clean: boolean; status?: number; detail: string }> {
  if (Object.keys(headers).length > 0) {
    try {
      const r = await request(url, p, { headers, timeoutMs: 60_000 });
      return { clean: r.status === 200 || r.status === 206, status: r.status, detail: `${r.status}, ${r.body.length} bytes, ${String(r.headers['content-length'])}` };
    } catch (error) {
      return { clean: false, detail: (error as Error).message };
    }
  }
  try {
    const r = await downloadHashed(url, p, { timeoutMs: 60_000 });
    return { clean: r.status === 200, status: r.status, detail: `${r.status}, ${r.bytes} bytes, content-length ${String(r.headers['content-length'])}` };
  } catch (error) {
    return { clean: false, detail: (error as Error).message };
  }
}

describe('corrupt NARs from upstream', { skip, timeout: 300_000 }, () => {
  let upstream: FaultUpstream;
  let ncps: NcpsProcess;
  let closure: Closure;
  let zstdCase: Closure;
  let cacheDir: string;

  const narinfoOf = async (storePath: string) => parseNarinfo(await readFile(path.join(cacheDir, `${hashPart(storePath)}.narinfo`), 'utf8'));
  /** Asks ncps for the narinfo (which starts the download), then for its NAR. */
  const narPathVia = async (storePath: string) => {
    const r = await request(ncps.url, `/${hashPart(storePath)}.narinfo`);
    assert.equal(r.status, 200, r.text);
    return `/${parseNarinfo(r.text).url}`;
  };
  const storedNars = async () => (await readdir(path.join(ncps.dataDir, 'store', 'nar'), { recursive: true }).catch(() => [])).filter((f) => String(f).includes('.nar'));

  before(async () => {
    const cache = await signedBinaryCache({ label: 'corrupt', leafBytes: 4 << 20 });
    closure = cache.closure;
    cacheDir = cache.cacheDir;
    zstdCase = await buildClosure({ label: 'corrupt-ext' });
    await makeBinaryCache(cacheDir, zstdCase.paths, { secretKeyFile: cache.key.secretKeyFile, compression: 'xz' });
    upstream = await startFaultUpstream(cacheDir);
    ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [cache.key.publicKey] });
  });
  after(() => teardown(ncps, upstream));

  it('cuts a download whose bytes are wrong, with Content-Length (FileSize known)', async () => {
    const ni = await narinfoOf(closure.leaf);
    upstream.on(`/${ni.url}`, flipByte(1000));
    const p = await narPathVia(closure.leaf);
    const r = await fetchNar(ncps.url, p);
    assert.equal(r.clean, false, `the client got a clean answer: ${r.detail}`);
    assert.deepEqual(await storedNars(), []);
    assert.match(ncps.logs(), /file hash does not match the narinfo/);
  });

  it('cuts one without Content-Length whose FileHash was changed to match the bytes (only NarHash catches it)', async () => {
    const ni = await narinfoOf(closure.mid);
    const corrupt = Buffer.from(await readFile(path.join(cacheDir, ni.url)));
    const at = corrupt.length - 10;
    corrupt[at] = corrupt[at]! ^ 0xff;
    const corruptHash = `sha256:${nix32Encode(createHash('sha256').update(corrupt).digest())}`;
    upstream.on(`/${hashPart(closure.mid)}.narinfo`, rewriteNarinfo((f) => {
      f.delete('FileSize');
      f.set('FileHash', corruptHash);
    }));
    upstream.on(`/${ni.url}`, flipByte(at, { contentLength: false }));
    const p = await narPathVia(closure.mid);
    const r = await fetchNar(ncps.url, p);
    assert.equal(r.clean, false, `the client got a clean answer: ${r.detail}`);
    assert.deepEqual(await storedNars(), []);
    assert.match(ncps.logs(), /decompressed NAR does not match the narinfo's NarHash\/NarSize|bytes do not decompress as xz/);
  });

  it('cuts a range of a corrupt download in flight', async () => {
    const ni = await narinfoOf(closure.top);
    upstream.on(`/${ni.url}`, flipByte(-1));
    const p = await narPathVia(closure.top);
    const r = await fetchNar(ncps.url, p, { range: 'bytes=0-99' });
    assert.equal(r.clean, false, `the client got a clean answer: ${r.detail}`);
    assert.deepEqual(await storedNars(), []);
  });

  it('refuses xz bytes served as .nar.zst, and a truncated NAR', async () => {
    const ni = await narinfoOf(zstdCase.leaf);
    const zstName = ni.url.replace(/\.nar\.xz$/, '.nar.zst');
    upstream.on(`/${hashPart(zstdCase.leaf)}.narinfo`, rewriteNarinfo((f) => {
      f.set('Compression', 'zstd');
      f.set('URL', zstName);
    }));
    upstream.on(`/${zstName}`, serveFile(path.join(cacheDir, ni.url)));
    const p = await narPathVia(zstdCase.leaf);
    assert.match(p, /\.nar\.zst$/);
    const r = await fetchNar(ncps.url, p);
    assert.equal(r.clean, false, `xz bytes were served as zstd: ${r.detail}`);
    assert.match(ncps.logs(), /bytes are not zstd data \(they are xz\)/);

    const mid = await narinfoOf(zstdCase.mid);
    upstream.on(`/${mid.url}`, truncate(100));
    const cut = await fetchNar(ncps.url, await narPathVia(zstdCase.mid));
    assert.equal(cut.clean, false, `a truncated NAR ended cleanly: ${cut.detail}`);
    assert.deepEqual(await storedNars(), []);
  });

  it('serves and keeps the NAR once the upstream sends good bytes', async () => {
    upstream.reset();
    const ni = await narinfoOf(closure.leaf);
    const good = createHash('sha256').update(await readFile(path.join(cacheDir, ni.url))).digest('hex');
    const r = await downloadHashed(ncps.url, `/${ni.url}`, { timeoutMs: 60_000 });
    assert.equal(r.status, 200);
    assert.equal(r.sha256, good);
    // The client may finish a moment before the verified file is renamed into storage.
    for (let i = 0; i < 100 && (await storedNars()).length === 0; i++) await sleep(50);
    assert.equal((await storedNars()).length, 1, 'the good NAR is kept');
  });
});
