import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import {
  STORE_DIR,
  isStorePathBaseName,
  isStorePathHash,
  parseStorePath,
  storePathBaseName,
  storePathFromBaseName,
  storePathHash,
} from '../../src/nix/index.js';

// Real store paths created by Nix 2.8 (see fixtures/README.md).
const X = '/nix/store/m5zd3qj7c4bs4g5d8hqvs5pc5xicclfg-x';
const HASH = 'm5zd3qj7c4bs4g5d8hqvs5pc5xicclfg';

describe('store paths', () => {
  it('uses /nix/store by default', () => {
    assert.equal(STORE_DIR, '/nix/store');
  });

  it('recognises hash parts', () => {
    assert.equal(isStorePathHash(HASH), true);
    assert.equal(isStorePathHash('0'.repeat(32)), true);
    assert.equal(isStorePathHash(HASH.slice(1)), false);
    assert.equal(isStorePathHash(HASH + '0'), false);
    assert.equal(isStorePathHash('e' + HASH.slice(1)), false);
    assert.equal(isStorePathHash(HASH.toUpperCase()), false);
  });

  it('parses a store path', () => {
    assert.deepEqual(parseStorePath(X), { hash: HASH, name: 'x' });
    assert.deepEqual(parseStorePath(`/nix/store/${HASH}-hello-2.12.1`), { hash: HASH, name: 'hello-2.12.1' });
    assert.deepEqual(parseStorePath(`/nix/store/${HASH}-a+b-_?=.x`), { hash: HASH, name: 'a+b-_?=.x' });
    assert.equal(storePathHash(X), HASH);
    assert.equal(storePathBaseName(X), `${HASH}-x`);
    assert.equal(storePathFromBaseName(`${HASH}-x`), X);
  });

  it('honours another store directory', () => {
    assert.deepEqual(parseStorePath(`/gnu/store/${HASH}-x`, '/gnu/store'), { hash: HASH, name: 'x' });
    assert.deepEqual(parseStorePath(`/gnu/store/${HASH}-x`, '/gnu/store/'), { hash: HASH, name: 'x' });
    assert.throws(() => parseStorePath(X, '/gnu/store'), /not in store directory/);
    assert.equal(storePathFromBaseName(`${HASH}-x`, '/gnu/store/'), `/gnu/store/${HASH}-x`);
  });

  it('enforces the name length limit of 211', () => {
    assert.equal(parseStorePath(`/nix/store/${HASH}-${'a'.repeat(211)}`).name.length, 211);
    assert.throws(() => parseStorePath(`/nix/store/${HASH}-${'a'.repeat(212)}`), /invalid store path/);
  });

  it('rejects malformed store paths', () => {
    const bad = [
      '',
      HASH + '-x', // not absolute
      `/nix/store/${HASH}`, // no name
      `/nix/store/${HASH}-`, // empty name
      `/nix/store/${HASH}x`, // no dash
      `/nix/store/${HASH.slice(1)}-x`, // short hash
      `/nix/store/e${HASH.slice(1)}-x`, // bad hash char
      `/nix/store/${HASH}-.x`, // leading dot
      `/nix/store/${HASH}-a b`, // space
      `/nix/store/${HASH}-a/b`, // sub-path
      `/nix/store/${HASH}-x/`, // trailing slash
      `/nix/store//${HASH}-x`,
      `/nix/stor/${HASH}-x`,
      `/nix/store/${HASH}-caf\u00e9`,
    ];
    for (const p of bad) {
      assert.throws(() => parseStorePath(p), /invalid store path/, p);
    }
    assert.equal(isStorePathBaseName(`${HASH}-x`), true);
    assert.equal(isStorePathBaseName(`${HASH}-`), false);
  });
});
