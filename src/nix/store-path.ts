// Store paths: `<storeDir>/<32 nix32 chars>-<name>`. The hash part is what
// binary caches key narinfo files by (`<hash>.narinfo`).

import { isNix32 } from './nix32.js';

export const STORE_DIR = '/nix/store';

/** Length of the hash part: nix32 of a 160-bit (20-byte) digest. */
export const STORE_PATH_HASH_LENGTH = 32;
/** Longest name Nix accepts (255-char file name limit minus hash and dash). */
export const STORE_PATH_NAME_MAX = 211;

const NAME_RE = /^[A-Za-z0-9+\-._?=]+$/;

export interface StorePathParts {
  hash: string;
  name: string;
}

export function isStorePathHash(s: string): boolean {
  return isNix32(s, STORE_PATH_HASH_LENGTH);
}

export function isStorePathName(name: string): boolean {
  return name.length > 0 && name.length <= STORE_PATH_NAME_MAX && !name.startsWith('.') && NAME_RE.test(name);
}

/** Parse a base name such as `abc…xyz-hello-2.12` (no directory). */
export function parseStorePathBaseName(baseName: string): StorePathParts {
  const hash = baseName.slice(0, STORE_PATH_HASH_LENGTH);
  if (!isStorePathHash(hash) || baseName[STORE_PATH_HASH_LENGTH] !== '-') {
    throw new Error(`invalid store path '${baseName}': must start with a 32-character nix32 hash and '-'`);
  }
  const name = baseName.slice(STORE_PATH_HASH_LENGTH + 1);
  if (!isStorePathName(name)) {
    throw new Error(
      `invalid store path '${baseName}': name must be 1-${STORE_PATH_NAME_MAX} characters of [A-Za-z0-9+-._?=] not starting with '.'`,
    );
  }
  return { hash, name };
}

export function isStorePathBaseName(baseName: string): boolean {
  try {
    parseStorePathBaseName(baseName);
    return true;
  } catch {
    return false;
  }
}

/** Parse a full store path directly inside `storeDir` (no sub-paths). */
export function parseStorePath(path: string, storeDir: string = STORE_DIR): StorePathParts {
  const dir = storeDir.replace(/\/+$/, '');
  const prefix = `${dir}/`;
  if (!path.startsWith(prefix)) {
    throw new Error(`invalid store path '${path}': not in store directory '${dir}'`);
  }
  const base = path.slice(prefix.length);
  if (base.includes('/')) throw new Error(`invalid store path '${path}': has a sub-path`);
  return parseStorePathBaseName(base);
}

/** The 32-character hash part of a full store path. */
export function storePathHash(path: string, storeDir: string = STORE_DIR): string {
  return parseStorePath(path, storeDir).hash;
}

/** The base name (`<hash>-<name>`) of a full store path. */
export function storePathBaseName(path: string, storeDir: string = STORE_DIR): string {
  const { hash, name } = parseStorePath(path, storeDir);
  return `${hash}-${name}`;
}

/** Full store path for a base name. */
export function storePathFromBaseName(baseName: string, storeDir: string = STORE_DIR): string {
  parseStorePathBaseName(baseName);
  return `${storeDir.replace(/\/+$/, '')}/${baseName}`;
}
