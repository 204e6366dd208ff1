// The `.narinfo` text format binary caches serve for each store path, and
// the fingerprint that narinfo signatures are made over.

import { type Compression, parseCompression } from './compression.js';
import { NixHash } from './hash.js';
import {
  STORE_DIR,
  parseStorePath,
  parseStorePathBaseName,
  storePathFromBaseName,
} from './store-path.js';

export interface NarInfo {
  storePath: string;
  url: string;
  compression: Compression;
  /** Whether the text had a Compression line (so formatting round-trips). */
  compressionGiven: boolean;
  fileHash?: NixHash;
  fileSize?: number;
  narHash: NixHash;
  narSize: number;
  /** Base names, e.g. 'abc...-foo'. */
  references: string[];
  /** Base name. */
  deriver?: string;
  system?: string;
  sigs: string[];
  ca?: string;
  /** Unknown keys, kept in order. */
  extra: Array<[string, string]>;
}

export class NarInfoError extends Error {
  override name = 'NarInfoError';
}

// Keys this module understands; everything else goes to `extra`.
const SINGLE_KEYS = new Set([
  'StorePath',
  'URL',
  'Compression',
  'FileHash',
  'FileSize',
  'NarHash',
  'NarSize',
  'References',
  'Deriver',
  'System',
  'CA',
]);

const KEY_RE = /^[A-Za-z0-9_-]+$/;
const DECIMAL_RE = /^(0|[1-9][0-9]*)$/;

function parseSize(key: string, value: string): number {
  const n = Number(value);
  if (!DECIMAL_RE.test(value) || !Number.isSafeInteger(n)) {
    throw new NarInfoError(`narinfo ${key} '${value}' is not a decimal integer`);
  }
  return n;
}

function parseHashField(key: string, value: string): NixHash {
  try {
    return NixHash.parse(value);
  } catch (e) {
    throw new NarInfoError(`narinfo ${key}: ${(e as Error).message}`);
  }
}

function checkBaseName(key: string, value: string): string {
  try {
    parseStorePathBaseName(value);
  } catch (e) {
    throw new NarInfoError(`narinfo ${key}: ${(e as Error).message}`);
  }
  return value;
}

/** Split `Key: value` lines; tolerates CRLF, a missing final newline and blank lines. */
function splitFields(text: string): Array<[string, string]> {
  const fields: Array<[string, string]> = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.endsWith('\r') ? lines[i]!.slice(0, -1) : lines[i]!;
    if (line.trim() === '') continue;
    const colon = line.indexOf(':');
    const key = colon < 0 ? '' : line.slice(0, colon);
    if (!KEY_RE.test(key)) throw new NarInfoError(`narinfo line ${i + 1} is not 'Key: value': ${JSON.stringify(line)}`);
    // Nix writes exactly one space after the colon; also accept none (e.g. a
    // trimmed empty 'References:').
    const rest = line.slice(colon + 1);
    fields.push([key, rest.startsWith(' ') ? rest.slice(1) : rest]);
  }
  return fields;
}

