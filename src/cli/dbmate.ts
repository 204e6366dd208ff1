// `dbmate-ncps` (the package's bin/dbmate-ncps runs `ncps dbmate …`): what nixpkgs' services.ncps
// runs before the server, `DATABASE_URL=… dbmate-ncps up`, because the Go ncps once shipped its
// migrations as a dbmate wrapper under that name. Here it applies ncps's own migrations, taking the
// database URL the way dbmate does (DATABASE_URL, or --url, or the variable --env names) and
// accepting dbmate's other flags, which mean nothing here. So nixpkgs' module, with only its
// package swapped for this one, starts.
//
// A database the Go ncps wrote is left alone: its takeover needs the storage too, which only the
// server's configuration names (nixpkgs' module gives this step the database URL alone), and
// `ncps serve` takes it over on start.

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { MIGRATIONS } from '../db/migrations';
import { databaseKind, openDatabase, redactDatabaseUrl, sqlitePathFromUrl } from '../db/open';
import { checkCompatibility, KNOWN_SCHEMA_VERSION } from '../db/schema';
import { openGoSource } from '../migrate/go/takeover';

const USAGE = `Usage: dbmate-ncps [--url URL | --env NAME] <up|migrate|status|create|wait>

Applies ncps's database migrations, as nixpkgs' services.ncps runs it before the server
(DATABASE_URL=… dbmate-ncps up). The database URL comes from --url, else from the environment
variable --env names (default DATABASE_URL), else CACHE_DATABASE_URL. dbmate's other flags
(--migrations-dir, --no-dump-schema, --schema-file, --wait, …) are accepted and have no effect:
ncps carries its migrations itself. ncps serve applies them on start as well.

  up, migrate   apply pending migrations (a new SQLite file is created, as dbmate does)
  status        show applied and pending migrations
  create        create a new SQLite file (a PostgreSQL database must exist already)
  wait          wait until the database answers
`;

/** dbmate flags that take a value, and those that do not; all but --url/--env are ignored. */
const VALUE_FLAGS = new Set(['url', 'u', 'env', 'e', 'migrations-dir', 'd', 'migrations-table', 'schema-file', 's', 'wait-timeout', 'env-file']);
const BARE_FLAGS = new Set(['no-dump-schema', 'wait', 'strict', 'verbose', 'v']);

interface DbmateArgs {
  command: string | undefined;
  url: string | undefined;
  envName: string;
  help: boolean;
}

function parse(argv: readonly string[]): DbmateArgs {
  const args: DbmateArgs = { command: undefined, url: undefined, envName: 'DATABASE_URL', help: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      args.help = true;
      continue;
    }
    if (!arg.startsWith('-')) {
      args.command ??= arg;
      continue;
    }
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq === -1 ? body : body.slice(0, eq);
    if (BARE_FLAGS.has(name)) continue;
    if (!VALUE_FLAGS.has(name)) throw new Error(`unknown flag: ${arg}`);
    const value = eq === -1 ? argv[++i] : body.slice(eq + 1);
    if (value === undefined) throw new Error(`flag ${arg} needs a value`);
    if (name === 'url' || name === 'u') args.url = value;
    if (name === 'env' || name === 'e') args.envName = value;
  }
  return args;
}

async function dbmate(argv: string[]): Promise<number> {
  let args: DbmateArgs;
  try {
    args = parse(argv);
  } catch (error) {
    process.stderr.write(`dbmate-ncps: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (args.help || args.command === undefined) {
    (args.help ? process.stdout : process.stderr).write(USAGE);
    return args.help ? 0 : 2;
  }
  const url = args.url || process.env[args.envName] || process.env.CACHE_DATABASE_URL;
  if (!url) {
    process.stderr.write(`dbmate-ncps: no database URL: set ${args.envName} (or pass --url)\n`);
    return 2;
  }
  const out = process.stdout;
  const where = redactDatabaseUrl(url);
  switch (args.command) {
    case 'up':
    case 'migrate':
    case 'status':
    case 'create':
    case 'wait':
      break;
    case 'rollback':
    case 'down':
      process.stderr.write('dbmate-ncps: ncps migrations only go forward; restore a backup to go back (docs/upgrading.md)\n');
      return 1;
    default:
      process.stderr.write(`dbmate-ncps: "${args.command}" is a dbmate command ncps does not need (ncps carries its own migrations)\n`);
      return 1;
  }

  let kind: 'sqlite' | 'postgres';
  try {
    kind = databaseKind(url);
  } catch (error) {
    process.stderr.write(`dbmate-ncps: ${(error as Error).message}\n`);
    return 2;
  }
  if (kind === 'sqlite' && (args.command === 'up' || args.command === 'migrate' || args.command === 'create')) {
    const file = sqlitePathFromUrl(url);
    if (file !== ':memory:') mkdirSync(path.dirname(file), { recursive: true });
  }

  const go = await openGoSource(url).catch(() => undefined);
  if (go) {
    await go.close();
    out.write(
      `${where} is a Go ncps database: left as it is here. ncps serve takes it over on start (it knows the storage too); ` +
        'ncps migrate from-go --dry-run shows what it will do.\n',
    );
    return 0;
  }

  const db = openDatabase(url, { maxOpenConns: 0, maxIdleConns: 0 });
  try {
    const status = await db.schemaStatus!();
    checkCompatibility(status.applied, KNOWN_SCHEMA_VERSION);
    if (args.command === 'wait' || args.command === 'create') {
      out.write(`${where}: reachable\n`);
      return 0;
    }
    if (args.command === 'status') {
      const names = new Map(MIGRATIONS.map((m) => [m.version, m.name]));
      for (const m of status.applied) out.write(`[X] ${m.version}_${names.get(m.version) ?? 'from-a-newer-ncps'}\n`);
      for (const m of status.pending) out.write(`[ ] ${m.version}_${m.name}\n`);
      out.write(`\nApplied: ${status.applied.length}\nPending: ${status.pending.length}\n`);
      return 0;
    }
    const applied = await db.migrate();
    if (applied.length === 0) out.write(`${where}: nothing to migrate (schema version ${KNOWN_SCHEMA_VERSION})\n`);
    for (const version of applied) out.write(`Applied: ${version}_${MIGRATIONS.find((m) => m.version === version)?.name}\n`);
    if (db.lastBackup) out.write(`backup taken before migrating: ${db.lastBackup}\n`);
    return 0;
  } finally {
    await db.close();
  }
}

export const dbmateCommand = {
  summary: "(nixpkgs' module) apply the migrations as dbmate-ncps up; see dbmate-ncps --help.",
  run: dbmate,
};
