// An upstream that fails (500, 429 with Retry-After, a hang) is not taken to mean "absent": the
// next request after a short back-off asks again and gets the path, Retry-After is honoured, and
// only a real 404 is remembered by the negative cache.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { signedBinaryCache, teardown } from '../helpers/fixture';
import { hang, startFaultUpstream, status, type FaultUpstream } from '../helpers/fault-upstream';
import { request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { hashPart, nixAvailable, sleep, type Closure } from '../helpers/nix';

const skip = nixAvailable() ? false : 'nix-bin not installed';

/** Asks until the answer is 200 or `ms` pass; returns the last status and when it turned 200. */
async function pollUntilOk(url: string, path: string, ms: number): Promise<{ status: number; afterMs: number }> {
  const start = Date.now();
  for (;;) {
    const r = await request(url, path, { timeoutMs: 10_000 });
    if (r.status === 200 || Date.now() - start > ms) return { status: r.status, afterMs: Date.now() - start };
    await sleep(100);
  }
}

describe('upstream failures are not absences', { skip, timeout: 180_000 }, () => {
  let upstream: FaultUpstream;
  let ncps: NcpsProcess;
  let closure: Closure;
  let key: string;

  before(async () => {
    const cache = await signedBinaryCache({ label: 'upstream-errors', narListing: true });
    closure = cache.closure;
    key = cache.key.publicKey;
    upstream = await startFaultUpstream(cache.cacheDir);
    ncps = await startNcps({
      upstreams: [upstream.url],
      publicKeys: [key],
      // The default negative TTL (30 s) is what main wrongly applied to failures.
      extraArgs: ['--cache-upstream-response-header-timeout=1s', '--cache-negative-ttl=30s'],
    });
  });
  after(() => teardown(ncps, upstream));

  it('answers 404 while the upstream fails with 500, and serves the path once it answers again', async () => {
    const path = `/${hashPart(closure.leaf)}.narinfo`;
    upstream.on(path, status(500), { times: 1 });
    assert.equal((await request(ncps.url, path)).status, 404);
    assert.equal(upstream.count('GET', path), 1);
    // Well within the 30 s a remembered absence would last.
    const { status: code, afterMs } = await pollUntilOk(ncps.url, path, 10_000);
    assert.equal(code, 200, `still ${code} after ${afterMs} ms: the failure was remembered as absence`);
    // Backed off rather than hammered: a handful of upstream requests, not one per poll.
    assert.ok(upstream.count('GET', path) <= 3, `upstream asked ${upstream.count('GET', path)} times`);
    assert.match(ncps.logs(), /upstream fetch failed; not asking it again for a while/);
  });

  it('honours Retry-After on 429: the upstream is not asked again before it says', async () => {
    const path = `/${hashPart(closure.mid)}.narinfo`;
    upstream.on(path, status(429, { 'retry-after': '3' }), { times: 1 });
    const start = Date.now();
    assert.equal((await request(ncps.url, path)).status, 404);
    // Requests during the wait are answered without asking the upstream.
    while (Date.now() - start < 2_500) {
      assert.equal((await request(ncps.url, path)).status, 404);
      await sleep(200);
    }
    assert.equal(upstream.count('GET', path), 1, 'the upstream was asked again before its Retry-After');
    // Rate limiting concerns the whole upstream: other paths wait too.
    const other = `/${hashPart(closure.leaf)}.ls`;
    assert.equal((await request(ncps.url, other)).status, 404);
    assert.equal(upstream.count('GET', other), 0, 'another path was asked during the Retry-After');
    const { status: code } = await pollUntilOk(ncps.url, path, 10_000);
    assert.equal(code, 200);
    assert.ok(Date.now() - start >= 3_000, 'served before Retry-After ran out');
    assert.equal(upstream.count('GET', path), 2);
  });

  it('does not remember a timed-out lookup, nor a failing listing, as absent', async () => {
    const path = `/${hashPart(closure.top)}.narinfo`;
    upstream.on(path, hang(), { times: 1 });
    assert.equal((await request(ncps.url, path, { timeoutMs: 20_000 })).status, 404);
    assert.equal((await pollUntilOk(ncps.url, path, 10_000)).status, 200);

    const listing = `/${hashPart(closure.top)}.ls`;
    upstream.on(listing, status(503), { times: 1 });
    assert.equal((await request(ncps.url, listing)).status, 404);
    assert.equal((await pollUntilOk(ncps.url, listing, 10_000)).status, 200);
  });

  it('remembers a real 404', async () => {
    const path = `/${'1'.repeat(32)}.narinfo`;
    assert.equal((await request(ncps.url, path)).status, 404);
    assert.equal((await request(ncps.url, path)).status, 404);
    assert.equal(upstream.count('GET', path), 1, 'a 404 should be remembered by the negative cache');
  });
});
