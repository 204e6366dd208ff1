// What ncps answers to requests it refuses: one line of plain text (as the docs promise) also for
// what the HTTP layer rejects before any route runs, 405 with `Allow` for a wrong method on a path
// that exists, and 400 (never 500) for an empty body on every upload route.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { cleanupTempDirs } from '../helpers/proc';

const KEY = 'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=';
const HASH = '0c9sxkfq8xlq2kqnr9pxk6pnb2ilfmcz';
const NAR = '1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.xz';

/** Sends raw bytes and returns what comes back before the server closes (or 5 s pass). */
function rawExchange(port: number, data: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(data));
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
    socket.on('error', (e) => (chunks.length > 0 ? resolve(Buffer.concat(chunks).toString('utf8')) : reject(e)));
    socket.setTimeout(5_000, () => socket.destroy());
  });
}

function assertOneLineText(what: string, headers: Record<string, unknown>, text: string): void {
  assert.match(String(headers['content-type'] ?? ''), /^text\/plain/, `${what}: content type ${String(headers['content-type'])}`);
  assert.match(text, /^[^\n{]+\n$/, `${what}: body ${JSON.stringify(text)} is not one line of text`);
}

describe('HTTP refusals', { timeout: 60_000 }, () => {
  let ncps: NcpsProcess;

  before(async () => {
    ncps = await startNcps({
      upstreams: ['http://127.0.0.1:1'],
      publicKeys: [KEY],
      extraArgs: ['--cache-allow-put-verb', '--cache-upstream-dialer-timeout=1s'],
    });
  });
  after(async () => {
    await ncps?.stop();
    await cleanupTempDirs();
  });

  it('answers malformed URLs and requests with one line of text, not JSON', async () => {
    const badUrl = await request(ncps.url, '/%zz');
    assert.equal(badUrl.status, 400);
    assertOneLineText('GET /%zz', badUrl.headers, badUrl.text);

    const tooLong = await request(ncps.url, `/nar/${'a'.repeat(300)}`);
    assert.equal(tooLong.status, 414);
    assertOneLineText('over-long segment', tooLong.headers, tooLong.text);

    for (const [what, raw, status] of [
      ['bad Content-Length', 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n', 400],
      ['bad chunk', 'PUT /upload/log/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 400],
      ['oversized headers', `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
    ] as const) {
      const answer = await rawExchange(ncps.port, raw);
      const [head = '', bodyText = ''] = answer.split('\r\n\r\n');
      assert.match(head, new RegExp(`^HTTP/1\\.1 ${status} `), `${what}: ${answer}`);
      assert.match(head, /content-type: text\/plain/i, `${what}: ${answer}`);
      assert.match(bodyText, /^[^\n{]+\n$/, `${what}: body ${JSON.stringify(bodyText)}`);
    }
  });

  it('answers a wrong method on an existing path 405 with Allow, and unknown paths 404', async () => {
    for (const [method, path, allow] of [
      ['PUT', '/nix-cache-info', /GET, HEAD/],
      ['POST', `/${HASH}.narinfo`, /GET, HEAD.*DELETE/],
      ['PATCH', `/nar/${NAR}`, /GET, HEAD.*DELETE/],
      ['POST', '/healthz', /GET, HEAD/],
      ['GET', `/upload/nar/${NAR}`, null], // GET exists under /upload: not found, not 405
      ['DELETE', '/pubkey', null],
    ] as const) {
      const r = await request(ncps.url, path, { method });
      if (allow === null && method === 'GET') {
        assert.equal(r.status, 404, `${method} ${path}: ${r.status} ${r.text}`);
        continue;
      }
      assert.equal(r.status, 405, `${method} ${path}: ${r.status} ${r.text}`);
      assertOneLineText(`${method} ${path}`, r.headers, r.text);
      if (allow) assert.match(String(r.headers.allow), allow, `${method} ${path}: Allow ${String(r.headers.allow)}`);
      else assert.ok(r.headers.allow, `${method} ${path} needs an Allow header`);
      assert.ok(!String(r.headers.allow).includes(method), `${method} ${path}: Allow lists the refused method`);
    }
    const missing = await request(ncps.url, '/no/such/route/here');
    assert.equal(missing.status, 404);
    assert.equal(missing.text, 'not found\n');
  });

  it('answers 400 for an empty body on every upload route', async () => {
    const routes = [
      `/upload/${HASH}.narinfo`,
      `/upload/${HASH}.ls`,
      `/upload/log/${HASH}-hello.drv`,
      `/upload/realisations/sha256:${'a'.repeat(64)}!out.doi`,
      `/upload/build-trace-v2/${HASH}-hello.drv/out.doi`,
      `/upload/nar/${NAR}`,
    ];
    for (const path of routes) {
      for (const [how, headers] of [
        ['Content-Length: 0', { 'content-length': '0' }],
        ['empty chunked body', { 'transfer-encoding': 'chunked' }],
      ] as const) {
        const r = await request(ncps.url, path, { method: 'PUT', headers, body: '' });
        assert.equal(r.status, 400, `PUT ${path} (${how}): ${r.status} ${r.text}`);
        assertOneLineText(`PUT ${path}`, r.headers, r.text);
      }
    }
    assert.doesNotMatch(ncps.logs(), /Symbol\.asyncIterator|"level":50/, 'no request failed with an internal error');
  });
});
