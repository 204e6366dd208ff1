// Environment description, the results table and small statistics helpers.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';

export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** stdout and stderr of a short command (nginx -v and wrk -v print to stderr; wrk -v exits 1). */
function run(command, args) {
  const r = spawnSync(command, args, { encoding: 'utf8', timeout: 5_000 });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
}

export function environment(repoRoot) {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const meminfo = readFileSync('/proc/meminfo', 'utf8');
  const memKiB = Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1]);
  const nginx = run('nginx', ['-v']).replace(/^nginx version:\s*/, '');
  const wrk = run('wrk', ['-v']).split('\n')[0];
  const commit = run('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']);
  const dirty = run('git', ['-C', repoRoot, 'status', '--porcelain', '--', 'src', 'scripts/build.mjs', 'package-lock.json']) !== '';
  return {
    date: new Date().toISOString(),
    nproc: os.availableParallelism?.() ?? os.cpus().length,
    cpuModel: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? 'unknown',
    memoryGiB: Math.round((memKiB / 1024 / 1024) * 10) / 10,
    kernel: os.release(),
    node: process.version,
    nginx,
    wrk,
    ncpsCommit: `${commit}${dirty ? ' (modified)' : ''}`,
  };
}

/** rows: { metric, ncps, other, ratio, target, pass } where values are preformatted strings. */
export function formatTable(rows) {
  const header = { metric: 'metric', ncps: 'ncps', other: 'nginx / direct', ratio: 'ratio', target: 'target', pass: 'result' };
  const cols = Object.keys(header);
  const all = [header, ...rows];
  const width = Object.fromEntries(cols.map((c) => [c, Math.max(...all.map((r) => String(r[c] ?? '').length))]));
  const line = (r) => `| ${cols.map((c) => String(r[c] ?? '').padEnd(width[c])).join(' | ')} |`;
  const rule = `|${cols.map((c) => '-'.repeat(width[c] + 2)).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

export const fmt = {
  int: (x) => (Number.isFinite(x) ? String(Math.round(x)) : 'n/a'),
  f1: (x) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a'),
  f2: (x) => (Number.isFinite(x) ? x.toFixed(2) : 'n/a'),
};
