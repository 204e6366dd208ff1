// The Go ncps's SQLite file, opened read-only: nothing here writes to it (the takeover's own
// tables live in another file, see src/db/beside-go.ts).

import { readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { sqliteTables } from '../../db/beside-go';
import type { LiveClient, SqlDriver } from './source';

export function openSqliteReader(file: string): SqlDriver {
  const db = new BetterSqlite3(file, { readonly: true, fileMustExist: true });
  db.pragma('busy_timeout = 10000');
  return {
    engine: 'sqlite',
    describe: `sqlite:${file}`,
    q: (name) => `"${name.replace(/"/g, '""')}"`,
    all: async <T>(sql: string, params: readonly unknown[] = []) => db.prepare(sql).all(...params) as T[],
    tables: async () => sqliteTables(db),
    liveClients: async () => processesWithOpen([file, `${file}-wal`]),
    close: async () => {
      if (db.open) db.close();
    },
  };
}

/**
 * Other processes on this machine holding one of these files open (Linux: /proc/<pid>/fd), e.g.
 * a Go ncps still serving from its SQLite file. Processes we may not look into are not seen.
 */
export function processesWithOpen(files: readonly string[]): LiveClient[] {
  const wanted = new Set(files.map((f) => path.resolve(f)));
  // Other ncps processes of ours (looking whether the file is the Go ncps's) are not Go ncps.
  let ourRuntime = '';
  try {
    ourRuntime = realpathSync(process.execPath);
  } catch {
    // then nothing is excluded
  }
  const found: LiveClient[] = [];
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((entry) => /^\d+$/.test(entry) && Number(entry) !== process.pid);
  } catch {
    return found;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    const holds = fds.some((fd) => {
      try {
        return wanted.has(readlinkSync(`/proc/${pid}/fd/${fd}`));
      } catch {
        return false;
      }
    });
    if (!holds) continue;
    try {
      if (ourRuntime && readlinkSync(`/proc/${pid}/exe`) === ourRuntime) continue;
    } catch {
      // may not look: count it
    }
    let command = '';
    try {
      command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ').replace(/\s+/g, ' ');
    } catch {
      // gone meanwhile
    }
    found.push({ description: `process ${pid}${command ? ` (${command.slice(0, 200)})` : ''} has the database file open` });
  }
  return found;
}
