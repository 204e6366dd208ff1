// The ncps command line: `ncps [global flags] <command> [flags]`, the Go ncps's shape (global
// flags before or after the command, `s` for serve, `help`, `--version`). Exit status 2 for usage
// and configuration mistakes, 1 for failures at run time.

import { ConfigError } from '../config/load';
import { fsckCommand } from './fsck';
import { listCommand } from './list';
import { migrateCommand } from './migrate';
import { migrateNarinfoCommand } from './migrate-narinfo';
import { tolerateMissingWebAssembly } from '../upstream/node-http';
import { splitCommand } from './argv';
import { dbmateCommand } from './dbmate';
import { serveCommand } from './serve';
import { sweepOrphansCommand } from './sweep-orphans';

import { VERSION } from './version';
import { completionScript, type CompletedCommand } from './completion';
import { manPage } from './manpage';
import { flushLogs } from '../telemetry/logger';

interface Command {
  summary: string;
  run(argv: string[]): Promise<number>;
  /** Other names, as in the Go ncps (`ncps s` for `ncps serve`). */
  aliases?: readonly string[];
}

/** A Go ncps command for a feature this ncps does not have: it says so, and fails (nothing was done). */
function absentCommand(summary: string, why: string): Command {
  return {
    summary,
    run: async () => {
      process.stderr.write(`${why}\n`);
      return 2;
    },
  };
}

const COMMANDS: Record<string, Command> = {
  serve: { ...serveCommand, aliases: ['s'] },
  migrate: migrateCommand,
  'migrate-narinfo': migrateNarinfoCommand,
  'sweep-orphans': sweepOrphansCommand,
  fsck: fsckCommand,
  list: listCommand,
  // Hidden: what the package's bin/dbmate-ncps runs (nixpkgs' module calls `dbmate-ncps up`).
  dbmate: dbmateCommand,
  help: { summary: 'Show the commands, or the flags of one command (ncps help serve).', aliases: ['h'], run: helpCommand },
  version: { summary: 'Print the version.', run: async () => printVersion() },
  completion: { summary: 'Print a shell completion script: ncps completion bash|zsh|fish.', run: completionCommand },
  manpage: { summary: 'Print the manual page (roff), made from the option table.', run: async () => printManPage() },
  'migrate-nar-to-chunks': absentCommand(
    '(Go ncps) split NARs into CDC chunks: not part of this ncps.',
    'ncps migrate-nar-to-chunks: this ncps has no content-defined chunking (CDC); it stores every NAR whole, so there is nothing to convert.',
  ),
  'migrate-chunks-to-nar': absentCommand(
    '(Go ncps) join CDC chunks back into NARs: not part of this ncps.',
    'ncps migrate-chunks-to-nar: this ncps has no content-defined chunking (CDC). Chunked NARs of a Go ncps are joined into whole NARs when this ncps takes over its database (see docs/upgrading.md); run the Go ncps\'s own migrate-chunks-to-nar before switching if you want to do it beforehand.',
  ),
};

/** Commands shown in the usage text (the Go-only ones are left out). */
const LISTED = ['serve', 'migrate', 'migrate-narinfo', 'sweep-orphans', 'fsck', 'list', 'help', 'version', 'completion', 'manpage'];

/** The commands as completion and the man page describe them. */
function listedCommands(): CompletedCommand[] {
  return LISTED.map((name) => ({ name, summary: COMMANDS[name]!.summary, ...(COMMANDS[name]!.aliases ? { aliases: COMMANDS[name]!.aliases } : {}) }));
}

async function completionCommand(argv: string[]): Promise<number> {
  const shell = argv.find((a) => !a.startsWith('-'));
  if (argv.includes('--help') || argv.includes('-h') || !shell) {
    (shell ? process.stdout : process.stderr).write('Usage: ncps completion bash|zsh|fish\n\nPrints the completion script, e.g.  source <(ncps completion bash)\n');
    return shell || argv.includes('--help') || argv.includes('-h') ? 0 : 2;
  }
  try {
    process.stdout.write(completionScript(shell, listedCommands()));
    return 0;
  } catch (error) {
    process.stderr.write(`ncps completion: ${(error as Error).message}\n`);
    return 2;
  }
}

