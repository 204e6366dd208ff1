import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, it } from 'node:test';
import { FileRangeReader, READ_CHUNK } from '../../src/storage/file-reader';

const dir = mkdtempSync(path.join(os.tmpdir(), 'file-reader-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Reads the whole stream the way sendStream does: recycling each chunk once it is "written". */
async function readRecycling(reader: FileRangeReader, delayMs: number): Promise<Buffer> {
  const copies: Buffer[] = [];
  for await (const chunk of reader) {
    copies.push(Buffer.from(chunk));
    // Hand the chunk back a little later, as the socket would; meanwhile others read.
    setTimeout(() => reader.recycle(chunk), delayMs);
  }
  return Buffer.concat(copies);
}

it('concurrent readers that recycle their chunks each get exactly their own bytes', async () => {
  const files = Array.from({ length: 6 }, (_, i) => {
    const data = randomBytes(READ_CHUNK * 3 + 1234 * (i + 1));
    const file = path.join(dir, `f${i}`);
    writeFileSync(file, data);
    return { file, data };
  });
  const results = await Promise.all(
    files.map(async ({ file, data }, i) => {
      const start = i * 1000;
      const end = data.length - 1 - i * 7;
      const got = await readRecycling(new FileRangeReader(await open(file, 'r'), start, end), i % 3);
      return { got, want: data.subarray(start, end + 1) };
    }),
  );
  for (const { got, want } of results) assert.ok(got.equals(want), 'bytes differ: a recycled buffer was shared');
});

it('an empty range ends at once, and a file shorter than promised is an error', async () => {
  const file = path.join(dir, 'short');
  writeFileSync(file, Buffer.alloc(10, 1));
  assert.equal((await readRecycling(new FileRangeReader(await open(file, 'r'), 0, -1), 0)).length, 0);
  await assert.rejects(readRecycling(new FileRangeReader(await open(file, 'r'), 0, 99), 0), /ended 90 bytes early/);
});
