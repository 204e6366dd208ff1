// Writes what the Go ncps had into our database and storage, through the Database and Storage
// seams only. Every step can be interrupted and run again: narinfos already here are skipped, a
// narinfo is committed only once its NAR bytes are whole in storage, and nothing of the Go ncps's
// (rows, narinfo files, chunk files, key file) is changed or removed.

import { keepAuxFile } from '../../cache/aux-files';
import type { Database, ImportedNarInfo } from '../../db/database';
import { parseSecretKey, type SecretKey } from '../../nix';
import type { Storage } from '../../storage/storage';
import type { Logger } from '../../telemetry/logger';
import { reassembleChunks } from './dechunk';
import { buildTraceFile, checkedNarInfo, importedNarInfo, narInfoFromGoRow, recordTimes, resolveBacking, Skip, goTimeToMs, type Backing } from './map';
import { noteSkipped, type TakeoverReport } from './report';
import type { GoNarInfoRow, GoSource } from './source';

const PAGE = 500;

export interface Counts {
  done: number;
  failed: number;
  total: number | undefined;
}

export interface WriterOptions {
  source: GoSource;
  /** Undefined only for a dry run on a database that does not exist yet. */
  db: Database | undefined;
  storage: Storage;
  logger: Logger;
  dryRun: boolean;
  report: TakeoverReport;
  counts: Counts;
  /** --cache-secret-key-path's key, when given: what the server will sign with instead of the Go key. */
  configuredKey?: SecretKey | undefined;
}

export class GoWriter {
  /** Storage name → size of every NAR file in storage, read once. */
  private stored = new Map<string, number>();
  /** Go rows without narinfo metadata: their narinfo is a file in storage (≤ v0.7). */
  private readonly withoutMetadata = new Map<string, GoNarInfoRow>();
  private legacyHashes: string[] = [];
  private signingKey: SecretKey | undefined;

  constructor(private readonly options: WriterOptions) {}

  /** Looks at storage first, so the progress total is known. */
  async prepare(): Promise<void> {
    const { storage, source, counts } = this.options;
    for await (const file of storage.listNars()) this.stored.set(file.name, file.size);
    for await (const hash of storage.listLegacyNarInfos()) this.legacyHashes.push(hash);
    counts.total = (await source.countNarInfos()) + this.legacyHashes.length;
    // The Go ncps (≤ v0.7) reads these; they stay, and this ncps no longer migrates them itself.
    this.options.report.keptLegacyFiles = this.legacyHashes.length > 0;
  }

  async run(): Promise<void> {
    await this.key();
    await this.narInfosFromDatabase();
    await this.narInfosFromFiles();
    await this.pins();
    await this.buildTraces();
  }

  /** The Go ncps's signing key (config table since v0.7, else config/cache.key), so clients keep trusting us. */
  private async key(): Promise<void> {
    const { source, storage, db, dryRun, report, configuredKey } = this.options;
    const fromDb = await source.secretKey();
    const text = (fromDb ?? (await storage.getLegacySecretKey()))?.trim();
    const where = fromDb ? 'the Go database' : 'config/cache.key';
    const note = configuredKey ? ` (--cache-secret-key-path signs instead: ${configuredKey.publicKey.text})` : '';
    if (!text) {
      report.key = `none in the Go database or storage${note}`;
      this.signingKey = configuredKey;
      return;
    }
    let key: SecretKey;
    try {
      key = parseSecretKey(text);
    } catch (error) {
      report.key = `not taken over: the key in ${where} is not a Nix secret key (${(error as Error).message})${note}`;
      this.signingKey = configuredKey;
      return;
    }
    this.signingKey = configuredKey ?? key;
    const ours = db ? await db.getSetting('secret_key') : undefined;
    if (ours === key.text) {
      report.key = `${key.publicKey.text}, already this ncps's${note}`;
    } else if (ours) {
      // Never replaced: this ncps signed with it already (an earlier takeover, or its own start).
      report.key = `this ncps keeps its own key ${parseSecretKey(ours).publicKey.text}; the Go key ${key.publicKey.text} was not taken over${note}`;
      this.signingKey = configuredKey ?? parseSecretKey(ours);
    } else if (dryRun) {
      report.key = `would take over ${key.publicKey.text} from ${where}${note}`;
    } else {
      await db!.putSettingIfAbsent('secret_key', key.text);
      report.key = `${key.publicKey.text}, taken over from ${where}${note}`;
    }
  }

  private async known(hashes: string[]): Promise<Set<string>> {
    const { db } = this.options;
    return db && hashes.length > 0 ? db.knownNarInfos(hashes) : new Set();
  }

  private async narInfosFromDatabase(): Promise<void> {
    const { source, report, counts } = this.options;
    let afterId = 0;
    for (;;) {
      const page = await source.narInfoPage(afterId, PAGE);
      if (page.length === 0) break;
      afterId = page[page.length - 1]!.id;
      const known = await this.known(page.map((r) => r.hash));
      const entries: ImportedNarInfo[] = [];
      for (const row of page) {
        counts.done++;
        if (known.has(row.hash)) {
          report.narInfosAlready++;
          continue;
        }
        if (!row.url) {
          this.withoutMetadata.set(row.hash, row);
          continue;
        }
        try {
          const entry = await this.entry(row.hash, narInfoFromGoRow(row), row);
          if (entry) entries.push(entry);
        } catch (error) {
          this.failed(error, row.hash);
        }
      }
      report.narInfosFromDatabase += await this.commit(entries);
    }
  }