/** Parse narinfo text; StorePath must lie in `storeDir`. Throws NarInfoError. */
export function parseNarInfo(text: string, storeDir: string = STORE_DIR): NarInfo {
  const seen = new Map<string, string>();
  const sigs: string[] = [];
  const extra: Array<[string, string]> = [];
  for (const [key, value] of splitFields(text)) {
    if (key === 'Sig') {
      if (value === '') throw new NarInfoError('narinfo has an empty Sig');
      sigs.push(value);
    } else if (SINGLE_KEYS.has(key)) {
      if (seen.has(key)) throw new NarInfoError(`narinfo has a duplicate ${key} line`);
      seen.set(key, value);
    } else {
      extra.push([key, value]);
    }
  }

  const required = (key: string): string => {
    const v = seen.get(key);
    if (v === undefined || v === '') throw new NarInfoError(`narinfo is missing ${key}`);
    return v;
  };

  const storePath = required('StorePath');
  try {
    parseStorePath(storePath, storeDir);
  } catch (e) {
    throw new NarInfoError(`narinfo StorePath: ${(e as Error).message}`);
  }
  const url = required('URL');
  const narHash = parseHashField('NarHash', required('NarHash'));
  const narSize = parseSize('NarSize', required('NarSize'));
  if (narSize === 0) throw new NarInfoError('narinfo NarSize must be positive');

  const compressionText = seen.get('Compression');
  let compression: Compression;
  try {
    compression = parseCompression(compressionText);
  } catch (e) {
    throw new NarInfoError(`narinfo Compression: ${(e as Error).message}`);
  }

  const info: NarInfo = {
    storePath,
    url,
    compression,
    compressionGiven: compressionText !== undefined,
    narHash,
    narSize,
    references: (seen.get('References') ?? '')
      .split(' ')
      .filter((r) => r !== '')
      .map((r) => checkBaseName('References', r)),
    sigs,
    extra,
  };

  const fileHash = seen.get('FileHash');
  if (fileHash !== undefined) info.fileHash = parseHashField('FileHash', fileHash);
  const fileSize = seen.get('FileSize');
  if (fileSize !== undefined) info.fileSize = parseSize('FileSize', fileSize);
  const deriver = seen.get('Deriver');
  // Old caches write 'unknown-deriver' for "none"; Nix reads it as absent.
  if (deriver !== undefined && deriver !== 'unknown-deriver') info.deriver = checkBaseName('Deriver', deriver);
  const system = seen.get('System');
  if (system !== undefined) info.system = system;
  const ca = seen.get('CA');
  if (ca !== undefined) info.ca = ca;
  return info;
}

export function formatNarInfo(n: NarInfo): string {
  const lines: string[] = [`StorePath: ${n.storePath}`, `URL: ${n.url}`];
  if (n.compressionGiven) lines.push(`Compression: ${n.compression}`);
  if (n.fileHash) lines.push(`FileHash: ${n.fileHash.toNix32()}`);
  if (n.fileSize !== undefined) lines.push(`FileSize: ${n.fileSize}`);
  lines.push(`NarHash: ${n.narHash.toNix32()}`, `NarSize: ${n.narSize}`);
  // Nix always writes References, even with nothing after the space.
  lines.push(`References: ${n.references.join(' ')}`);
  if (n.deriver !== undefined) lines.push(`Deriver: ${n.deriver}`);
  if (n.system !== undefined) lines.push(`System: ${n.system}`);
  for (const sig of n.sigs) lines.push(`Sig: ${sig}`);
  if (n.ca !== undefined) lines.push(`CA: ${n.ca}`);
  for (const [key, value] of n.extra) lines.push(`${key}: ${value}`);
  return lines.map((l) => `${l}\n`).join('');
}

/**
 * The string narinfo signatures sign:
 * `1;<storePath>;<sha256:nix32 narHash>;<narSize>;<comma-joined reference paths>`.
 * Nix holds references in a sorted set, so sort and de-duplicate here too;
 * otherwise a cache listing them in another order would fail to verify.
 */
export function narInfoFingerprint(n: NarInfo, storeDir: string = STORE_DIR): string {
  if (n.narHash.algorithm !== 'sha256') {
    throw new Error(`cannot fingerprint ${n.storePath}: NarHash is ${n.narHash.algorithm}, not sha256`);
  }
  const refs = [...new Set(n.references)].sort().map((r) => storePathFromBaseName(r, storeDir));
  return `1;${n.storePath};${n.narHash.toNix32()};${n.narSize};${refs.join(',')}`;
}

/** The 32-character hash part of the narinfo's store path. */
export function narInfoHash(n: NarInfo): string {
  // Works for any store directory: the hash starts the last path component.
  const base = n.storePath.slice(n.storePath.lastIndexOf('/') + 1);
  return parseStorePathBaseName(base).hash;
}
