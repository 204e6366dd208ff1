// Generates the upstream binary cache the benchmark serves: narinfos signed with a fresh key and
// uncompressed NARs of pseudo-random (incompressible) bytes, laid out as a `file://` Nix cache is.

import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { narInfoText, nix32, randomStorePath, sha256 } from './nix.mjs';

const CHUNK = 8 << 20;

const yieldToEventLoop = () => new Promise((resolve) => setImmediate(resolve));

/**
 * Writes `size` pseudo-random bytes (AES-CTR keystream, fast and incompressible); resolves with
 * their sha256. Yields between chunks so that Ctrl-C is handled promptly.
 */
async function writeRandomFile(file, size) {
  const cipher = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16));
  const zeros = Buffer.alloc(Math.min(CHUNK, size));
  const hash = createHash('sha256');
  const fd = openSync(file, 'wx');
  try {
    let left = size;
    while (left > 0) {
      const n = Math.min(left, zeros.length);
      const bytes = cipher.update(n === zeros.length ? zeros : zeros.subarray(0, n));
      hash.update(bytes);
      let off = 0;
      while (off < n) off += writeSync(fd, bytes, off, n - off);
      left -= n;
      await yieldToEventLoop();
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest();
}

/** One store path of the upstream: its narinfo and NAR, as URL paths. */
function entry(label, storePath, digest, size) {
  return {
    label,
    hash: storePath.hash,
    narInfoPath: `/${storePath.hash}.narinfo`,
    narPath: `/nar/${nix32(digest)}.nar`,
    size,
  };
}

/**
 * Fills `dir` with nix-cache-info, `count` small store paths (for narinfo hits) and one store path
 * per `{label, size}` in `large`. Resolves with `{ small: entry[], large: {label: entry} }`.
 */
export async function generateUpstream(dir, key, { count, smallSize, large }) {
  mkdirSync(path.join(dir, 'nar'), { recursive: true });
  writeFileSync(path.join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n');
  const put = (label, storePath, digest, size) => {
    writeFileSync(path.join(dir, `${storePath.hash}.narinfo`), narInfoText(key, storePath, digest, size));
    return entry(label, storePath, digest, size);
  };

  const small = [];
  for (let i = 0; i < count; i++) {
    const bytes = randomBytes(smallSize);
    const digest = sha256(bytes);
    writeFileSync(path.join(dir, 'nar', `${nix32(digest)}.nar`), bytes);
    small.push(put(`small-${i}`, randomStorePath(`bench-small-${i}`), digest, smallSize));
  }

  const big = {};
  for (const { label, size } of large) {
    const tmp = path.join(dir, 'nar', `.${label}.tmp`);
    const digest = await writeRandomFile(tmp, size);
    renameSync(tmp, path.join(dir, 'nar', `${nix32(digest)}.nar`));
    big[label] = put(label, randomStorePath(`bench-${label}`), digest, size);
  }
  return { small, large: big };
}
