// Many clients asking for the same uncached NAR at once: ncps must fetch it from upstream once,
// stream it to everybody, and cope with clients that hang up midway.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startSignedCache, substituteAndVerify, teardown, type SignedCache } from '../helpers/fixture';
import { downloadHashed, request, type HashedDownload } from '../helpers/http';
import { narHashOfFile, narUrlPath, nix32Encode, normaliseHash, parseNarinfo, type Narinfo } from '../helpers/narinfo';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { buildClosure, hashPart, makeTempDir, nixAvailable, sleep, type Closure } from '../helpers/nix';

const skip = nixAvailable() ? false : 'nix-bin not installed';
const TIMEOUT = 180_000;
const MiB = 1024 * 1024;

function nix32OfHex(hex: string): string {
  return `sha256:${nix32Encode(Buffer.from(hex, 'hex'))}`;
}

/** Checks a downloaded body against what ncps's narinfo says about it. */
async function assertBodyMatches(ni: Narinfo, d: HashedDownload, savedFile?: string): Promise<void> {
  assert.equal(d.status, 200);
  const fileHash = nix32OfHex(d.sha256);
  if (ni.fileHash !== undefined) assert.equal(fileHash, normaliseHash(ni.fileHash), 'body sha256 must equal FileHash');
  if (ni.fileSize !== undefined) assert.equal(d.bytes, ni.fileSize, 'body length must equal FileSize');
  if (ni.compression === 'none') {
    assert.equal(fileHash, normaliseHash(ni.narHash), 'uncompressed body sha256 must equal NarHash');
    assert.equal(d.bytes, ni.narSize, 'uncompressed body length must equal NarSize');
  } else if (savedFile !== undefined) {
    const narHash = await narHashOfFile(savedFile, ni.compression);
    if (narHash !== undefined) assert.equal(narHash, normaliseHash(ni.narHash), 'decompressed body must hash to NarHash');
  }
}

describe('concurrent downloads of one uncached NAR', { skip }, () => {
  let upstream: SignedCache;
  let ncps: NcpsProcess | undefined;

  before(
    async () => {
      upstream = await startSignedCache({ label: 'big', compression: 'none', bytesPerSecond: 20_000_000 });
      ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [upstream.key.publicKey] });
    },
    { timeout: TIMEOUT },
  );

  after(() => teardown(ncps, upstream), { timeout: TIMEOUT });

  /** Builds a closure whose leaf NAR is `leafBytes` big and publishes it uncompressed upstream. */
  async function publish(label: string, leafBytes: number): Promise<Closure & { upstreamNarPath: string }> {
    const closure = await buildClosure({ label, leafBytes });
    await upstream.publish(closure);
    const up = parseNarinfo(await readFile(path.join(upstream.dir, `${hashPart(closure.leaf)}.narinfo`), 'utf8'));
    return { ...closure, upstreamNarPath: narUrlPath(up.url) };
  }

  async function narinfoVia(storePath: string): Promise<Narinfo> {
    assert.ok(ncps);
    const res = await request(ncps.url, `/${hashPart(storePath)}.narinfo`, { timeoutMs: 30_000 });
    assert.equal(res.status, 200, `narinfo of ${storePath}: ${res.status} ${res.text}\n${ncps.logs().slice(-4000)}`);
    return parseNarinfo(res.text);
  }

  it('fetches the NAR from upstream once and serves 20 identical, correct bodies', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    const big = await publish('concurrent', 30 * MiB);
    const ni = await narinfoVia(big.leaf);
    const narPath = narUrlPath(ni.url);

    // ncps may already be prefetching the NAR in the background; join it midway.
    await sleep(500);
    const aborter = downloadHashed(ncps.url, narPath, { abortAfterBytes: 1 * MiB, timeoutMs: 120_000 });
    const saved = path.join(await makeTempDir('nar-body'), 'first');
    const clients = Array.from({ length: 20 }, (_, i) =>
      downloadHashed(ncps!.url, narPath, { timeoutMs: 150_000, ...(i === 0 ? { saveTo: saved } : {}) }),
    );
    const results = await Promise.all(clients);
    const aborted = await aborter;
    assert.equal(aborted.aborted, true, 'the aborting client should have received part of the body');

    for (const [i, r] of results.entries()) {
      assert.equal(r.status, 200, `client ${i}`);
      assert.equal(r.bytes, results[0]!.bytes, `client ${i} body length`);
      assert.equal(r.sha256, results[0]!.sha256, `client ${i} body differs from client 0`);
    }
    assert.ok(results[0]!.bytes > 30 * MiB * 0.9, `body of ${results[0]!.bytes} bytes is too small for a 30 MiB NAR`);
    await assertBodyMatches(ni, results[0]!, saved);

    assert.equal(
      upstream.count('GET', big.upstreamNarPath),
      1,
      `upstream saw these requests:\n${upstream.requests.map((r) => `${r.method} ${r.path}`).join('\n')}`,
    );

    // Later requests come from storage: same body, still no second upstream download.
    const again = await downloadHashed(ncps.url, narPath, { timeoutMs: 120_000 });
    assert.equal(again.status, 200);
    assert.equal(again.sha256, results[0]!.sha256);
    assert.equal(upstream.count('GET', big.upstreamNarPath), 1);

    const health = await request(ncps.url, '/healthz');
    assert.equal(health.status, 200);
  });

  it('survives the first client hanging up mid-download', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    const pub = await publish('abort-first', 10 * MiB);
    const ni = await narinfoVia(pub.leaf);
    const narPath = narUrlPath(ni.url);

    const first = await downloadHashed(ncps.url, narPath, { abortAfterBytes: 256 * 1024, timeoutMs: 60_000 });
    assert.equal(first.aborted, true);

    const saved = path.join(await makeTempDir('nar-body'), 'after-abort');
    const later = await Promise.all(
      Array.from({ length: 5 }, (_, i) =>
        downloadHashed(ncps!.url, narPath, { timeoutMs: 120_000, ...(i === 0 ? { saveTo: saved } : {}) }),
      ),
    );
    for (const r of later) {
      assert.equal(r.status, 200);
      assert.equal(r.sha256, later[0]!.sha256);
    }
    await assertBodyMatches(ni, later[0]!, saved);
    assert.ok(upstream.count('GET', pub.upstreamNarPath) >= 1);

    // And the real client agrees: the stored NAR is complete and correct.
    await substituteAndVerify(pub, { substituter: ncps.url, trustedPublicKey: await ncps.publicKey(), ncps });
  });
});
