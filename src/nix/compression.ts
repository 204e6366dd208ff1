// Compression methods a binary cache may use for NAR files, with the file
// extension Nix appends to `.nar` for each (e.g. `nar/<hash>.nar.xz`).

export type Compression = 'none' | 'xz' | 'zstd' | 'bzip2' | 'br' | 'lz4' | 'lzip';

const EXTENSIONS: Readonly<Record<Compression, string>> = {
  none: '',
  xz: '.xz',
  zstd: '.zst',
  bzip2: '.bz2',
  br: '.br',
  lz4: '.lz4',
  lzip: '.lzip',
};

export const COMPRESSIONS: readonly Compression[] = Object.keys(EXTENSIONS) as Compression[];

export function isKnownCompression(s: string): s is Compression {
  return Object.prototype.hasOwnProperty.call(EXTENSIONS, s);
}

/** Extension after `.nar`: '' for none, otherwise with the leading dot. */
export function narFileExtension(c: Compression): string {
  return EXTENSIONS[c];
}

/** Inverse of narFileExtension; undefined for extensions no method uses. */
export function compressionFromExtension(ext: string): Compression | undefined {
  return COMPRESSIONS.find((c) => EXTENSIONS[c] === ext);
}

/**
 * Interpret a narinfo `Compression:` value. Nix treats a missing (or empty)
 * value as bzip2, the historical default of binary caches.
 */
export function parseCompression(value: string | undefined): Compression {
  if (value === undefined || value === '') return 'bzip2';
  if (!isKnownCompression(value)) throw new Error(`unknown compression '${value}'`);
  return value;
}
