// Turns a NAR the Go ncps kept only as CDC chunks back into one whole file. Each chunk file is a
// zstd frame of a piece of the NAR; frames placed one after another are a valid zstd stream of
// the whole, so the chunks, concatenated in `nar_file_chunks` order, *are* the `.nar.zst` file.
// It is checked before anything is committed: decompressed, it must hash to the narinfo's NarHash
// and be NarSize long. The chunk files themselves are only read, never removed here.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { NixHash } from '../../nix';
import type { Storage } from '../../storage/storage';
import { Skip } from './map';
import type { GoChunk } from './source';

export interface Reassembled {
  /** Storage name of the whole file (`<hash>.nar.zst`). */
  name: string;
  size: number;
  /** sha256 of the file as stored. */
  fileHash: NixHash;
}

/**
 * Reassembles `chunks` into storage as `<narFileHash>.nar.zst`, verified against NarHash and
 * NarSize. Throws Skip (nothing stored) when a chunk is missing or the result does not match.
 */
export async function reassembleChunks(options: {
  storage: Storage;
  narFileHash: string;
  chunks: readonly GoChunk[];
  narHash: NixHash;
  narSize: number;
}): Promise<Reassembled> {
  const { storage, chunks, narHash, narSize } = options;
  const name = `${options.narFileHash}.nar.zst`;
  if (chunks.length === 0) throw new Skip('chunked NAR without chunks');
  chunks.forEach((c, i) => {
    if (c.index !== i) throw new Skip('chunked NAR with a gap in its chunk list', `chunk ${i} missing`);
  });
  const total = chunks.reduce((sum, c) => sum + c.size, 0);
  if (total !== narSize) throw new Skip('chunked NAR does not add up to its NarSize', `${total} bytes of chunks, NarSize ${narSize}`);

  const temp = path.join(storage.tempDir, `dechunk-${randomBytes(8).toString('hex')}.nar.zst.part`);
  const fileHash = createHash('sha256');
  let fileSize = 0;
  const narHasher = createHash('sha256');
  let narBytes = 0;
  const zstd = spawn('zstd', ['-dcq'], { stdio: ['pipe', 'pipe', 'pipe'] });
  // zstd stops reading when the data is corrupt: its exit status says so, not the broken pipe.
  zstd.stdin.on('error', () => undefined);
  let stderr = '';
  zstd.stderr.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-2000)));
  const exited = new Promise<number | null>((resolve, reject) => {
    zstd.once('error', (error) => reject(new Error(`cannot run zstd to reassemble a chunked NAR: ${error.message}`)));
    zstd.once('close', resolve);
  });
  const decompressed = pipeline(
    zstd.stdout as Readable,
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        narHasher.update(chunk);
        narBytes += chunk.length;
        callback();
      },
    }),
  );
  const out = createWriteStream(temp, { flags: 'wx' });
  out.on('error', () => undefined); // reported through the write callbacks
  try {
    try {
      for (const chunk of chunks) {
        const stream = await storage.getChunk(chunk.hash);
        if (!stream) throw new Skip('chunk missing from storage', `store/chunk/…/${chunk.hash}`);
        for await (const piece of stream as AsyncIterable<Buffer>) {
          fileHash.update(piece);
          fileSize += piece.length;
          await Promise.all([write(out, piece), write(zstd.stdin, piece)]);
        }
      }
    } finally {
      zstd.stdin.end();
      await new Promise<void>((resolve, reject) => out.end((error?: Error | null) => (error ? reject(error) : resolve())));
    }
    const [code] = await Promise.all([exited, decompressed]);
    if (code !== 0) throw new Skip('chunks do not decompress', stderr.trim() || `zstd exit ${code}`);
    if (narBytes !== narSize || !narHasher.digest().equals(narHash.digest)) {
      throw new Skip('reassembled NAR does not match its NarHash', `${narBytes} bytes`);
    }
    await storage.putNarFromFile(name, temp);
    return { name, size: fileSize, fileHash: new NixHash('sha256', fileHash.digest()) };
  } catch (error) {
    zstd.kill();
    const code = await exited.catch(() => null);
    await decompressed.catch(() => undefined);
    if (!(error instanceof Skip) && code !== 0 && /EPIPE|destroyed|write after end/i.test((error as Error).message)) {
      throw new Skip('chunks do not decompress', stderr.trim() || `zstd exit ${code}`);
    }
    throw error;
  } finally {
    await rm(temp, { force: true });
  }
}

/** Writes and waits until the data is handed on (so memory stays flat); rejects when the stream fails. */
function write(stream: NodeJS.WritableStream, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    stream.write(data, (error?: Error | null) => (error ? reject(error) : resolve()));
  });
}
