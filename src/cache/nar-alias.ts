// Uncompressed NARs asked for by their old name. The Go ncps served uncompressed NARs (Compression:
// none, and every CDC-chunked one) as `nar/<hash>.nar`; after a takeover this ncps keeps them as
// `<hash>.nar.zst` and its narinfos say so. A Nix client that still holds the Go ncps's narinfo (it
// keeps narinfos for up to a month) asks for the `.nar`: it gets the same NAR, decompressed as it
// is sent. Only names this ncps has a stored `.nar.zst` record for are answered this way.

import { spawn } from 'node:child_process';
import { PassThrough, type Readable } from 'node:stream';

/** `<hash>.nar` → `<hash>.nar.zst`; undefined for any other name. */
export function zstdNameOf(name: string): string | undefined {
  return /^[0-9a-df-np-sv-z]{52}\.nar$/.test(name) ? `${name}.zst` : undefined;
}

/** The decompressed bytes of a zstd stream; the stream fails if zstd does (a client then sees a cut NAR). */
export function zstdDecompressed(compressed: Readable): Readable {
  const out = new PassThrough();
  const zstd = spawn('zstd', ['-dcq'], { stdio: ['pipe', 'pipe', 'ignore'] });
  zstd.once('error', (error) => out.destroy(error));
  zstd.stdin.on('error', () => undefined);
  compressed.once('error', (error) => {
    zstd.kill();
    out.destroy(error);
  });
  compressed.pipe(zstd.stdin);
  zstd.stdout.pipe(out, { end: false });
  zstd.once('close', (code) => {
    if (code === 0) out.end();
    else out.destroy(new Error(`zstd could not decompress the NAR (exit ${code})`));
  });
  // A client that goes away stops the decompression too.
  out.once('close', () => {
    compressed.destroy();
    if (zstd.exitCode === null) zstd.kill();
  });
  return out;
}
