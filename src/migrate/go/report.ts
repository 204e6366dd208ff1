// What a takeover did (or, dry, would do): counts of what was taken over, and of what was skipped
// with the reason, so an operator can see at a glance whether anything is missing and why.

export interface TakeoverReport {
  source: string;
  /** This ncps's database the takeover writes into (beside the Go one when in place). */
  database: string;
  generation: string;
  dryRun: boolean;
  /** Nothing new since the last takeover: nothing was read. */
  upToDate: boolean;
  /** How the signing key went: imported, already ours, or why not. */
  key: string;
  narInfosFromDatabase: number;
  narInfosFromFiles: number;
  /** Narinfos this ncps had already (an earlier, interrupted or repeated, takeover). */
  narInfosAlready: number;
  reassembled: { nars: number; bytes: number };
  pins: number;
  buildTraces: number;
  skipped: Map<string, { count: number; examples: string[] }>;
  /** Narinfo files kept in storage for the Go ncps (≤ v0.7), now also in our database. */
  keptLegacyFiles: boolean;
  /** A dry run found no database of ours yet: the takeover would create it. */
  newDatabase: boolean;
}

export function emptyReport(source: string, generation: string, dryRun: boolean, database = ''): TakeoverReport {
  return {
    source,
    database,
    generation,
    dryRun,
    upToDate: false,
    key: 'none in the Go database or storage',
    narInfosFromDatabase: 0,
    narInfosFromFiles: 0,
    narInfosAlready: 0,
    reassembled: { nars: 0, bytes: 0 },
    pins: 0,
    buildTraces: 0,
    skipped: new Map(),
    keptLegacyFiles: false,
    newDatabase: false,
  };
}

const EXAMPLES = 5;

export function noteSkipped(report: TakeoverReport, reason: string, example: string): void {
  const entry = report.skipped.get(reason) ?? { count: 0, examples: [] };
  entry.count++;
  if (entry.examples.length < EXAMPLES) entry.examples.push(example);
  report.skipped.set(reason, entry);
}

export function skippedCount(report: TakeoverReport): number {
  let n = 0;
  for (const { count } of report.skipped.values()) n += count;
  return n;
}

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** The summary printed at the end of `ncps migrate from-go` (and logged by `serve`). */
export function formatReport(report: TakeoverReport): string {
  const would = report.dryRun ? 'would take over' : 'took over';
  const lines = [`Go ncps database ${report.source} (${report.generation}):`];
  if (report.upToDate) {
    lines.push('  already taken over, and nothing new written to it since');
    return lines.map((l) => `${l}\n`).join('');
  }
  if (report.database) lines.push(`  into: ${report.database}${report.newDatabase ? ' (new)' : ''}`);
  lines.push(`  signing key: ${report.key}`);
  lines.push(
    `  narinfos: ${would} ${report.narInfosFromDatabase + report.narInfosFromFiles}` +
      ` (${report.narInfosFromDatabase} from the database, ${report.narInfosFromFiles} from narinfo files in storage)` +
      (report.narInfosAlready > 0 ? `, ${report.narInfosAlready} already here` : ''),
  );
  if (report.reassembled.nars > 0) {
    lines.push(
      `  CDC-chunked NARs: ${report.dryRun ? 'would reassemble' : 'reassembled'} ${report.reassembled.nars} ` +
        `(${bytes(report.reassembled.bytes)}${report.dryRun ? ' of chunks, about as much new space; the chunks are read and checked only then' : ' written'}); the chunk files are kept`,
    );
  }
  lines.push(`  pins: ${report.pins}`);
  lines.push(`  build trace entries: ${report.buildTraces}`);
  if (report.keptLegacyFiles) lines.push('  narinfo files in storage: kept for the Go ncps (ncps migrate from-go --remove-go-files removes them)');
  const skipped = skippedCount(report);
  lines.push(`  skipped: ${skipped}`);
  for (const [reason, { count, examples }] of [...report.skipped].sort((a, b) => b[1].count - a[1].count)) {
    lines.push(`    ${count} × ${reason}`);
    for (const example of examples) lines.push(`        e.g. ${example}`);
  }
  return lines.map((l) => `${l}\n`).join('');
}

/** The report as one structured log record. */
export function reportFields(report: TakeoverReport): Record<string, unknown> {
  return {
    source: report.source,
    database: report.database,
    generation: report.generation,
    dryRun: report.dryRun,
    upToDate: report.upToDate,
    key: report.key,
    narInfosFromDatabase: report.narInfosFromDatabase,
    narInfosFromFiles: report.narInfosFromFiles,
    narInfosAlready: report.narInfosAlready,
    reassembledNars: report.reassembled.nars,
    reassembledBytes: report.reassembled.bytes,
    pins: report.pins,
    buildTraces: report.buildTraces,
    skipped: Object.fromEntries([...report.skipped].map(([reason, { count }]) => [reason, count])),
  };
}
