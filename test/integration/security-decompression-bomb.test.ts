// An upstream answering a build log with a small compressed body that inflates to far more than
// the 64 MiB a log may have (a decompression bomb, in every Content-Encoding ncps undoes): ncps
// refuses it (404, nothing stored) and its memory stays bounded. A log within the limit, sent
// compressed, is still served decoded.
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { body, startFaultUpstream, zeroBomb, type FaultUpstream } from '../helpers/fault-upstream';
import { request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir, run } from '../helpers/proc';

const KEY = 'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=';
const MiB = 1 << 20;

/** Peak resident memory of a process so far (VmHWM), in bytes. */
async function peakRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
}

describe('decompression bombs from upstream', { timeout: 180_000 }, () => {
  let upstream: FaultUpstream;
  let ncps: NcpsProcess;
  const haveZstd = async () => (await run('sh', ['-c', 'command -v zstd'], { timeoutMs: 5_000 })).code === 0;

  before(async () => {
    upstream = await startFaultUpstream(await makeTempDir('bomb-upstream'));
    ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [KEY] });
  });
  after(async () => {
    await ncps?.stop();
    await upstream?.stop();
    await cleanupTempDirs();
  });

  it('refuses logs that inflate beyond 64 MiB, stores nothing, and keeps memory bounded', async () => {
    const encodings: Array<['gzip' | 'br' | 'deflate' | 'zstd', number]> = [
      ['gzip', 1024 * MiB],
      ['br', 256 * MiB],
      ['deflate', 256 * MiB],
    ];
    if (await haveZstd()) encodings.push(['zstd', 256 * MiB]);
    const before = await peakRss(ncps.proc.pid!);
    for (const [i, [encoding, size]] of encodings.entries()) {
      const bomb = await zeroBomb(encoding, size);
      assert.ok(bomb.length < 2 * MiB, `${encoding} bomb is ${bomb.length} bytes on the wire`);
      const name = `${String(i).repeat(32)}-bomb-${encoding}.drv`;
      upstream.on(`/log/${name}`, body(bomb, { 'content-encoding': encoding, 'content-type': 'text/plain' }));
      const r = await request(ncps.url, `/log/${name}`, { timeoutMs: 60_000 });
      assert.equal(r.status, 404, `${encoding}: ${r.status}, ${r.body.length} bytes`);
      assert.equal(upstream.count('GET', `/log/${name}`), 1);
    }
    const peak = await peakRss(ncps.proc.pid!);
    // The decoded limit is 64 MiB; some working room on top, far from the bombs' sizes.
    assert.ok(peak - before < 300 * MiB, `peak RSS grew by ${Math.round((peak - before) / MiB)} MiB (from ${Math.round(before / MiB)} MiB)`);
    const stored = await readdir(path.join(ncps.dataDir, 'store'), { recursive: true }).catch(() => []);
    assert.deepEqual(stored.filter((f) => String(f).includes('bomb')), [], 'a bomb was stored');
    assert.match(ncps.logs(), /larger than 67108864 bytes once decoded/);
  });

  it('still serves a compressed log within the limit, decoded', async () => {
    const text = 'a normal build log\n'.repeat(1000);
    const name = `${'a'.repeat(32)}-fine.drv`;
    upstream.on(`/log/${name}`, body(gzipSync(text), { 'content-encoding': 'gzip', 'content-type': 'text/plain' }));
    const r = await request(ncps.url, `/log/${name}`);
    assert.equal(r.status, 200);
    assert.equal(r.text, text);
  });
});
