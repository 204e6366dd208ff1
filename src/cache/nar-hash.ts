// Checks a compressed NAR against the narinfo's NarHash/NarSize when the upstream gave no
// FileHash: nothing unverified may be committed, so the file is decompressed and hashed first.
// Brotli is built into Node; the other formats go through the usual command-line tools.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createBrotliDecompress } from 'node:zlib';
import type { Compression, HashAlgorithm } from '../nix';

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

/** What a stored NAR's bytes hash to: as stored (FileHash) and decompressed (NarHash). */
export interface StoredNarHashes {
  file: { digest: Buffer; size: number };
  /** Undefined when the bytes do not decompress (`decodeError` says why). */
  nar?: { digest: Buffer; size: number };
  decodeError?: string;
}

/** The decompressor cannot run at all (not installed): the NAR cannot be checked here. */
export class DecompressorUnavailable extends Error {}

interface Decoder {
  input: Writable;
  output: Readable;
  /** Settles once the decoder is done; rejects when the bytes did not decompress. */
  finished: Promise<void>;
}

function decoderFor(compression: Compression): Decoder | undefined {
  if (compression === 'none') return undefined;
  if (compression === 'br') {
    const zlib = createBrotliDecompress();
    const finished = new Promise<void>((resolve, reject) => {
      zlib.once('end', resolve);
      zlib.once('error', reject);
    });
    finished.catch(() => undefined);
    return { input: zlib, output: zlib, finished };
  }
  const tool = TOOLS[compression];
  if (!tool) throw new DecompressorUnavailable(`cannot decompress ${compression}`);
  const [command, args] = tool;
  // The tool reads the bytes on stdin: they come from storage (a file or an S3 object).
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString('utf8')).slice(-500)));
  const finished = new Promise<void>((resolve, reject) => {
    child.once('error', (error) => reject(new DecompressorUnavailable(`cannot run ${command}: ${error.message}`)));
    child.once('close', (code) => {
      if (code === 0) resolve();
      else reject(new Error(`${command} could not decompress it (exit ${code}${stderr.trim() ? `: ${stderr.trim().split('\n')[0]}` : ''})`));
    });
  });
  // Looked at once the input is fed; until then a failure must not count as unhandled.
  finished.catch(() => undefined);
  return { input: child.stdin, output: child.stdout, finished };
}

/**
 * Hashes a stored NAR in one pass: the bytes as stored with `fileAlgorithm`, and the bytes the
 * decompressor makes of them with `narAlgorithm`. Bytes that do not decompress are reported in
 * `decodeError` (the stored bytes are still hashed to the end); a decompressor that cannot run
 * throws DecompressorUnavailable.
 */
export async function hashStoredNar(
  source: Readable,
  compression: Compression,
  algorithms: { file: HashAlgorithm; nar: HashAlgorithm },
): Promise<StoredNarHashes> {
  const fileHash = createHash(algorithms.file);
  const narHash = createHash(algorithms.nar);
  let fileSize = 0;
  let narSize = 0;
  const decoder = decoderFor(compression);
  if (!decoder) {
    await pipeline(
      source,
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          fileHash.update(chunk);
          narHash.update(chunk);
          fileSize += chunk.length;
          callback();
        },
      }),
    );
    const digest = fileHash.digest();
    return { file: { digest, size: fileSize }, nar: { digest: algorithms.file === algorithms.nar ? digest : narHash.digest(), size: fileSize } };
  }
  // A decoder that gives up (corrupt bytes) closes its input: keep reading the source anyway, so
  // the stored bytes are hashed whole.
  let inputBroken = false;
  decoder.input.on('error', () => (inputBroken = true));
  decoder.input.on('close', () => (inputBroken = true));
  const decoded: Promise<void> = pipeline(
    decoder.output,
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        narHash.update(chunk);
        narSize += chunk.length;
        callback();
      },
    }),
  );
  decoded.catch(() => undefined);
  const feed = (chunk: Buffer): Promise<void> =>
    new Promise((resolve) => {
      if (inputBroken || decoder.input.write(chunk)) return resolve();
      const done = () => {
        decoder.input.off('drain', done);
        decoder.input.off('close', done);
        resolve();
      };
      decoder.input.on('drain', done);
      decoder.input.on('close', done);
    });
  await pipeline(
    source,
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        fileHash.update(chunk);
        fileSize += chunk.length;
        feed(chunk).then(() => callback(), callback);
      },
      final(callback) {
        if (!inputBroken) decoder.input.end();
        callback();
      },
    }),
  );
  const file = { digest: fileHash.digest(), size: fileSize };
  const [decodedResult, finishedResult] = await Promise.allSettled([decoded, decoder.finished]);
  if (finishedResult.status === 'rejected') {
    if (finishedResult.reason instanceof DecompressorUnavailable) throw finishedResult.reason;
    return { file, decodeError: (finishedResult.reason as Error).message };
  }
  if (decodedResult.status === 'rejected') return { file, decodeError: (decodedResult.reason as Error).message };
  return { file, nar: { digest: narHash.digest(), size: narSize } };
}
