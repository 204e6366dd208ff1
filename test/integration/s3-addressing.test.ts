// S3 addressing as the Go ncps chooses it, checked against the requests the S3 server receives: a
// Go deployment that points at a self-hosted S3 endpoint (MinIO, Garage…) and never set
// --cache-storage-s3-force-path-style gets path-style requests (`/<bucket>/<key>` on the endpoint's
// own host name), and the real Nix client substitutes through ncps. The S3 server is s3rver behind
// a small recording proxy on loopback.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { signedUpstream, substituteAndVerify, teardown, type SignedUpstream } from '../helpers/fixture';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { nixAvailable } from '../helpers/nix';
import { s3rverAvailable, startS3rver, type S3rverInstance } from '../helpers/s3';

const skip = !s3rverAvailable() ? 's3rver not installed' : !nixAvailable() ? 'nix not installed' : false;

interface Seen {
  method: string;
  host: string;
  path: string;
}

/** Forwards every request to `target`, recording its method, Host header and path. */
async function recordingProxy(target: S3rverInstance): Promise<{ url: string; seen: Seen[]; stop(): Promise<void> }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? '', host: req.headers.host ?? '', path: req.url ?? '' });
    const upstream = http.request(
      { host: '127.0.0.1', port: target.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    // A host name, not an IP address: the AWS SDK would address an IP in the path anyway.
    url: `http://localhost:${port}`,
    seen,
    stop: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('S3 addressing without --cache-storage-s3-force-path-style', { skip, timeout: 300_000 }, () => {
  let s3: S3rverInstance;
  let proxy: Awaited<ReturnType<typeof recordingProxy>>;
  let upstream: SignedUpstream;
  let ncps: NcpsProcess;

  before(async () => {
    upstream = await signedUpstream({ label: 's3-addressing' });
    s3 = await startS3rver({ bucket: 'ncps-go' });
    proxy = await recordingProxy(s3);
  });

  after(async () => {
    await teardown(ncps, proxy, s3, upstream);
  });

  it('sends path-style requests to a self-hosted endpoint, as the Go ncps does, and serves the Nix client', async () => {
    ncps = await startNcps({
      upstreams: [upstream.url],
      publicKeys: [upstream.key.publicKey],
      // Exactly what a Go deployment on MinIO would have, force-path-style left at its default.
      env: {
        CACHE_STORAGE_S3_BUCKET: s3.bucket,
        CACHE_STORAGE_S3_ENDPOINT: proxy.url,
        CACHE_STORAGE_S3_REGION: s3.region,
        CACHE_STORAGE_S3_ACCESS_KEY_ID: s3.accessKeyId,
        CACHE_STORAGE_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
      },
    });
    await substituteAndVerify(upstream.closure, { substituter: ncps.url, trustedPublicKey: await ncps.publicKey(), ncps });
    const host = new URL(proxy.url).host;
    assert.ok(proxy.seen.length > 0, 'ncps talked to the S3 endpoint');
    for (const r of proxy.seen) {
      assert.equal(r.host, host, `${r.method} ${r.path}: the endpoint's own host, not <bucket>.${host}`);
      assert.ok(r.path === `/${s3.bucket}` || r.path.startsWith(`/${s3.bucket}/`) || r.path.startsWith(`/${s3.bucket}?`), `${r.method} ${r.path}: the bucket in the path`);
    }
    assert.ok(proxy.seen.some((r) => r.method === 'PUT' && r.path.startsWith(`/${s3.bucket}/store/nar/`)), `NARs written under /${s3.bucket}/store/nar/: ${JSON.stringify(proxy.seen.slice(0, 20))}`);
  });
});
