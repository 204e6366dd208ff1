import assert from 'node:assert/strict';
import { it } from 'node:test';
import { NARINFO_FILE_NAME } from '../../src/nix/file-names';
import { narInfoPathHash } from '../../src/server/hot-path';

// The hot path's own check of a narinfo path must take exactly what the route's pattern takes:
// `/` + 32 characters of Nix's base 32 + `.narinfo`.
const routeHash = (url: string) => (url.startsWith('/') ? NARINFO_FILE_NAME.exec(url.slice(1))?.[1] : undefined);
const HASH = '0123456789abcdfghijklmnpqrsvwxyz';

it('takes the hash of a narinfo path and nothing else', () => {
  assert.equal(narInfoPathHash(`/${HASH}.narinfo`), HASH);
  for (const url of [
    `/${HASH.slice(0, 31)}e.narinfo`, // e, o, u and t are not in the alphabet
    `/${HASH.slice(0, 31)}A.narinfo`, // nor are capitals
    `x${HASH}.narinfo`,
    `/${HASH}.narinfx`,
    `/${HASH}xnarinfo`,
    `/${HASH.slice(0, 31)}\u00e9.narinfo`, // beyond ASCII
    `/${HASH.slice(0, 31)}/.narinfo`,
  ]) {
    assert.equal(url.length, 41, url);
    assert.equal(narInfoPathHash(url), undefined, url);
  }
  for (const url of [`/${HASH}x.narinfo`, `/${HASH.slice(1)}.narinfo`, `//${HASH}.narinfo`]) assert.equal(narInfoPathHash(url), undefined, url);
});

it('agrees with the route pattern for every character in every position', () => {
  for (let position = 0; position <= 40; position++) {
    for (let code = 0; code < 0x180; code++) {
      const base = `/${HASH}.narinfo`;
      const url = base.slice(0, position) + String.fromCharCode(code) + base.slice(position + 1);
      assert.equal(narInfoPathHash(url), routeHash(url), JSON.stringify(url));
    }
  }
});
