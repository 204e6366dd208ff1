// The bundle as built (npm run build): what every process, each worker included, loads and keeps
// in memory for its whole life (see scripts/build.mjs).

import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';

const BUNDLE = path.resolve(__dirname, '../../..', 'dist', 'ncps.cjs');

describe('dist/ncps.cjs', () => {
  it('is ASCII only, so that V8 holds its source as a one-byte string (half the memory)', () => {
    const bytes = readFileSync(BUNDLE);
    const first = bytes.findIndex((b) => b > 0x7f);
    assert.equal(first, -1, `non-ASCII byte at offset ${first}: ${bytes.subarray(Math.max(0, first - 40), first + 10).toString('utf8')}`);
  });

  it('stays at most 8 MiB: above, glibc keeps ~36 MiB of compiler memory in most starts', () => {
    const size = statSync(BUNDLE).size;
    assert.ok(size <= 8 * 1024 * 1024, `${size} bytes; see scripts/build.mjs before raising this`);
  });

  it('still reads the Go duration unit µs, written as an escape in its regular expression', () => {
    const literal = /const part ?= ?\/(.+?)\/y;/.exec(readFileSync(BUNDLE, 'latin1'));
    assert.ok(literal, 'the duration pattern of config/formats.ts is in the bundle');
    assert.ok(literal[1]!.includes('\\u00b5'), literal[1]);
    const match = new RegExp(literal[1]!, 'y').exec('250µs');
    assert.deepEqual(match && [match[1], match[2]], ['250', 'µs']);
  });
});
