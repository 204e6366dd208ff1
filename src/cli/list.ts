// `ncps list`: what is cached, read from the database alone: one line per narinfo (most recently
// used first by default) and a summary, or one JSON object per line with --json. It only reads
// (no lock, no lease, no migration, no storage), so it is safe beside live servers. The rows come
// a page at a time from one sorted read (Database.cachedPaths) and go out as they come, so a
// cache of millions of paths is never held in memory.

import { ConfigError, helpText, loadConfig, type LoadedConfig } from '../config/load';
import type { CachedPath, CachedPathOrder, CachedPathQuery } from '../db/database';
import { checkCompatibility, KNOWN_SCHEMA_VERSION } from '../db/schema';
import { openConfiguredDatabase, refuseUnmigratedSchema, requireExistingCache } from './common';
import { formatBytes } from './format';

const SUMMARY = 'List the cached store paths, from the database (it only reads: safe beside a live server).';
/** Rows read and written at a time. */
const PAGE_SIZE = 1000;

interface ListSettings {
  query: CachedPathQuery;
  /** 0: no limit. */
  limit: number;
  json: boolean;
}

/** The settings, or undefined once --help was answered. The one argument allowed is the text to match. */
function listSettings(argv: string[]): { config: LoadedConfig; settings: ListSettings } | undefined {
  const { config, args } = loadConfig('list', argv, process.env);
  if (args.help) {
    process.stdout.write(helpText('list', SUMMARY, '[flags] [TEXT]'));
    return undefined;
  }
  if (args.positionals.length > 1) {
    throw new ConfigError(`unexpected argument "${args.positionals[1]}": ncps list takes one text to match (see --help)`);
  }
  const argument = args.positionals[0];
  const flag = config.get<string>('list.match');
  if (argument !== undefined && flag !== '') {
    throw new ConfigError(`the text to match is given twice ("${argument}" and --match=${flag}): give it once`);
  }
  const match = argument ?? flag;
  const limit = config.get<number>('list.limit');
  const query: CachedPathQuery = {
    order: config.get<CachedPathOrder>('list.sort'),
    pinnedOnly: config.get<boolean>('list.pinned'),
    ...(match !== '' ? { match } : {}),
    // One more than is shown, to tell whether the limit cut the listing short.
    ...(limit > 0 ? { limit: limit + 1 } : {}),
  };
  return { config, settings: { query, limit, json: config.get<boolean>('list.json') } };
}

/**
 * stdout, waited for when the reader is slower than the database. Once the reader has gone
 * (`ncps list | head`), nothing more is written and the listing ends quietly instead of failing.
 */
class Output {
  gone = false;
  private failure: Error | undefined;

  constructor(private readonly stream: NodeJS.WriteStream) {
    stream.on('error', (error: Error) => {
      if ((error as NodeJS.ErrnoException).code === 'EPIPE') this.gone = true;
      else this.failure ??= error;
    });
  }

  async write(text: string): Promise<void> {
    this.check();
    if (this.gone || text === '' || this.stream.write(text)) return;
    await this.drained();
  }

  /** Waits until what was written has gone out (process.exit would drop the rest). */
  async flush(): Promise<void> {
    if (!this.gone && this.stream.writableLength > 0) await this.drained();
  }

  private async drained(): Promise<void> {
    // A stream already closed would never say so again.
    if (!this.stream.destroyed) {
      await new Promise<void>((resolve) => {
        const events = ['drain', 'error', 'close'] as const;
        const done = () => {
          for (const event of events) this.stream.off(event, done);
          resolve();
        };
        for (const event of events) this.stream.on(event, done);
      });
    }
    this.check();
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }
}

