import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { NIX32_ALPHABET, decodeNix32, encodeNix32, isNix32, nix32Length } from '../../src/nix/index.js';

// [hex, nix32] pairs from the real Nix 2.8 client:
//   nix-hash --type <algo> --to-base32 <hex>   (hex from md5sum/sha1sum/sha256sum/sha512sum)
// cross-checked with `nix-hash --flat --base32 --type <algo> FILE` for the files
// '' (empty), 'hello\n' and 'abc'; the 20-byte vectors come from
// `nix-hash --flat --truncate [--base32] --type sha256 FILE`.
const VECTORS: Array<[string, string]> = [
  // empty file
  ['d41d8cd98f00b204e9800998ecf8427e', '3y8bwfr609h3lh9ch0izcqq7fl'],
  ['da39a3ee5e6b4b0d3255bfef95601890afd80709', '143xibwh31h9bvxzalr0sjvbbvpa6ffs'],
  ['e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', '0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73'],
  [
    'cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e',
    '0zdl9zrg8r3i9c1g90lgg9ip5ijzv3yhz91i0zzn3r8ap9ws784gkp9dk9j3aglhgf1amqb0pj21mh7h1nxcl18akqvvf7ggqsy30yg',
  ],
  // 'hello\n'
  ['b1946ac92492d2347c6235b4d2611184', '4425hx5d1mc9y39llj4k4nm55i'],
  ['f572d396fae9206628714fb2ce00f72e94f2258f', 'iwjz551fyw0cxcjgf4l6c879zabd6wpm'],
  ['5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03', '00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq'],
  [
    'e7c22b994c59d9cf2b48e549b1e24666636045930d3da7c1acb299d1c3b7f931f94aae41edda2c2b207a36e10f8bcb8d45223e54878f5b316e7ce3b6bc019629',
    '0lrc0dwnvipqviibf7qfm1y492qvjwb1zhkcyi05cndmva1mr5gjcgrnz1x36djmk0sfg8djd2n0qv68vib2jg590mwznar9jcjphp7',
  ],
  // 'abc'
  ['900150983cd24fb0d6963f7d28e17f72', '3jgzhjhz9zjvbb0kyj7jc500ch'],
  ['a9993e364706816aba3e25717850c26c9cd0d89d', 'kpcd173cq987hw957sx6m0868wv3x6d9'],
  ['ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', '1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s'],
  [
    'ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f',
    '2gs8k559z4rlahfx0y688s49m2vvszylcikrfinm30ly9rak69236nkam5ydvly1ai7xac99vxfc4ii84hawjbk876blyk1jfhkbbyx',
  ],
  // 20-byte (store-path sized) digests
  ['3b3e8165a0537de02bf94eb210fbd9d21bb4fc71', 'f7yb86yjv7xi1cjfz4my0zakl1jq2giv'],
  ['2c6f6c233b11308bb34155735dae2223b00361a3', 'ldhh7c134ap5swsm86rqnc0i7cinqvrc'],
  // edge patterns: all zeros, all ones, lowest and highest bit set
  ['0000000000000000000000000000000000000000000000000000000000000000', '0000000000000000000000000000000000000000000000000000'],
  ['ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff', '1zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz'],
  ['0100000000000000000000000000000000000000000000000000000000000080', '1000000000000000000000000000000000000000000000000001'],
];

describe('nix32', () => {
  it('uses the Nix alphabet (no e, o, t, u)', () => {
    assert.equal(NIX32_ALPHABET, '0123456789abcdfghijklmnpqrsvwxyz');
    assert.equal(NIX32_ALPHABET.length, 32);
  });

  it('encodes the vectors produced by nix-hash', () => {
    for (const [hex, expected] of VECTORS) {
      assert.equal(encodeNix32(Buffer.from(hex, 'hex')), expected, hex);
    }
  });

  it('decodes the vectors produced by nix-hash', () => {
    for (const [hex, s] of VECTORS) {
      assert.equal(decodeNix32(s).toString('hex'), hex, s);
      assert.ok(isNix32(s));
      assert.ok(isNix32(s, s.length));
    }
  });

  it('computes encoded lengths', () => {
    assert.equal(nix32Length(0), 0);
    assert.equal(nix32Length(1), 2);
    assert.equal(nix32Length(16), 26);
    assert.equal(nix32Length(20), 32);
    assert.equal(nix32Length(32), 52);
    assert.equal(nix32Length(64), 103);
  });

  it('round-trips random byte strings of every small length', () => {
    for (let n = 0; n <= 70; n++) {
      for (let k = 0; k < 10; k++) {
        const bytes = randomBytes(n);
        const s = encodeNix32(bytes);
        assert.equal(s.length, nix32Length(n));
        assert.match(s, /^[0-9a-df-np-sv-z]*$/);
        assert.deepEqual(decodeNix32(s), bytes);
      }
    }
  });

  it('encodes the empty string', () => {
    assert.equal(encodeNix32(new Uint8Array(0)), '');
    assert.equal(decodeNix32('').length, 0);
  });

  it('rejects characters outside the alphabet', () => {
    const good = '1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s';
    for (const bad of ['e', 'o', 't', 'u', 'A', 'Z', '-', ' ', 'é']) {
      const s = good.slice(0, 10) + bad + good.slice(11);
      assert.throws(() => decodeNix32(s), Error, bad);
      assert.equal(isNix32(s), false);
    }
  });

  it('rejects set bits beyond the last byte, as Nix does', () => {
    // `nix-hash --type sha256 --to-base16 2zzz…` and `--type md5 … 8zzz…` fail
    // with "invalid base-32 hash"; 1zzz… and 7zzz… are accepted.
    assert.throws(() => decodeNix32('2' + 'z'.repeat(51)), /non-zero bits/);
    assert.throws(() => decodeNix32('8' + 'z'.repeat(25)), /non-zero bits/);
    assert.equal(decodeNix32('7' + 'z'.repeat(25)).toString('hex'), 'ff'.repeat(16));
    assert.equal(isNix32('2' + 'z'.repeat(51)), false);
  });

  it('rejects lengths that no byte string encodes to', () => {
    for (const len of [1, 3, 6, 9, 25, 27, 51, 54]) {
      assert.throws(() => decodeNix32('0'.repeat(len)), /length/, String(len));
    }
  });

  it('isNix32 checks an expected length', () => {
    const s = 'f7yb86yjv7xi1cjfz4my0zakl1jq2giv';
    assert.equal(isNix32(s, 32), true);
    assert.equal(isNix32(s, 52), false);
    assert.equal(isNix32(s.slice(1), 31), false);
  });
});
