// NAR listings and build logs through ncps. `nix log` (the real Nix client) reads `log/<drv>`;
// Nix 2.8's `nix store ls` builds its listing from the NAR rather than `<hash>.ls`, so listings are
// checked over HTTP (newer clients and tools read them). Both come from upstream on a miss, are
// kept, and keep being served when the upstream is gone.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { signedUpstream, teardown, type SignedUpstream } from '../helpers/fixture';
import { request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { hashPart, makeTempDir, nixAvailable, nixClients, run, runNixClient, type Closure } from '../helpers/nix';

const skip = nixAvailable() ? false : 'nix-bin not installed';

async function nix(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = { ...process.env, XDG_CACHE_HOME: await makeTempDir('xdg-cache') };
  const r = await run('nix', ['--extra-experimental-features', 'nix-command', '--option', 'substituters', '', ...args], { env, timeoutMs: 120_000 });
  return { code: r.code ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe('NAR listings and build logs', { skip, timeout: 240_000 }, () => {
  let closure: Closure;
  let upstream: SignedUpstream;
  let ncps: NcpsProcess;
  let drv: string;
  const LOG = 'building the top path\nall went well\n';

  before(async () => {
    upstream = await signedUpstream({ label: 'listing', keyName: 'listing-upstream-1', narListing: true });
    closure = upstream.closure;
    drv = (await run('nix-store', ['-q', '--deriver', closure.top])).stdout.trim();
    assert.match(drv, /\.drv$/);
    mkdirSync(path.join(upstream.dir, 'log'), { recursive: true });
    writeFileSync(path.join(upstream.dir, 'log', path.basename(drv)), LOG);
    ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [upstream.key.publicKey] });
  });

  after(() => teardown(ncps, upstream));

  it('serves listings for nix store ls and logs for nix log, and keeps them', async () => {
    const hash = hashPart(closure.top);
    const fetched = await request(ncps.url, `/${hash}.ls`);
    assert.equal(fetched.status, 200);
    assert.equal(upstream.count('GET', `/${hash}.ls`), 1, 'the listing came from upstream');
    const listing = await nix(['store', 'ls', '--store', ncps.url, '-R', closure.top]);
    assert.equal(listing.code, 0, listing.stderr);
    for (const entry of Object.keys(JSON.parse(fetched.text).root.entries ?? {})) {
      assert.ok(listing.stdout.includes(entry), `nix store ls and the listing agree on ${entry}`);
    }

    // Asked for the output path, Nix finds the deriver in ncps's narinfo and fetches its log.
    const log = await nix(['log', '--store', ncps.url, closure.top]);
    assert.equal(log.code, 0, log.stderr);
    assert.equal(log.stdout, LOG);

    assert.ok(existsSync(path.join(ncps.dataDir, 'store', 'ls', hash[0]!, hash.slice(0, 2), `${hash}.ls`)));
    await upstream.stop();
    const again = await nix(['log', '--store', ncps.url, closure.top]);
    assert.equal(again.stdout, LOG, 'served from storage with the upstream gone');
    const stored = await request(ncps.url, `/${hash}.ls`);
    assert.equal(stored.status, 200);
    assert.equal(stored.headers['content-type'], 'application/json');
    assert.equal(JSON.parse(stored.text).version, 1);
  });

  // Both clients build `nix store ls` of a binary cache from the NAR (checked: Nix 2.8 and 2.26).
  for (const { client, skip: clientSkip } of nixClients()) {
    it(`${client.label}: nix store ls and nix log through ncps, from its storage`, { skip: clientSkip }, async () => {
      const base = ['--extra-experimental-features', 'nix-command', '--option', 'substituters', ''];
      const listing = await runNixClient(client, 'nix', [...base, 'store', 'ls', '--store', ncps.url, '-R', closure.top]);
      assert.equal(listing.code, 0, listing.stderr);
      assert.match(listing.stdout, /bin\/hello/);
      assert.match(listing.stdout, /nested\/deeper\/empty/);
      const log = await runNixClient(client, 'nix', [...base, 'log', '--store', ncps.url, closure.top]);
      assert.equal(log.code, 0, log.stderr);
      assert.equal(log.stdout, LOG);
    });
  }

  it('rejects malformed names and answers 404 for unknown ones', async () => {
    assert.equal((await request(ncps.url, '/log/..%2F..%2Fetc%2Fpasswd')).status, 400);
    assert.equal((await request(ncps.url, '/abc.ls')).status, 400);
    assert.equal((await request(ncps.url, '/00000000000000000000000000000000.ls')).status, 404);
    assert.equal((await request(ncps.url, '/log/00000000000000000000000000000000-nothing.drv')).status, 404);
  });
});
