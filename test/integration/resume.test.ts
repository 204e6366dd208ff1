// The real Nix client resumes an interrupted NAR download with a Range request, and ncps answers
// it with the missing bytes (206) instead of making it start again from zero. A small proxy in
// front of ncps cuts the first NAR response short to cause the interruption.

import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { assertClosureValid, signedUpstream, substituteClosure, teardown, type SignedUpstream } from '../helpers/fixture';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { nixAvailable } from '../helpers/nix';

const skip = nixAvailable() ? false : 'nix-bin not installed';

/** Forwards to `port`; the first response to a NAR request is cut after `cutAfter` bytes. */
async function startCuttingProxy(port: number, cutAfter: number) {
  const requests: string[] = [];
  let cut = false;
  const server = net.createServer((client) => {
    const target = net.connect(port, '127.0.0.1');
    let narResponse = false;
    let forwarded = 0;
    client.on('data', (data: Buffer) => {
      const head = data.toString('latin1');
      if (/^GET \/nar\//.test(head)) {
        narResponse = true;
        requests.push(head.split('\r\n').filter((line) => /^GET |^range:/i.test(line)).join(' | '));
      }
      target.write(data);
    });
    target.on('data', (data: Buffer) => {
      if (narResponse && !cut) {
        forwarded += data.length;
        if (forwarded > cutAfter) {
          cut = true;
          client.destroy();
          target.destroy();
          return;
        }
      }
      client.write(data);
    });
    target.on('end', () => client.end());
    client.on('end', () => target.end());
    target.on('error', () => client.destroy());
    client.on('error', () => target.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    wasCut: () => cut,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('resuming an interrupted download', { skip, timeout: 180_000 }, () => {
  let upstream: SignedUpstream;
  let ncps: NcpsProcess;

  before(async () => {
    upstream = await signedUpstream({ label: 'resume', keyName: 'resume-upstream-1', leafBytes: 4 * 1024 * 1024, compression: 'none' });
    ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [upstream.key.publicKey] });
  });

  after(() => teardown(ncps, upstream));

  it('continues from where it stopped, with a Range request that ncps answers', async () => {
    const proxy = await startCuttingProxy(ncps.port, 1024 * 1024);
    try {
      const result = await substituteClosure(upstream.closure, { substituter: proxy.url, trustedPublicKey: await ncps.publicKey(), ncps });
      assert.ok(proxy.wasCut(), 'the first NAR response was interrupted');
      assert.ok(proxy.requests.some((r) => /range: bytes=\d+-/i.test(r)), `Nix resumed with a Range request: ${proxy.requests.join('\n')}`);
      assert.match(ncps.logs(), /"status":206/, 'ncps answered the range');
      await assertClosureValid(result.storeRoot, upstream.closure);
    } finally {
      await proxy.close();
    }
  });
});
