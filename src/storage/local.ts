// Local disk storage in ncps's layout, so existing ncps data directories stay readable.
// Writes never appear partially: a verified temp file is renamed into place.

import { mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { copyFile, mkdir, open, readFile, readdir, rename, rm, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { cleanTempDir, holdTempFile } from './temp-files';
import { FileRangeReader } from './file-reader';
import { checkDirectoryWritable } from './writable';
import { QUARANTINE_PREFIX, auxKey, chunkKey, fanOut, inFanOut, quarantineKey, type AuxKind, type ByteRange, type ListableAuxKind, type Storage, type StoredFileInfo, type StoredNar } from './storage';

export class LocalStorage implements Storage {
  readonly root: string;
  readonly tempDir: string;

  constructor(root: string, tempDir?: string) {
    this.root = path.resolve(root);
    this.tempDir = path.resolve(tempDir || path.join(this.root, 'store', 'tmp'));
    mkdirSync(path.join(this.root, 'store', 'nar'), { recursive: true });
    mkdirSync(this.tempDir, { recursive: true });
  }

  narPath(name: string): string {
    return path.join(this.root, 'store', 'nar', ...fanOut(name));
  }

  async getNar(name: string, range?: ByteRange): Promise<StoredNar | undefined> {
    // Open first, then stat the open descriptor: the file cannot vanish in between.
    let handle: FileHandle;
    try {
      handle = await open(this.narPath(name), 'r');
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
    try {
      const { size } = await handle.stat();
      // Reads into recycled buffers (see file-reader.ts); the stream closes the handle.
      const stream = new FileRangeReader(handle, range ? range.start : 0, range ? Math.min(range.end, size - 1) : size - 1);
      return { stream, size };
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  async statNar(name: string): Promise<number | undefined> {
    try {
      return (await stat(this.narPath(name))).size;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async putNarFromFile(name: string, tempFile: string): Promise<void> {
    const target = this.narPath(name);
    await mkdir(path.dirname(target), { recursive: true });
    await this.putNarFromFileAt(tempFile, target);
  }

  /** Renames a complete temp file into place; across file systems, copies next to it first. */
  private async putNarFromFileAt(tempFile: string, target: string): Promise<void> {
    try {
      await rename(tempFile, target);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EXDEV') throw error;
      const staging = `${target}.tmp-${process.pid}-${Date.now()}`;
      try {
        await copyFile(tempFile, staging);
        await rename(staging, target);
      } finally {
        await rm(staging, { force: true });
        await unlink(tempFile).catch(() => undefined);
      }
    }
  }

  async deleteNar(name: string): Promise<void> {
    await rm(this.narPath(name), { force: true });
  }

  async quarantineNar(name: string, at: number): Promise<string | undefined> {
    const key = quarantineKey(name, at);
    const target = path.join(this.root, key);
    await mkdir(path.dirname(target), { recursive: true });
    try {
      // Same file system (both under the root): a rename, atomic.
      await rename(this.narPath(name), target);
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
    return key;
  }

  private legacyNarInfoPath(hash: string): string {
    return path.join(this.root, 'store', 'narinfo', ...fanOut(`${hash}.narinfo`));
  }

  async getLegacyNarInfo(hash: string): Promise<string | undefined> {
    return readIfExists(this.legacyNarInfoPath(hash));
  }

  async *listLegacyNarInfos(): AsyncIterable<string> {
    for await (const { name } of this.walk(path.join(this.root, 'store', 'narinfo'), false)) {
      const hash = /^([0-9a-df-np-sv-z]{32})\.narinfo$/.exec(name)?.[1];
      if (hash) yield hash;
    }
  }

  listNars(): AsyncIterable<StoredFileInfo> {
    return this.walk(path.join(this.root, 'store', 'nar'), true);
  }

  listAuxFiles(kind: ListableAuxKind): AsyncIterable<StoredFileInfo> {
    return this.walk(path.join(this.root, 'store', kind), true);
  }

  /**
   * The regular files of a fan-out tree (`top/<a>/<ab>/<name>`). Only files where ncps's layout
   * puts them are listed: anything else in the tree is not ours to touch.
   */
  private async *walk(top: string, withStat: boolean): AsyncIterable<StoredFileInfo> {
    for (const first of await readdir(top).catch(() => [] as string[])) {
      for (const second of await readdir(path.join(top, first)).catch(() => [] as string[])) {
        for (const name of await readdir(path.join(top, first, second)).catch(() => [] as string[])) {
          if (!inFanOut(first, second, name)) continue;
          if (!withStat) {
            yield { name, size: 0, modifiedAt: 0 };
            continue;
          }
          const info = await stat(path.join(top, first, second, name)).catch(() => undefined);
          if (info?.isFile()) yield { name, size: info.size, modifiedAt: info.mtimeMs };
        }
      }
    }
  }

  async deleteLegacyNarInfo(hash: string): Promise<void> {
    await rm(this.legacyNarInfoPath(hash), { force: true });
  }

  async quarantineLegacyNarInfo(hash: string): Promise<string> {
    const target = path.join(this.root, QUARANTINE_PREFIX, `${hash}.narinfo`);
    await mkdir(path.dirname(target), { recursive: true });
    try {
      await rename(this.legacyNarInfoPath(hash), target);
    } catch (error) {
      if (!isNotFound(error)) throw error; // migrated or moved by someone else meanwhile
    }
    return target;
  }

  async getAuxFile(kind: AuxKind, name: string): Promise<Buffer | undefined> {
    try {
      return await readFile(path.join(this.root, auxKey(kind, name)));
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async putAuxFile(kind: AuxKind, name: string, data: Buffer): Promise<void> {
    const target = path.join(this.root, auxKey(kind, name));
    await mkdir(path.dirname(target), { recursive: true });
    const staging = path.join(this.tempDir, `${kind}-${name.replaceAll('/', '^')}.${randomBytes(6).toString('hex')}.part`);
    const release = holdTempFile(staging);
    try {
      await writeFile(staging, data);
      await this.putNarFromFileAt(staging, target);
    } catch (error) {
      // A full disk leaves a partial staging file: never keep it.
      await rm(staging, { force: true });
      throw error;
    } finally {
      release();
    }
  }

  async deleteAuxFile(kind: AuxKind, name: string): Promise<void> {
    await rm(path.join(this.root, auxKey(kind, name)), { force: true });
  }

  async statAuxFile(kind: AuxKind, name: string): Promise<number | undefined> {
    try {
      return (await stat(path.join(this.root, auxKey(kind, name)))).size;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async getLegacySecretKey(): Promise<string | undefined> {
    return readIfExists(path.join(this.root, 'config', 'cache.key'));
  }

  async getChunk(hash: string): Promise<Readable | undefined> {
    let handle: FileHandle;
    try {
      handle = await open(path.join(this.root, chunkKey(hash)), 'r');
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
    return handle.createReadStream({ highWaterMark: 1 << 20 });
  }

  async deleteChunk(hash: string): Promise<void> {
    await rm(path.join(this.root, chunkKey(hash)), { force: true });
  }

  async checkWritable(): Promise<void> {
    await checkDirectoryWritable(this.tempDir, 'temp directory');
    // NARs are renamed from the temp directory into the store: that must take files too.
    if (path.relative(this.root, this.tempDir).startsWith('..')) await checkDirectoryWritable(path.join(this.root, 'store', 'nar'), 'storage');
  }

  /** Removes partial files left behind by a crash (older than maxAgeMs, not in use). */
  cleanTempDir(maxAgeMs: number): Promise<number> {
    return cleanTempDir(this.tempDir, maxAgeMs);
  }
}

function isNotFound(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}
