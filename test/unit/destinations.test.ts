import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DestinationPolicy, DestinationRefused, nonPublicReason, parseAllowedHost } from '../../src/upstream/destinations';

const hosts: Record<string, string[]> = {
  'cdn.example.org': ['151.101.2.217'],
  'rebind.example.org': ['127.0.0.1'],
  'metadata.example.org': ['169.254.169.254'],
  'minio.internal': ['10.1.2.3'],
  'mixed.example.org': ['192.168.1.1', '151.101.2.218'],
  'v6.example.org': ['::ffff:127.0.0.1'],
};
const resolve = async (host: string) => hosts[host] ?? [];

function policy(extra: { allowedHosts?: string[]; ownPorts?: number[]; upstreams?: string[] } = {}) {
  return new DestinationPolicy(
    {
      upstreams: (extra.upstreams ?? ['http://127.0.0.1:5000/', 'https://cache.example.org/']).map((u) => new URL(u)),
      ...(extra.allowedHosts ? { allowedHosts: extra.allowedHosts } : {}),
      ownPorts: extra.ownPorts ?? [8501],
    },
    resolve,
  );
}

describe('fetch destinations', () => {
  it('classifies non-public addresses, IPv4-mapped IPv6 included', () => {
    for (const a of ['127.0.0.1', '127.9.9.9', '10.0.0.1', '172.16.5.5', '192.168.0.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '224.0.0.1', '255.255.255.255', '::1', '::', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1', '::ffff:10.0.0.1']) {
      assert.ok(nonPublicReason(a), `${a} should not count as public`);
    }
    for (const a of ['151.101.2.217', '1.1.1.1', '2a04:4e42::217', '172.32.0.1', '::ffff:1.1.1.1']) {
      assert.equal(nonPublicReason(a), undefined, `${a} is public`);
    }
    assert.match(nonPublicReason('127.0.0.1')!, /loopback/);
    assert.match(nonPublicReason('169.254.169.254')!, /link-local/);
  });

  it('allows the upstreams wherever they are, and public hosts (a 307 to a CDN)', async () => {
    const p = policy();
    await p.check(new URL('http://127.0.0.1:5000/nar/x.nar.xz'));
    await p.check(new URL('https://cdn.example.org/nar/x.nar.xz'));
    await p.check(new URL('http://1.1.1.1:8080/x'));
    assert.equal(await p.addressFor('mixed.example.org', 443), '151.101.2.218', 'the first allowed address is used');
  });

  it('refuses loopback, link-local and private destinations, by address after resolving the name', async () => {
    const p = policy();
    for (const url of [
      'http://127.0.0.1:5001/secret', // another port of the upstream's loopback host
      'http://localhost:5000/', // a name is not the upstream's host: checked by address
      'http://rebind.example.org/secret',
      'http://metadata.example.org/latest/meta-data/',
      'http://minio.internal:9000/bucket/x',
      'http://v6.example.org/',
      'http://[::1]:5000/',
      'http://0x7f000001:5002/', // URL parsing turns this into 127.0.0.1
      'http://unknown.example.org/',
    ]) {
      await assert.rejects(p.check(new URL(url)), DestinationRefused, url);
    }
    await assert.rejects(p.check(new URL('file:///etc/passwd')), /only http and https/);
    await assert.rejects(p.check(new URL('http://rebind.example.org/')), /127\.0\.0\.1 is a loopback address.*--cache-upstream-allowed-host/);
  });

  it('refuses its own port even on the upstream host, and allows what the allow-list names', async () => {
    await assert.rejects(policy().check(new URL('http://127.0.0.1:8501/x')), /own port/);
    const p = policy({ allowedHosts: ['minio.internal:9000', '169.254.0.0/16', 'rebind.example.org'] });
    await p.check(new URL('http://minio.internal:9000/bucket/x'));
    await assert.rejects(p.check(new URL('http://minio.internal:9001/bucket/x')), DestinationRefused);
    await p.check(new URL('http://metadata.example.org/'));
    await p.check(new URL('http://rebind.example.org:1234/'));
  });

  it('parses allow-list entries and refuses malformed ones', () => {
    assert.deepEqual(parseAllowedHost('Minio.Internal'), { host: 'minio.internal' });
    assert.deepEqual(parseAllowedHost('minio.internal:9000'), { host: 'minio.internal', port: 9000 });
    assert.deepEqual(parseAllowedHost('[fd00::1]:9000'), { host: 'fd00::1', port: 9000 });
    assert.ok(parseAllowedHost('10.0.0.0/8').subnet);
    for (const bad of ['', 'a b', '10.0.0.0/40', 'http://x/']) assert.throws(() => parseAllowedHost(bad), bad);
  });
});
