// `ncps migrate up [--dry-run]` and `ncps migrate status`: the schema migrations that `serve`
// also runs by itself on start-up, for operators who want to run them (or look) first.

import { MIGRATIONS } from '../db/migrations';
import { checkCompatibility, KNOWN_SCHEMA_VERSION } from '../db/schema';
import { openDatabase } from '../db/open';
import { splitCommand } from './argv';
import { GoStillRunning } from '../migrate/go/takeover';
import { formatReport } from '../migrate/go/report';
import { commandConfig, commandLogger, describeDatabase, openConfiguredDatabase, openConfiguredStorage, requireExistingCache } from './common';
import { takeOverConfiguredGoDatabase } from './go-takeover';
import { migrateFromGo } from './migrate-from-go';

const SUMMARY = 'Apply (up) or show (status) the database schema migrations; take over a Go ncps database (from-go).';

async function migrate(argv: string[]): Promise<number> {
  // `ncps --config F migrate up` hands `--config F up` here: the subcommand is the first argument
  // that is neither a flag nor a flag's value.
  const { before, name: sub, after } = splitCommand(argv);
  const rest = [...before, ...after];
  if (sub === 'down') {
    // The Go ncps has the command only to refuse it; so does this one, with the way back.
    process.stderr.write(
      'ncps migrate down: migrations only go forward. To go back, restore the backup ncps took before migrating (db.sqlite.backup-v<N>-<time> beside an SQLite database) or your own database backup; see docs/upgrading.md.\n',
    );
    return 1;
  }
  if (sub === 'from-go') return migrateFromGo(rest);
  if (sub !== 'up' && sub !== 'status') {
    const help = argv.includes('--help') || argv.includes('-h');
    const text =
      `Usage: ncps migrate <up|status|from-go> [flags]\n\n${SUMMARY}\n\n` +
      '  up       apply pending migrations (--dry-run lists them); takes over a Go ncps database first\n' +
      '  status   show applied and pending migrations\n' +
      '  from-go  take over a Go ncps database and data directory (--dry-run shows what)\n';
    (help ? process.stdout : process.stderr).write(text);
    return help ? 0 : 2;
  }
  const command = `migrate ${sub}`;
  const config = commandConfig(command, SUMMARY, rest);
  if (!config) return 0;
  // `status` looks at a database that exists; `up` creates one, but says so (a typo shows), and
  // its dry run creates nothing.
  const { databaseMissing } = requireExistingCache(config, command, { storage: false, database: sub === 'status' ? 'required' : 'may-be-missing' });
  if (sub === 'up') {
    // The same takeover `serve` does on start-up, so a pre-upgrade job running `migrate up`
    // leaves a database the new servers can serve from at once.
    const dryRun = config.get<boolean>('dry-run');
    const storage = openConfiguredStorage(config);
    let report;
    try {
      report = await takeOverConfiguredGoDatabase(config, storage, commandLogger(config), { dryRun });
    } catch (error) {
      if (error instanceof GoStillRunning) {
        process.stderr.write(`ncps migrate up: ${error.message}\n`);
        return 1;
      }
      throw error;
    }
    if (report && !report.upToDate) process.stdout.write(`${dryRun ? 'dry run: ' : ''}${formatReport(report)}`);
    if (report?.newDatabase) {
      // Dry: our database beside the Go one does not exist yet, so every migration would run.
      process.stdout.write(`database: ${report.database} (new)\n`);
      for (const m of MIGRATIONS) process.stdout.write(`would apply ${m.version}  ${m.name}\n`);
      return 0;
    }
  }
  const dryRun = sub === 'up' && config.get<boolean>('dry-run');
  const db = databaseMissing && dryRun ? openDatabase('sqlite::memory:', { maxOpenConns: 0, maxIdleConns: 0 }) : openConfiguredDatabase(config);
  try {
    const status = await db.schemaStatus!();
    const current = Math.max(0, ...status.applied.map((m) => m.version));
    const out = process.stdout;
    out.write(`database: ${describeDatabase(config)}${databaseMissing ? (dryRun ? ' (does not exist yet: it would be created)' : ' (new: created now)') : ''}\n`);
    out.write(`schema version: ${current} (this ncps knows ${KNOWN_SCHEMA_VERSION})\n`);
    if (sub === 'status') {
      const names = new Map(MIGRATIONS.map((m) => [m.version, m.name]));
      for (const m of status.applied) out.write(`  applied  ${m.version}  ${names.get(m.version) ?? '(from a newer ncps)'}\n`);
      for (const m of status.pending) out.write(`  pending  ${m.version}  ${m.name}\n`);
      checkCompatibility(status.applied, KNOWN_SCHEMA_VERSION);
      return 0;
    }
    if (config.get<boolean>('dry-run')) {
      checkCompatibility(status.applied, KNOWN_SCHEMA_VERSION);
      if (status.pending.length === 0) out.write('nothing to migrate\n');
      for (const m of status.pending) out.write(`would apply ${m.version}  ${m.name}\n`);
      return 0;
    }
    const applied = await db.migrate();
    if (applied.length === 0) out.write('nothing to migrate\n');
    for (const version of applied) out.write(`applied ${version}  ${MIGRATIONS.find((m) => m.version === version)?.name}\n`);
    if (db.lastBackup) out.write(`backup taken before migrating: ${db.lastBackup}\n`);
    return 0;
  } finally {
    await db.close();
  }
}

export const migrateCommand = { summary: SUMMARY, run: migrate };
