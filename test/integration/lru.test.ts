// LRU eviction: fill ncps through the real Nix client, pin one closure, restart with a maximum
// size below what is stored and a clean-up every second, and check what is left: under the limit,
// the pinned closure intact, least recently used paths gone first, and never a narinfo served whose
// NAR is gone.
import assert from 'node:assert/strict';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startSignedCache, substituteAndVerify, substituteClosure, teardown, type SignedCache } from '../helpers/fixture';
import { downloadHashed, request } from '../helpers/http';
import { narUrlPath, nix32Encode, normaliseHash, parseNarinfo, type Narinfo } from '../helpers/narinfo';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { buildClosure, hashPart, nixAvailable, sleep, type Closure } from '../helpers/nix';

const skip = nixAvailable() ? false : 'nix-bin not installed';
const TIMEOUT = 600_000;
const MiB = 1024 * 1024;
const TOKEN = 'lru-pin-token';
/** Access times are written in batches every 5 s; waiting longer than that orders them. */
const FLUSH_WAIT_MS = 6_000;

function storedNarPath(dataDir: string, name: string): string {
  return path.join(dataDir, 'store', 'nar', name.slice(0, 1), name.slice(0, 2), name);
}

async function fileSize(file: string): Promise<number | undefined> {
  try {
    const st = await stat(file);
    return st.isFile() ? st.size : undefined;
  } catch {
    return undefined;
  }
}

/** Total bytes of the files under DATADIR/store/nar. */
async function narBytesOnDisk(dataDir: string): Promise<number> {
  const root = path.join(dataDir, 'store', 'nar');
  const files: string[] = await readdir(root, { recursive: true, encoding: 'utf8' });
  let total = 0;
  for (const f of files) total += (await fileSize(path.join(root, f))) ?? 0;
  return total;
}

