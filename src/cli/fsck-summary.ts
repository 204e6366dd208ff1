// The table `ncps fsck` prints at the end: what was looked at, then one row per kind of problem
// with how many were found, the bytes involved and (after --repair) how many were repaired.

import { formatSeconds } from '../migrate/progress';
import { PROBLEM_KINDS, PROBLEM_ORDER, type FsckReport, type RepairResult } from '../cache/fsck/fsck';
import { formatBytes } from './format';

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** Problems left after the repairs (all of them when nothing was repaired). */
export function problemsLeft(report: FsckReport, repairs: readonly RepairResult[] | undefined): number {
  if (!repairs) return report.findings.length;
  return repairs.filter((r) => r.status !== 'repaired' && r.status !== 'resolved').length;
}

/** How the run ends: a dry run, a report, a question before repairing, or the repairs done. */
export type SummaryEnding = 'dry-run' | 'report' | 'ask' | 'repaired';

export function formatSummary(report: FsckReport, repairs: readonly RepairResult[] | undefined, ending: SummaryEnding): string {
  const c = report.counts;
  const lines: string[] = [];
  lines.push(
    `ncps fsck: ${plural(c.narInfos, 'narinfo')}, ${plural(c.narRecords, 'NAR record')}, ${plural(c.smallFileRecords, 'small-file record')}; ` +
      `in storage ${plural(c.narFilesInStorage, 'NAR file')} and ${plural(c.listingsInStorage, 'listing')}`,
  );
  lines.push(`  signatures: ${report.signingKeyName ? `checked against the serving key ${report.signingKeyName}` : 'not checked (narinfos are served unsigned, or there is no key yet)'}`);
  if (report.verifyContent) {
    const skipped = report.verifiedSinceMs > 0 ? `, ${c.narsRecentlyVerified} skipped (verified within ${formatSeconds(report.verifiedSinceMs / 1000)})` : '';
    lines.push(`  NAR contents: ${c.narsVerified} verified${skipped}`);
  } else {
    lines.push('  NAR contents: not verified (--verify-content)');
  }

  const rows: string[][] = [['problem', 'found', 'bytes', ...(repairs ? ['repaired'] : [])]];
  let found = 0;
  let bytes = 0;
  let repaired = 0;
  for (const kind of PROBLEM_ORDER) {
    const info = PROBLEM_KINDS[kind];
    const checked = !info.contentCheck || report.verifyContent;
    const mine = report.findings.filter((f) => f.kind === kind);
    const kindBytes = mine.reduce((sum, f) => sum + f.bytes, 0);
    const kindRepaired = repairs?.filter((r) => r.finding.kind === kind && r.status === 'repaired').length ?? 0;
    found += mine.length;
    bytes += kindBytes;
    repaired += kindRepaired;
    rows.push([
      info.label,
      checked ? String(mine.length) : '-',
      kindBytes > 0 ? formatBytes(kindBytes) : '-',
      ...(repairs ? [mine.length > 0 ? String(kindRepaired) : '-'] : []),
    ]);
  }
  rows.push(['total', String(found), bytes > 0 ? formatBytes(bytes) : '-', ...(repairs ? [String(repaired)] : [])]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const format = (row: string[]) => '  ' + row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
  lines.push('', format(rows[0]!), ...rows.slice(1, -1).map(format), format(rows.at(-1)!));

  const notes = [...report.notes];
  if (c.unrecordedYoung > 0) notes.push(`${plural(c.unrecordedYoung, 'file')} without a record not judged yet: younger than an hour (a nix copy may still be on its way)`);
  if (c.unrecordedOlderThanDatabase > 0) {
    notes.push(`${plural(c.unrecordedOlderThanDatabase, 'file')} without a record kept: older than the database, so not written through it`);
  }
  if (notes.length > 0) lines.push('', ...notes.map((n) => `  note: ${n}`));

  lines.push('');
  if (found === 0) lines.push('consistent: no problems found');
  else if (ending === 'dry-run') lines.push(`${plural(found, 'problem')} found; dry run, nothing changed (run with --repair to fix)`);
  else if (ending === 'ask') lines.push(`${plural(found, 'problem')} found`);
  else if (!repairs) lines.push(`${plural(found, 'problem')} found; nothing changed (run with --repair to fix)`);
  else {
    const left = problemsLeft(report, repairs);
    const resolved = repairs.filter((r) => r.status === 'resolved').length;
    lines.push(
      `${plural(found, 'problem')} found, ${repaired} repaired` +
        (resolved > 0 ? `, ${resolved} no longer a problem` : '') +
        (left > 0 ? `, ${left} left (see the log)` : ''),
    );
  }
  return lines.join('\n') + '\n';
}
