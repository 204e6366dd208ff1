// What bench/lib/narinfos.lua makes wrk print, read back: shared by bench/run.mjs and
// bench/instructions.mjs.

import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The wrk script that cycles through a list of narinfo paths (`-s` it, the list after `--`). */
export const NARINFOS_LUA = path.join(path.dirname(fileURLToPath(import.meta.url)), 'narinfos.lua');

/**
 * The summary line of a wrk run against `base` from its output `out` and `exit` status; throws
 * when wrk failed or saw any connect, read, write, status or timeout error.
 */
export function wrkSummary(out, exit, base) {
  const line = out.split('\n').find((l) => l.startsWith('BENCHJSON '));
  if (!line || exit.code !== 0) throw new Error(`wrk failed (${JSON.stringify(exit)}): ${out.slice(-500)}`);
  const r = JSON.parse(line.slice('BENCHJSON '.length));
  const errors = r.connect_errors + r.read_errors + r.write_errors + r.status_errors + r.timeouts;
  if (errors > 0) throw new Error(`wrk against ${base} saw errors: ${line}`);
  return r;
}
