// The file names ncps serves, as strict patterns: anything else is rejected before it reaches the
// cache core, which is also what keeps path traversal out of storage.

import { compressionFromExtension, type Compression } from './compression';

const NIX32 = '[0-9a-df-np-sv-z]';

/** `<32 nix32>.narinfo` */
export const NARINFO_FILE_NAME = new RegExp(`^(${NIX32}{32})\\.narinfo$`);

/** `<32 nix32>.ls`: a NAR listing. */
export const LISTING_FILE_NAME = new RegExp(`^(${NIX32}{32})\\.ls$`);

/** `<32 nix32>-<name>`: a store path base name, as build logs are named (`log/<drv base name>`). */
export const LOG_NAME = new RegExp(`^${NIX32}{32}-[A-Za-z0-9+\\-._?=]{1,211}$`);

/**
 * `<52 nix32>.nar[.ext]` (nix copy, ncps) or `<32 nix32>-<52 nix32>.nar[.ext]` (nix-serve).
 * The extension is captured loosely so that an unknown one can be reported as such.
 */
export const NAR_FILE_NAME = new RegExp(`^(?:${NIX32}{52}|${NIX32}{32}-${NIX32}{52})\\.nar(\\.[A-Za-z0-9]+)?$`);

/**
 * `<52 nix32>.nar[.ext]` where the hash is the sha256 of the file itself: what `nix copy` writes
 * and what ncps serves (uploads must be named this way; upstream names of this form are kept).
 */
export const HASH_NAMED_NAR = new RegExp(`^(${NIX32}{52})\\.nar(\\.[a-z0-9]+)?$`);

export type NarNameCheck = { ok: true; compression: Compression } | { ok: false; reason: string };

export function checkNarFileName(name: string): NarNameCheck {
  const match = NAR_FILE_NAME.exec(name);
  if (!match) return { ok: false, reason: 'invalid NAR file name' };
  const compression = compressionFromExtension(match[1] ?? '');
  if (!compression) return { ok: false, reason: `unknown NAR extension ${match[1]}` };
  return { ok: true, compression };
}
