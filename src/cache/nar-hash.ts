// Checks a compressed NAR against the narinfo's NarHash/NarSize when the upstream gave no
// FileHash: nothing unverified may be committed, so the file is decompressed and hashed first.
// Brotli is built into Node; the other formats go through the usual command-line tools.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createBrotliDecompress } from 'node:zlib';
import type { Compression } from '../nix';

const TOOLS: Partial<Record<Compression, [string, string[]]>> = {
  xz: ['xz', ['-dc']],
  zstd: ['zstd', ['-dcq']],
  bzip2: ['bzip2', ['-dc']],
  lz4: ['lz4', ['-dc']],
  lzip: ['lzip', ['-dc']],
};

/** sha256 digest and byte count of the decompressed contents of `file`. */
export async function hashDecompressed(file: string, compression: Compression): Promise<{ sha256: Buffer; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      size += chunk.length;
      callback();
    },
  });
  if (compression === 'none') await pipeline(createReadStream(file), sink);
  else if (compression === 'br') await pipeline(createReadStream(file), createBrotliDecompress(), sink);
  else await pipeThroughTool(file, compression, sink);
  return { sha256: hash.digest(), size };
}

function pipeThroughTool(file: string, compression: Compression, sink: Writable): Promise<void> {
  const tool = TOOLS[compression];
  if (!tool) return Promise.reject(new Error(`cannot decompress ${compression}`));
  const [command, args] = tool;
  return new Promise((resolve, reject) => {
    const child = spawn(command, [...args, file], { stdio: ['ignore', 'pipe', 'ignore'] });
    child.once('error', (error) => reject(new Error(`cannot run ${command} to verify a ${compression} NAR: ${error.message}`)));
    const copied = pipeline(child.stdout as Readable, sink);
    child.once('close', (code) => {
      copied.then(() => (code === 0 ? resolve() : reject(new Error(`${command} could not decompress the NAR (exit ${code})`))), reject);
    });
  });
}
