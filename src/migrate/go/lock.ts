// One takeover at a time per database of ours: instances starting together on one Go database
// queue here, and each later one finds the work done. PostgreSQL uses a session advisory lock
// (postgres-reader.ts), freed by the server when its holder dies; SQLite this lock file, which
// names its holder and is taken over once that process is gone.

import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { link, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../../telemetry/logger';

export interface TakeoverLock {
  release(): Promise<void>;
}

export async function lockFile(file: string, logger: Logger, pollMs = 250): Promise<TakeoverLock> {
  const me = `${process.pid} ${hostname()}\n`;
  let told = false;
  await mkdir(path.dirname(file), { recursive: true });
  for (;;) {
    // Written aside, then linked into place: the lock file never exists without its holder in it.
    const staging = `${file}.${randomBytes(6).toString('hex')}`;
    await writeFile(staging, me);
    try {
      await link(staging, file);
      return { release: () => rm(file, { force: true }) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    } finally {
      await rm(staging, { force: true });
    }
    const holder = (await readFile(file, 'utf8').catch(() => '')).trim();
    const [pid, host] = holder.split(' ');
    if (!(host === hostname() && !alive(Number(pid)))) {
      if (!told) logger.info({ holder }, 'another ncps process is taking over the Go database; waiting for it to finish');
      told = true;
      await new Promise((resolve) => setTimeout(resolve, pollMs));
      continue;
    }
    // Left behind by a process that is gone (killed mid-takeover): take it over.
    await rm(file, { force: true });
  }
}

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
