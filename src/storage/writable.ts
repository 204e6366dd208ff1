// The readiness probe of a local directory: a small file is written, synced and removed, and the
// file system must have room left. Cheap enough to run at every readiness check, and it fails the
// way a download would (missing directory, no permission, read-only or full file system).

import { randomBytes } from 'node:crypto';
import { open, rm, statfs } from 'node:fs/promises';
import path from 'node:path';

export async function checkDirectoryWritable(dir: string, label: string): Promise<void> {
  const probe = path.join(dir, `.ncps-probe-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    const handle = await open(probe, 'wx');
    try {
      await handle.writeFile('ncps readiness probe\n');
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (error) {
    throw new Error(`${label} ${dir} is not writable: ${(error as Error).message}`);
  } finally {
    await rm(probe, { force: true });
  }
  // Root may still write into the blocks reserved for it: "full" is what other users see.
  const fs = await statfs(dir);
  if (fs.bavail === 0) throw new Error(`${label} ${dir} is full (0 bytes available)`);
}
