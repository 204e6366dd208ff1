// Misbehaving upstreams and hostile requests: ncps answers 4xx (never 500) and keeps working.
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startSignedCache, substituteAndVerify, teardown, type SignedCache } from '../helpers/fixture';
import { request } from '../helpers/http';
import { parseNarinfo } from '../helpers/narinfo';
import { freePort, startNcps, type NcpsProcess } from '../helpers/ncps';
import { buildClosure, generateKeyPair, hashPart, makeTempDir, nixAvailable, sleep, type Closure, type KeyPair } from '../helpers/nix';

const skip = nixAvailable() ? false : 'nix-bin not installed';
const TIMEOUT = 120_000;
const TIMEOUT_ARGS = ['--cache-upstream-response-header-timeout=1s', '--cache-upstream-dialer-timeout=1s'];

describe('error handling', { skip }, () => {
  let goodKey: KeyPair;
  let good: Closure; // signed by the configured key
  let foreign: Closure; // signed by a key ncps does not know
  let forged: Closure; // signed by a different key that carries the configured key's name
  let hanging: Closure; // upstream hangs on its narinfo
  let failing: Closure; // upstream answers 500 for its narinfo
  let upstream: SignedCache;
  let ncps: NcpsProcess | undefined;
  let validNarHash: string; // a well-formed 52-character nix32 hash

  before(
    async () => {
      good = await buildClosure({ label: 'err-good' });
      foreign = await buildClosure({ label: 'err-foreign' });
      forged = await buildClosure({ label: 'err-forged' });
      hanging = await buildClosure({ label: 'err-hang' });
      failing = await buildClosure({ label: 'err-500' });

      upstream = await startSignedCache({ label: 'errors' });
      goodKey = upstream.key;
      const foreignKey = await generateKeyPair('someone-else-1', await makeTempDir('keys'));
      const forgedKey = await generateKeyPair('test-upstream-1', await makeTempDir('forged-key'));
      assert.notEqual(forgedKey.publicKey, goodKey.publicKey);
      await upstream.publish(good);
      await upstream.publish(foreign, { signedBy: foreignKey });
      await upstream.publish(forged, { signedBy: forgedKey });
      await upstream.publish(hanging);
      await upstream.publish(failing);
      validNarHash = parseNarinfo(await readFile(path.join(upstream.dir, `${hashPart(good.top)}.narinfo`), 'utf8'))
        .narHash.replace(/^sha256:/, '');
      assert.equal(validNarHash.length, 52);

      ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [goodKey.publicKey], extraArgs: TIMEOUT_ARGS });
    },
    { timeout: TIMEOUT },
  );

  after(() => teardown(ncps, upstream), { timeout: TIMEOUT });

  const narinfoRequests = (storePath: string): number =>
    upstream.count('GET', `/${hashPart(storePath)}.narinfo`) + upstream.count('HEAD', `/${hashPart(storePath)}.narinfo`);

  it('answers 404 for narinfos whose signature does not verify, and does not store them', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    for (const [what, c] of [['unknown key', foreign], ['forged key with the trusted name', forged]] as const) {
      const p = `/${hashPart(c.top)}.narinfo`;
      // The upstream really has it.
      assert.equal((await request(upstream.url, p)).status, 200);

      const first = await request(ncps.url, p, { timeoutMs: 20_000 });
      assert.equal(first.status, 404, `${what}: ${first.status} ${first.text}`);
      assert.ok(narinfoRequests(c.top) >= 1, `${what}: ncps never asked the upstream for ${p}`);

      const second = await request(ncps.url, p, { timeoutMs: 20_000 });
      assert.equal(second.status, 404, `${what}, asked again: ${second.status} ${second.text}`);
      const head = await request(ncps.url, p, { method: 'HEAD', timeoutMs: 20_000 });
      assert.equal(head.status, 404, `${what}, HEAD: ${head.status}`);

      // Nothing of it may have landed in ncps's storage (no narinfo file, no prefetched NAR).
      const up = parseNarinfo(await readFile(path.join(upstream.dir, `${hashPart(c.top)}.narinfo`), 'utf8'));
      const needles = [hashPart(c.top), up.narHash.replace(/^sha256:/, ''), (up.fileHash ?? '').replace(/^sha256:/, '')];
      const files: string[] = await readdir(ncps.dataDir, { recursive: true, encoding: 'utf8' });
      const stored = files.filter((f) => needles.some((n) => n !== '' && path.basename(f).includes(n)));
      assert.deepEqual(stored, [], `${what}: rejected path was stored`);
    }
  });

  it('refuses path traversal with a 4xx, never 200 or 500', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    const attempts = [
      '/nar/..%2F..%2Fetc%2Fpasswd.nar',
      '/../../etc/passwd',
      '/nar/../db.sqlite',
      '/nar/..%2Fdb.sqlite',
      '/nar/..%2F..%2Fdb.sqlite.nar',
      '/%2e%2e/%2e%2e/etc/passwd',
      '/%2e%2e%2f%2e%2e%2fetc%2fpasswd.narinfo',
      '/..%2F..%2Fetc%2Fpasswd.narinfo',
      '/nar/%2e%2e%2f%2e%2e%2fetc%2fpasswd.nar.xz',
      '/nar/%2Fetc%2Fpasswd.nar',
      '/nar/....%2F%2F....%2F%2Fetc%2Fpasswd.nar',
      '/nar/..%5C..%5Cetc%5Cpasswd.nar',
      '/db.sqlite',
    ];
    for (const p of attempts) {
      for (const method of ['GET', 'HEAD']) {
        const r = await request(ncps.url, p, { method, timeoutMs: 20_000 });
        assert.ok(r.status >= 400 && r.status < 500, `${method} ${p} answered ${r.status}: ${r.text.slice(0, 200)}`);
        assert.doesNotMatch(r.text, /root:.*:0:0:/, `${method} ${p} leaked /etc/passwd`);
        assert.doesNotMatch(r.text, /SQLite format/, `${method} ${p} leaked the database`);
      }
    }
  });

  it('answers 400 for malformed hashes and unknown NAR extensions', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    const goodHash = hashPart(good.top);
    const withE = `e${goodHash.slice(1)}`; // 'e' is not in the nix32 alphabet
    assert.equal(withE.length, 32);
    const cases = [
      '/abc.narinfo',
      `/${withE}.narinfo`,
      `/${goodHash}x.narinfo`,
      `/nar/${validNarHash}.nar.gz`,
      `/nar/${validNarHash}.nar.exe`,
      '/nar/abc.nar',
      `/nar/${validNarHash.slice(0, 51)}o.nar.xz`,
    ];
    for (const p of cases) {
      for (const method of ['GET', 'HEAD']) {
        const r = await request(ncps.url, p, { method, timeoutMs: 20_000 });
        assert.equal(r.status, 400, `${method} ${p} answered ${r.status}: ${r.text.slice(0, 200)}`);
      }
    }
  });

  it('answers 404, not 500, when the upstream hangs', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    const p = `/${hashPart(hanging.top)}.narinfo`;
    upstream.setFailure('hang', p);
    try {
      // With --cache-upstream-response-header-timeout=1s this must give up well before 20 s.
      const r = await request(ncps.url, p, { timeoutMs: 20_000 });
      assert.equal(r.status, 404, `${r.status} ${r.text}`);
      assert.ok(narinfoRequests(hanging.top) >= 1, 'ncps never asked the upstream');
    } finally {
      upstream.setFailure('none');
    }
  });

  it('answers 404, not 500, when the upstream answers 500', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    const p = `/${hashPart(failing.top)}.narinfo`;
    upstream.setFailure('500', p);
    try {
      // The hang just before leaves the upstream alone for a moment (back-off): ask until it is
      // asked again; every answer meanwhile must be a 404 too.
      const deadline = Date.now() + 10_000;
      do {
        const r = await request(ncps.url, p, { timeoutMs: 20_000 });
        assert.equal(r.status, 404, `${r.status} ${r.text}`);
      } while (narinfoRequests(failing.top) === 0 && Date.now() < deadline && (await sleep(200), true));
      assert.ok(narinfoRequests(failing.top) >= 1, 'ncps never asked the upstream');
      const head = await request(ncps.url, p, { method: 'HEAD', timeoutMs: 20_000 });
      assert.equal(head.status, 404);
    } finally {
      upstream.setFailure('none');
    }
  });

  it('answers 404, not 500, when its only upstream is unreachable', { timeout: TIMEOUT }, async () => {
    const deadPort = await freePort(); // nothing listens there
    const lonely = await startNcps({
      upstreams: [`http://127.0.0.1:${deadPort}`],
      publicKeys: [goodKey.publicKey],
      extraArgs: TIMEOUT_ARGS,
    });
    try {
      const p = `/${hashPart(good.top)}.narinfo`;
      const r = await request(lonely.url, p, { timeoutMs: 20_000 });
      assert.equal(r.status, 404, `${r.status} ${r.text}\n${lonely.logs().slice(-4000)}`);
      const head = await request(lonely.url, p, { method: 'HEAD', timeoutMs: 20_000 });
      assert.equal(head.status, 404);
      assert.equal((await request(lonely.url, '/healthz')).status, 200);
    } finally {
      await lonely.stop();
    }
  });

  it('is still healthy afterwards and still substitutes a valid closure', { timeout: TIMEOUT }, async () => {
    assert.ok(ncps);
    assert.equal(ncps.proc.exitCode, null, 'ncps must not have exited');
    assert.equal((await request(ncps.url, '/healthz')).status, 200);
    await substituteAndVerify(good, { substituter: ncps.url, trustedPublicKey: await ncps.publicKey(), ncps });
  });
});