function printManPage(): number {
  process.stdout.write(manPage(listedCommands(), VERSION));
  return 0;
}

function findCommand(name: string): [string, Command] | undefined {
  for (const [canonical, command] of Object.entries(COMMANDS)) {
    if (canonical === name || command.aliases?.includes(name)) return [canonical, command];
  }
  return undefined;
}

function usage(): string {
  const lines = ['Usage: ncps [global flags] <command> [flags]', '', 'Nix binary cache proxy server.', '', 'Commands:'];
  for (const name of LISTED) {
    const command = COMMANDS[name]!;
    const label = command.aliases ? `${name}, ${command.aliases.join(', ')}` : name;
    lines.push(`  ${label.padEnd(18)}${command.summary}`);
  }
  lines.push(
    '',
    'Global flags (--config FILE, --log-level LEVEL, --prometheus-enabled, --otel-enabled, --otel-grpc-url URL)',
    'go before or after the command. `ncps help <command>` (or `ncps <command> --help`) lists the flags of a command.',
    '',
  );
  return lines.join('\n');
}

function printVersion(): number {
  process.stdout.write(`ncps version ${VERSION}\n`);
  return 0;
}

/** `ncps help [command]`: the usage, or the command's own --help. */
async function helpCommand(argv: string[]): Promise<number> {
  const { name, after } = splitCommand(argv);
  if (name === undefined) {
    process.stdout.write(usage());
    return 0;
  }
  const found = findCommand(name);
  if (!found || found[0] === 'help') {
    process.stderr.write(`ncps help: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  return found[1].run([...after, '--help']);
}

/**
 * The program named again as the first argument: `docker run IMAGE /bin/ncps serve …` (how the Go
 * ncps's image is run, its command being /bin/ncps) hands `/bin/ncps serve …` to the image's
 * entrypoint, which is this program. No command is called ncps, so dropping it is unambiguous.
 */
export function withoutProgramName(argv: readonly string[]): string[] {
  return argv.length > 0 && /^(?:\/.*\/)?ncps$/.test(argv[0]!) ? argv.slice(1) : [...argv];
}

export async function main(rawArgv: string[]): Promise<number> {
  tolerateMissingWebAssembly();
  const argv = withoutProgramName(rawArgv);
  let split;
  try {
    split = splitCommand(argv);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`ncps: ${error.message}\n`);
    return 2;
  }
  const { before, name, after } = split;

  if (name === undefined) {
    if (argv.includes('--version') || argv.includes('-v')) return printVersion();
    const help = argv.includes('--help') || argv.includes('-h');
    (help ? process.stdout : process.stderr).write(usage());
    return help ? 0 : 2;
  }
  const found = findCommand(name);
  if (!found) {
    process.stderr.write(`ncps: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  const [canonical, command] = found;
  // `ncps --help serve` and `ncps serve --help` both show the command's flags.
  const rest = [...before, ...after];
  try {
    return await command.run(rest);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`ncps ${canonical}: ${error.message}\n`);
      return 2;
    }
    // Operational failures (a database from a newer ncps, an unreachable server) are explained by
    // their message; the stack only helps when debugging.
    const debug = /^(debug|trace)$/.test(process.env.LOG_LEVEL ?? '') || rest.some((a) => /^--log-level[= ](debug|trace)/.test(a));
    const detail = debug ? ((error as Error).stack ?? String(error)) : (error as Error).message ?? String(error);
    process.stderr.write(`ncps ${canonical}: ${detail}\n`);
    return 1;
  }
}

if (require.main === module) {
  // Exit explicitly once the command is done: a client still trying to reconnect (Redis, say)
  // after a failed start must not keep the process alive, or systemd would never restart it.
  // Buffered log lines get a moment to go out first (never longer: the reader may be stuck).
  main(process.argv.slice(2)).then(
    (code) => flushLogs().finally(() => process.exit(code)),
    (error: unknown) => {
      process.stderr.write(`ncps: ${String(error)}\n`);
      void flushLogs().finally(() => process.exit(1));
    },
  );
}