function metric(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

describe('LRU eviction', { skip }, () => {
  let upstream: SignedCache;
  let ncps: NcpsProcess | undefined;
  // Filled in this order; `pinned` is pinned, `touched` is read again last.
  const labels = ['touched', 'oldest', 'pinned', 'middle', 'newest'] as const;
  type Label = (typeof labels)[number];
  const closures = new Map<Label, Closure>();
  const narNames = new Map<string, string>(); // store path -> NAR file name as ncps serves it
  const get = (l: Label): Closure => closures.get(l)!;

  before(
    async () => {
      upstream = await startSignedCache({ label: 'lru', compression: 'none' });
      for (const label of labels) {
        const c = await buildClosure({ label: `lru-${label}`, leafBytes: 2 * MiB });
        closures.set(label, c);
        await upstream.publish(c);
      }
      ncps = await startNcps({
        upstreams: [upstream.url],
        publicKeys: [upstream.key.publicKey],
        extraArgs: [`--cache-put-token=${TOKEN}`, '--prometheus-enabled'],
      });
    },
    { timeout: TIMEOUT },
  );

  after(() => teardown(ncps, upstream), { timeout: TIMEOUT });

  async function narinfo(storePath: string): Promise<Narinfo | undefined> {
    assert.ok(ncps);
    const r = await request(ncps.url, `/${hashPart(storePath)}.narinfo`, { timeoutMs: 20_000 });
    if (r.status === 404) return undefined;
    assert.equal(r.status, 200, `GET narinfo of ${storePath}: ${r.status} ${r.text}`);
    return parseNarinfo(r.text);
  }

  /** Sum of the on-disk sizes of a closure's NARs (undefined entries count as 0). */
  async function closureBytes(c: Closure): Promise<number> {
    assert.ok(ncps);
    let total = 0;
    for (const p of c.paths) total += (await fileSize(storedNarPath(ncps.dataDir, narNames.get(p)!))) ?? 0;
    return total;
  }

  async function onDisk(storePath: string): Promise<boolean> {
    assert.ok(ncps);
    return (await fileSize(storedNarPath(ncps.dataDir, narNames.get(storePath)!))) !== undefined;
  }

  it('keeps the store under --cache-max-size, evicting least recently used paths and never pinned ones', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    const ncpsKey = await ncps.publicKey();

    // Fill: each closure substituted by the real client, its NARs stored, then a pause so the
    // batched access times of one closure are all written before the next closure is touched.
    for (const label of labels) {
      const c = get(label);
      await substituteClosure(c, { substituter: ncps.url, trustedPublicKey: ncpsKey, ncps });
      for (const p of c.paths) {
        const ni = await narinfo(p);
        assert.ok(ni, `${p} should be served after substitution`);
        assert.equal(ni.compression, 'none');
        narNames.set(p, ni.url.replace(/^nar\//, ''));
      }
      const deadline = Date.now() + 30_000;
      while (!(await Promise.all(c.paths.map((p) => onDisk(p)))).every(Boolean)) {
        assert.ok(Date.now() < deadline, `the NARs of ${label} were not all stored`);
        await sleep(100);
      }
      await sleep(FLUSH_WAIT_MS);
    }

    const pin = await request(ncps.url, `/pin/${hashPart(get('pinned').top)}.narinfo`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(pin.status, 200, `pin: ${pin.status} ${pin.text}`);
    const pins = JSON.parse((await request(ncps.url, '/pins', { headers: { authorization: `Bearer ${TOKEN}` } })).text) as string[];
    assert.deepEqual(pins, [hashPart(get('pinned').top)]);

    // The first closure filled becomes the most recently used one.
    for (const p of get('touched').paths) assert.ok(await narinfo(p), `${p} should be served`);
    await sleep(FLUSH_WAIT_MS);

    const size = new Map<Label, number>();
    for (const label of labels) size.set(label, await closureBytes(get(label)));
    const total = await narBytesOnDisk(ncps.dataDir);
    assert.equal(total, [...size.values()].reduce((a, b) => a + b, 0), 'only these closures are stored');
    for (const [label, bytes] of size) assert.ok(bytes > 2 * MiB, `${label}: ${bytes} bytes`);

    // Room for pinned + touched + newest and 1 MiB: eviction in LRU order (oldest, middle, newest,
    // touched) must take all of `oldest` and `middle`'s leaf, and then stop.
    const maxKiB = Math.floor((size.get('pinned')! + size.get('touched')! + size.get('newest')! + 1 * MiB) / 1024);
    const maxBytes = maxKiB * 1024;
    assert.ok(total > maxBytes);

    const dataDir = ncps.dataDir;
    const code = await ncps.stop('SIGTERM');
    assert.equal(code, 0, `ncps should exit 0 on SIGTERM:\n${ncps.logs().slice(-3000)}`);
    ncps = await startNcps({
      upstreams: [upstream.url],
      publicKeys: [upstream.key.publicKey],
      dataDir,
      extraArgs: [`--cache-put-token=${TOKEN}`, '--prometheus-enabled', `--cache-max-size=${maxKiB}K`, '--cache-lru-schedule=*/1 * * * * *'],
    });

    let metricsText = '';
    let disk = total;
    const deadline = Date.now() + 90_000;
    for (;;) {
      metricsText = (await request(ncps.url, '/metrics')).text;
      disk = await narBytesOnDisk(dataDir);
      const stored = metric(metricsText, 'ncps_store_total_size_bytes');
      if ((metric(metricsText, 'ncps_lru_cleanup_runs_total') ?? 0) >= 1 && stored !== undefined && stored <= maxBytes && disk <= maxBytes) break;
      assert.ok(
        Date.now() < deadline,
        `store not under ${maxBytes} bytes in time: disk ${disk}, metric ${stored}\n${ncps.logs().slice(-4000)}`,
      );
      await sleep(250);
    }
    // One more clean-up run must not change the picture.
    await sleep(1_500);
    disk = await narBytesOnDisk(dataDir);
    assert.ok(disk <= maxBytes, `NAR bytes on disk ${disk} > max ${maxBytes}`);
    assert.equal(metric(metricsText, 'ncps_cache_max_size_bytes'), maxBytes);
    assert.ok((metric(metricsText, 'ncps_lru_bytes_freed_total') ?? 0) >= total - maxBytes, 'ncps_lru_bytes_freed_total');
    assert.ok((metric(metricsText, 'ncps_lru_narinfos_evicted_total') ?? 0) >= 1, 'ncps_lru_narinfos_evicted_total');
    assert.ok((metric(metricsText, 'ncps_lru_nar_files_evicted_total') ?? 0) >= 1, 'ncps_lru_nar_files_evicted_total');
    // A run's duration is recorded when it ends, a little after its last eviction.
    for (let wait = Date.now() + 15_000; (metric(metricsText, 'ncps_lru_cleanup_duration_seconds_count') ?? 0) < 1 && Date.now() < wait; ) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      metricsText = (await request(ncps.url, '/metrics')).text;
    }
    assert.ok((metric(metricsText, 'ncps_lru_cleanup_duration_seconds_count') ?? 0) >= 1, 'ncps_lru_cleanup_duration_seconds');

    // What is left, closure by closure.
    for (const label of ['pinned', 'touched', 'newest'] as const) {
      for (const p of get(label).paths) assert.equal(await onDisk(p), true, `${label}: NAR of ${p} must still be stored`);
    }
    for (const p of get('oldest').paths) assert.equal(await onDisk(p), false, `oldest: NAR of ${p} should have been evicted`);
    assert.equal(await onDisk(get('middle').leaf), false, 'middle: the leaf NAR should have been evicted');

    // Nothing served may point at a missing NAR: upstream gone, every narinfo 200 must have its NAR.
    await upstream.stop();
    const served = new Map<Label, number>();
    for (const label of labels) {
      for (const p of get(label).paths) {
        const ni = await narinfo(p);
        if (!ni) continue;
        served.set(label, (served.get(label) ?? 0) + 1);
        const d = await downloadHashed(ncps.url, narUrlPath(ni.url), { timeoutMs: 60_000 });
        assert.equal(d.status, 200, `${label}: narinfo of ${p} is served but its NAR ${ni.url} answers ${d.status}`);
        assert.equal(d.bytes, ni.narSize, `${label}: NAR of ${p} is incomplete`);
        assert.equal(`sha256:${nix32Encode(Buffer.from(d.sha256, 'hex'))}`, normaliseHash(ni.narHash), `${label}: NAR of ${p} is corrupt`);
      }
    }
    assert.equal(served.get('oldest') ?? 0, 0, 'no narinfo of the evicted closure may be served');
    for (const label of ['pinned', 'touched', 'newest'] as const) assert.equal(served.get(label), get(label).paths.length, `${label} is fully served`);

    // The real client still gets the pinned closure (and the recently used one) from ncps alone.
    for (const label of ['pinned', 'touched'] as const) {
      await substituteAndVerify(get(label), { substituter: ncps.url, trustedPublicKey: ncpsKey, ncps, what: label });
    }
  });
});
