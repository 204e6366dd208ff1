import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseRange, resolveRange } from '../../src/cache/range';

describe('HTTP ranges', () => {
  it('parses the single-range forms', () => {
    assert.deepEqual(parseRange('bytes=0-99'), { start: 0, end: 99 });
    assert.deepEqual(parseRange('bytes=100-'), { start: 100 });
    assert.deepEqual(parseRange('bytes=-500'), { suffix: 500 });
    assert.deepEqual(parseRange(' bytes = 5 - 7 '), { start: 5, end: 7 });
  });

  it('ignores what it does not serve: other units, several ranges, nonsense', () => {
    for (const header of [undefined, '', 'items=0-1', 'bytes=0-1,5-6', 'bytes=-', 'bytes=9-3', 'bytes=a-b']) {
      assert.equal(parseRange(header), undefined, String(header));
    }
  });

  it('resolves against the file size', () => {
    assert.deepEqual(resolveRange({ start: 0, end: 99 }, 1000), { start: 0, end: 99 });
    assert.deepEqual(resolveRange({ start: 900, end: 5000 }, 1000), { start: 900, end: 999 }, 'end is clamped');
    assert.deepEqual(resolveRange({ start: 10 }, 1000), { start: 10, end: 999 });
    assert.deepEqual(resolveRange({ suffix: 100 }, 1000), { start: 900, end: 999 });
    assert.deepEqual(resolveRange({ suffix: 5000 }, 1000), { start: 0, end: 999 });
    assert.equal(resolveRange({ start: 1000 }, 1000), 'unsatisfiable');
    assert.equal(resolveRange({ suffix: 0 }, 1000), 'unsatisfiable');
    assert.equal(resolveRange({ suffix: 10 }, 0), 'unsatisfiable');
  });
});