  private async narInfosFromFiles(): Promise<void> {
    const { storage, report, counts } = this.options;
    for (let i = 0; i < this.legacyHashes.length; i += PAGE) {
      const batch = this.legacyHashes.slice(i, i + PAGE);
      const known = await this.known(batch);
      const entries: ImportedNarInfo[] = [];
      for (const hash of batch) {
        counts.done++;
        const row = this.withoutMetadata.get(hash);
        this.withoutMetadata.delete(hash);
        // Already here (counted with the database's rows); the file stays for the Go ncps.
        if (known.has(hash)) continue;
        try {
          const text = await storage.getLegacyNarInfo(hash);
          if (text === undefined) continue;
          const entry = await this.entry(hash, checkedNarInfo(hash, text), row);
          if (entry) entries.push(entry);
        } catch (error) {
          this.failed(error, `store/narinfo/…/${hash}.narinfo`);
        }
      }
      report.narInfosFromFiles += await this.commit(entries);
    }
    for (const hash of this.withoutMetadata.keys()) {
      noteSkipped(report, 'no narinfo metadata (neither in the Go database nor as a file in storage)', hash);
    }
    this.withoutMetadata.clear();
  }

  /** Our records for one narinfo; chunked NARs are reassembled into storage first. */
  private async entry(hash: string, narInfo: ReturnType<typeof narInfoFromGoRow>, row: GoNarInfoRow | undefined): Promise<ImportedNarInfo | undefined> {
    const { storage, dryRun, report } = this.options;
    let backing: Backing = resolveBacking(narInfo, row?.narFiles ?? [], (name) => this.stored.get(name));
    let fileHash;
    if (backing.kind === 'chunks') {
      const chunks = await this.options.source.chunksOf(backing.narFile.id);
      if (dryRun) {
        report.reassembled.nars++;
        report.reassembled.bytes += chunks.reduce((sum, c) => sum + c.size, 0);
        return placeholder(hash, narInfo);
      }
      const whole = await reassembleChunks({ storage, narFileHash: backing.narFile.hash, chunks, narHash: narInfo.narHash, narSize: narInfo.narSize });
      this.stored.set(whole.name, whole.size);
      report.reassembled.nars++;
      report.reassembled.bytes += whole.size;
      fileHash = whole.fileHash;
      backing = { kind: 'file', name: whole.name, compression: 'zstd', size: whole.size, narFile: backing.narFile };
    }
    const now = Date.now();
    const narInfoTimes = recordTimes(row?.createdAt, row?.lastAccessedAt, now);
    const narFile = backing.narFile;
    const narFileTimes = narFile ? recordTimes(narFile.createdAt, narFile.lastAccessedAt, now) : narInfoTimes;
    const storedAt = goTimeToMs(narFile?.bytesStoredAt) ?? narFileTimes.createdAt;
    return importedNarInfo(hash, narInfo, { ...backing, ...(fileHash ? { fileHash } : {}) }, {
      narInfo: narInfoTimes,
      narFile: narFileTimes,
      storedAt,
    });
  }

  private async commit(entries: ImportedNarInfo[]): Promise<number> {
    const { db, dryRun } = this.options;
    if (entries.length === 0) return 0;
    if (dryRun || !db) return entries.length;
    return db.importNarInfos(entries);
  }

  private failed(error: unknown, example: string): void {
    if (!(error instanceof Skip)) throw error;
    this.options.counts.failed++;
    noteSkipped(this.options.report, error.reason, error.detail ? `${example}: ${error.detail}` : example);
  }

  private async pins(): Promise<void> {
    const { source, db, dryRun, report } = this.options;
    for (const pin of await source.pins()) {
      if (!/^[0-9a-df-np-sv-z]{32}$/.test(pin.hash)) {
        noteSkipped(report, 'not a store path hash', `pin ${pin.hash}`);
        continue;
      }
      if (!dryRun && db) await db.addPin(pin.hash, goTimeToMs(pin.createdAt) ?? Date.now());
      report.pins++;
    }
  }

  private async buildTraces(): Promise<void> {
    const { source, db, storage, dryRun, report } = this.options;
    for (const row of await source.buildTraces()) {
      let file: { name: string; text: string };
      try {
        file = buildTraceFile(row, this.signingKey);
      } catch (error) {
        this.failed(error, `${row.drvPath}!${row.outputName}`);
        continue;
      }
      report.buildTraces++;
      if (dryRun || !db) continue;
      if (await storage.getAuxFile('build-trace-v2', file.name)) continue;
      await keepAuxFile(db, storage, 'build-trace-v2', file.name, Buffer.from(file.text));
    }
  }
}

/** What a dry run counts for a chunked NAR it does not reassemble. */
function placeholder(hash: string, narInfo: ReturnType<typeof narInfoFromGoRow>): ImportedNarInfo {
  return {
    hash,
    narInfo,
    narFile: { name: '', compression: 'zstd', narHash: narInfo.narHash.toNix32(), narSize: narInfo.narSize },
    createdAt: 0,
    lastAccessedAt: 0,
    narFileCreatedAt: 0,
    narFileLastAccessedAt: 0,
  };
}
