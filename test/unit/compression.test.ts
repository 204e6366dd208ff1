import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import {
  COMPRESSIONS,
  compressionFromExtension,
  isKnownCompression,
  narFileExtension,
  parseCompression,
} from '../../src/nix/index.js';

const TABLE: Array<[string, string]> = [
  ['none', ''],
  ['xz', '.xz'],
  ['zstd', '.zst'],
  ['bzip2', '.bz2'],
  ['br', '.br'],
  ['lz4', '.lz4'],
  ['lzip', '.lzip'],
];

describe('compression', () => {
  it('maps each method to its NAR file extension and back', () => {
    assert.deepEqual([...COMPRESSIONS].sort(), TABLE.map(([c]) => c).sort());
    for (const [c, ext] of TABLE) {
      assert.ok(isKnownCompression(c));
      assert.equal(narFileExtension(c as never), ext, c);
      assert.equal(compressionFromExtension(ext), c, ext);
    }
  });

  it('does not recognise other extensions', () => {
    for (const ext of ['.gz', '.zstd', 'xz', '.XZ', '.bzip2', '.nar']) {
      assert.equal(compressionFromExtension(ext), undefined, ext);
    }
  });

  it('parses narinfo Compression values, defaulting to bzip2', () => {
    assert.equal(parseCompression(undefined), 'bzip2');
    assert.equal(parseCompression(''), 'bzip2');
    for (const [c] of TABLE) assert.equal(parseCompression(c), c);
    for (const bad of ['gzip', 'XZ', 'zst', ' xz', 'unknown']) {
      assert.throws(() => parseCompression(bad), /unknown compression/, bad);
      assert.equal(isKnownCompression(bad), false);
    }
    assert.equal(isKnownCompression('toString'), false);
  });
});