/** ISO 8601 in UTC to the second: what a person reads in the table. */
function utcSeconds(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

// The store path goes last: its width varies, and nothing has to line up after it.
function tableLine(accessed: string, narSize: string, compression: string, pinned: string, storePath: string): string {
  return `${accessed.padEnd(20)}  ${narSize.padStart(10)}  ${compression.padEnd(11)}  ${pinned.padEnd(7)}  ${storePath}\n`;
}

const HEADER = tableLine('LAST ACCESSED (UTC)', 'NAR SIZE', 'COMPRESSION', 'PINNED', 'STORE PATH');

function tableRow(p: CachedPath): string {
  const pinned = p.pinnedDirectly ? 'pinned' : p.pinned ? 'closure' : '-';
  return tableLine(utcSeconds(p.lastAccessedAt), formatBytes(p.narSize), p.compression, pinned, p.storePath);
}

function jsonRow(p: CachedPath): string {
  const record = {
    storePath: p.storePath,
    hash: p.hash,
    narSize: p.narSize,
    fileSize: p.fileSize ?? null,
    compression: p.compression,
    url: p.url,
    lastAccessedAt: new Date(p.lastAccessedAt).toISOString(),
    pinned: p.pinned,
    pinnedDirectly: p.pinnedDirectly,
    narStored: p.narStored ?? null,
  };
  return `${JSON.stringify(record)}\n`;
}

interface Totals {
  count: number;
  narBytes: number;
  fileBytes: number;
  unknownFileSizes: number;
  notStored: number;
  /** The limit left paths out. */
  more: boolean;
}

function summaryLine(t: Totals, limit: number): string {
  const paths = `${t.count} ${t.count === 1 ? 'path' : 'paths'}`;
  const notes = [
    ...(t.unknownFileSizes > 0 ? [`${t.unknownFileSizes} without a known file size`] : []),
    ...(t.notStored > 0 ? [`${t.notStored} whose NAR is not in storage yet`] : []),
  ];
  return (
    `${t.more ? `${paths} shown, more match (--limit=${limit})` : paths}: ` +
    `NAR size ${formatBytes(t.narBytes)}, file size ${formatBytes(t.fileBytes)}` +
    `${notes.length > 0 ? ` (${notes.join('; ')})` : ''}\n`
  );
}

async function list(argv: string[]): Promise<number> {
  const parsed = listSettings(argv);
  if (!parsed) return 0;
  const { config, settings } = parsed;
  // stdout holds the listing alone (with --json, JSON alone): warnings go to stderr.
  for (const warning of config.warnings) process.stderr.write(`ncps list: ${warning}\n`);
  // As the other offline commands: a SQLite file that is not there is a typo, not an empty cache.
  requireExistingCache(config, 'list', { storage: false, database: 'required' });
  const db = openConfiguredDatabase(config);
  try {
    if (await refuseUnmigratedSchema(db, 'list')) return 1;
    // A newer ncps may have changed the schema past what this one can read.
    checkCompatibility((await db.schemaStatus!()).applied, KNOWN_SCHEMA_VERSION);

    const output = new Output(process.stdout);
    const totals: Totals = { count: 0, narBytes: 0, fileBytes: 0, unknownFileSizes: 0, notStored: 0, more: false };
    for await (const page of db.cachedPaths(settings.query, PAGE_SIZE)) {
      let text = totals.count === 0 && !settings.json ? HEADER : '';
      for (const p of page) {
        if (settings.limit > 0 && totals.count >= settings.limit) {
          totals.more = true;
          break;
        }
        totals.count++;
        totals.narBytes += p.narSize;
        if (p.fileSize === undefined) totals.unknownFileSizes++;
        else totals.fileBytes += p.fileSize;
        if (p.narStored === false) totals.notStored++;
        text += settings.json ? jsonRow(p) : tableRow(p);
      }
      await output.write(text);
      // Leaving the loop ends the database's read.
      if (output.gone || totals.more) break;
    }
    if (!settings.json) await output.write(summaryLine(totals, settings.limit));
    await output.flush();
    return 0;
  } finally {
    await db.close();
  }
}

export const listCommand = { summary: SUMMARY, run: list };
