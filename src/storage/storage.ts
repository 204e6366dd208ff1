// The Storage seam: where NAR bytes live. Local disk implements it for one machine; S3 will
// implement it for several. Keys are NAR file names (`<filehash>.nar.xz`); each implementation
// maps them onto ncps's layout `store/nar/<h0>/<h0h1>/<name>`.

import type { Readable } from 'node:stream';

export interface ByteRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, inclusive. */
  end: number;
}

export type AuxKind = 'ls' | 'log' | 'realisations' | 'build-trace-v2';

export interface StoredNar {
  stream: Readable;
  /** Size of the whole file, whatever the range. */
  size: number;
}

/** A file found by walking storage. */
export interface StoredFileInfo {
  /** File name as the get/delete methods take it (`<hash>.nar.xz`, `<hash>.ls`). */
  name: string;
  size: number;
  /** Last modification, in milliseconds since the epoch. */
  modifiedAt: number;
}

/** Aux files named by one flat file name, which storage can list. */
export type ListableAuxKind = 'ls';

export interface Storage {
  /** Opens a stored NAR, or returns undefined when it is not there. */
  getNar(name: string, range?: ByteRange): Promise<StoredNar | undefined>;
  /** Size of a stored NAR, or undefined when it is not there. */
  statNar(name: string): Promise<number | undefined>;
  /**
   * Takes a complete, already verified file and makes it visible under `name` atomically:
   * readers see either nothing or the whole file. The temporary file is consumed.
   */
  putNarFromFile(name: string, tempFile: string): Promise<void>;
  deleteNar(name: string): Promise<void>;
  /**
   * Moves a NAR whose bytes are wrong out of the served layout, to `quarantineKey(name, at)`:
   * kept for inspection, never served, listed or swept. Returns that key, or undefined when
   * there was no such NAR.
   */
  quarantineNar(name: string, at: number): Promise<string | undefined>;
  /** Every NAR file in storage, in no particular order (for the orphan sweep). */
  listNars(): AsyncIterable<StoredFileInfo>;
  /** A local directory for downloads in progress. */
  readonly tempDir: string;
  /** Legacy narinfo files (`store/narinfo/<h0>/<h0h1>/<hash>.narinfo`), from before the database. */
  getLegacyNarInfo(hash: string): Promise<string | undefined>;
  /** Hashes of every legacy narinfo file in storage (any order). */
  listLegacyNarInfos(): AsyncIterable<string>;
  deleteLegacyNarInfo(hash: string): Promise<void>;
  /**
   * Moves a legacy narinfo file that cannot be migrated out of the way, to
   * `store/quarantine/narinfo/<hash>.narinfo` (kept for a person to look at); returns where it went.
   */
  quarantineLegacyNarInfo(hash: string): Promise<string>;
  /**
   * Small files kept beside the NARs: NAR listings (`ls`, `<hash>.ls`), build logs (`log`,
   * `<drv name>`), realisations (`realisations`, `<drv hash hex>!<output>.doi`) and build trace
   * entries (`build-trace-v2`, `<drv name>/<output>.doi`), stored at `store/<kind>/<h0>/<h0h1>/<name>`.
   */
  getAuxFile(kind: AuxKind, name: string): Promise<Buffer | undefined>;
  /** Stores a small file atomically (whole or not at all). */
  putAuxFile(kind: AuxKind, name: string, data: Buffer): Promise<void>;
  deleteAuxFile(kind: AuxKind, name: string): Promise<void>;
  /** Size of a small file, or undefined when it is not there. */
  statAuxFile(kind: AuxKind, name: string): Promise<number | undefined>;
  /** Every aux file of a kind, in no particular order (for the orphan sweep). */
  listAuxFiles(kind: ListableAuxKind): AsyncIterable<StoredFileInfo>;
  /** The legacy signing key file (`config/cache.key`), if an older ncps left one. */
  getLegacySecretKey(): Promise<string | undefined>;
  /** Fails, saying why, when storage cannot take new files right now (for /readyz). */
  checkWritable(): Promise<void>;
  /**
   * A chunk file the Go ncps's content-defined chunking wrote (`store/chunk/<a>/<ab>/<hash>`,
   * zstd-compressed), as stored; undefined when it is not there. Read when taking it over.
   */
  getChunk(hash: string): Promise<Readable | undefined>;
  /** Removes such a chunk file (only when the operator asks, once the NARs were taken over). */
  deleteChunk(hash: string): Promise<void>;
}

/** The Go ncps names chunks by their BLAKE3 digest in hex; nothing else is read as a chunk. */
export const CHUNK_NAME = /^[0-9a-f]{64}$/;

/** Where a Go ncps chunk file lives, relative to the storage root or bucket. */
export function chunkKey(hash: string): string {
  if (!CHUNK_NAME.test(hash)) throw new Error(`not a chunk name: ${hash}`);
  return ['store', 'chunk', ...fanOut(hash)].join('/');
}

/** Where legacy narinfo files that cannot be migrated are moved (relative to the root or bucket). */
export const QUARANTINE_PREFIX = 'store/quarantine/narinfo';

/** Where a small auxiliary file lives, relative to the storage root or bucket. */
export function auxKey(kind: AuxKind, name: string): string {
  return ['store', kind, ...fanOut(name)].join('/');
}

/** Where a quarantined NAR goes, relative to the storage root or bucket (outside `store/nar`). */
export function quarantineKey(name: string, at: number): string {
  const stamp = new Date(at).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `store/quarantine/nar/${name}.${stamp}`;
}

/** True when `name` sits where the fan-out puts it (`<a>/<ab>/<ab…>`): anything else is not ours. */
export function inFanOut(first: string, second: string, name: string): boolean {
  const [a, ab] = fanOut(name);
  return first === a && second === ab;
}

/** `abcd….nar.xz` → [`a`, `ab`, name]: ncps's two-level fan-out. */
export function fanOut(name: string): [string, string, string] {
  return [name.slice(0, 1), name.slice(0, 2), name];
}
