import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { NixHash } from '../../src/nix/index.js';

// sha256('hello\n') in every form, from Nix 2.8:
//   sha256sum; nix-hash --type sha256 --to-base32 <hex>;
//   nix hash to-sri --extra-experimental-features nix-command --type sha256 <hex>
const HEX = '5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03';
const NIX32 = '00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq';
const B64 = 'WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM=';

describe('NixHash', () => {
  it('parses sha256 in nix32, base16, base64 and SRI form to the same hash', () => {
    const forms = [`sha256:${NIX32}`, `sha256:${HEX}`, `sha256:${HEX.toUpperCase()}`, `sha256:${B64}`, `sha256-${B64}`];
    for (const s of forms) {
      const h = NixHash.parse(s);
      assert.equal(h.algorithm, 'sha256', s);
      assert.equal(h.toBase16(), HEX, s);
      assert.equal(h.toNix32(), `sha256:${NIX32}`);
      assert.equal(h.nix32Digest(), NIX32);
      assert.equal(h.toSRI(), `sha256-${B64}`);
    }
  });

  it('handles the other algorithms (vectors from nix hash to-sri / nix-hash)', () => {
    const cases: Array<[string, string, string]> = [
      ['md5', '4425hx5d1mc9y39llj4k4nm55i', 'md5-sZRqySSS0jR8YjW00mERhA=='],
      ['sha1', 'iwjz551fyw0cxcjgf4l6c879zabd6wpm', 'sha1-9XLTlvrpIGYocU+yzgD3LpTyJY8='],
      [
        'sha512',
        '0lrc0dwnvipqviibf7qfm1y492qvjwb1zhkcyi05cndmva1mr5gjcgrnz1x36djmk0sfg8djd2n0qv68vib2jg590mwznar9jcjphp7',
        'sha512-58IrmUxZ2c8rSOVJseJGZmNgRZMNPafBrLKZ0cO3+TH5Sq5B7dosKyB6NuEPi8uNRSI+VIePWzFufOO2vAGWKQ==',
      ],
    ];
    for (const [algo, nix32, sri] of cases) {
      const a = NixHash.parse(`${algo}:${nix32}`);
      const b = NixHash.parse(sri);
      assert.ok(a.equals(b), algo);
      assert.equal(a.toSRI(), sri);
      assert.equal(b.toNix32(), `${algo}:${nix32}`);
      assert.ok(NixHash.of(a.algorithm, 'hello\n').equals(a));
    }
  });

  it('hashes data', () => {
    assert.equal(NixHash.of('sha256', 'hello\n').toBase16(), HEX);
  });

  it('accepts a bare digest only with a default algorithm', () => {
    assert.throws(() => NixHash.parse(NIX32), /invalid hash/);
    assert.equal(NixHash.parse(NIX32, 'sha256').toBase16(), HEX);
  });

  it('compares algorithm and digest', () => {
    const a = NixHash.parse(`sha256:${NIX32}`);
    assert.ok(a.equals(NixHash.parse(`sha256:${HEX}`)));
    assert.ok(!a.equals(NixHash.of('sha256', 'hello')));
    const md5 = NixHash.of('md5', 'x');
    assert.ok(!md5.equals(new NixHash('sha1', Buffer.concat([md5.digest, Buffer.alloc(4)]))));
  });

  it('rejects malformed hashes with clear errors', () => {
    const bad: Array<[string, RegExp]> = [
      ['', /invalid hash/],
      ['sha256', /invalid hash/],
      [`sha3:${NIX32}`, /unknown algorithm 'sha3'/],
      [`sha256:${NIX32.slice(1)}`, /not base16, nix32 or base64/],
      [`sha256:${NIX32}0`, /not base16, nix32 or base64/],
      [`sha256:${NIX32.slice(0, -1)}e`, /invalid sha256 hash.*bad character/],
      [`sha256:2${NIX32.slice(1)}`, /invalid sha256 hash.*non-zero bits/],
      [`sha256:${HEX.slice(0, -1)}g`, /not base16, nix32 or base64/],
      [`sha256:${B64.slice(0, -1)}`, /not base16, nix32 or base64/],
      [`sha256-${B64.slice(0, -2)}==`, /invalid SRI hash/],
      [`sha256-${HEX}`, /invalid SRI hash/],
      [`md5:${NIX32}`, /invalid md5 hash/],
    ];
    for (const [s, re] of bad) assert.throws(() => NixHash.parse(s), re, s);
  });

  it('checks digest length on construction and copies the digest', () => {
    assert.throws(() => new NixHash('sha256', Buffer.alloc(31)), /32 bytes/);
    const bytes = Buffer.alloc(16, 1);
    const h = new NixHash('md5', bytes);
    bytes[0] = 9;
    assert.equal(h.digest[0], 1);
  });
});
