// The ncps command line: `ncps <command> [flags]`. Exit status 2 for usage and configuration
// mistakes, 1 for failures at run time.

import { ConfigError } from '../config/load';
import { fsckCommand } from './fsck';
import { migrateCommand } from './migrate';
import { migrateNarinfoCommand } from './migrate-narinfo';
import { serveCommand } from './serve';
import { sweepOrphansCommand } from './sweep-orphans';

import { VERSION } from './version';
import { flushLogs } from '../telemetry/logger';

interface Command {
  summary: string;
  run(argv: string[]): Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  serve: serveCommand,
  migrate: migrateCommand,
  'migrate-narinfo': migrateNarinfoCommand,
  'sweep-orphans': sweepOrphansCommand,
  fsck: fsckCommand,
};

function usage(): string {
  const lines = ['Usage: ncps <command> [flags]', '', 'Nix binary cache proxy server.', '', 'Commands:'];
  for (const [name, command] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(18)}${command.summary}`);
  lines.push('', 'Run `ncps <command> --help` for the flags of a command.', '');
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  // Global flags may come before the command name, as with urfave/cli.
  const index = argv.findIndex((arg) => !arg.startsWith('-'));
  const name = index === -1 ? undefined : argv[index];
  const rest = index === -1 ? argv : [...argv.slice(0, index), ...argv.slice(index + 1)];

  if (name === undefined) {
    if (argv.includes('--version') || argv.includes('-v')) {
      process.stdout.write(`ncps ${VERSION}\n`);
      return 0;
    }
    const help = argv.includes('--help') || argv.includes('-h');
    (help ? process.stdout : process.stderr).write(usage());
    return help ? 0 : 2;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`ncps: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  try {
    return await command.run(rest);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`ncps ${name}: ${error.message}\n`);
      return 2;
    }
    // Operational failures (a database from a newer ncps, an unreachable server) are explained by
    // their message; the stack only helps when debugging.
    const debug = /^(debug|trace)$/.test(process.env.LOG_LEVEL ?? '') || rest.some((a) => /^--log-level[= ](debug|trace)/.test(a));
    const detail = debug ? ((error as Error).stack ?? String(error)) : (error as Error).message ?? String(error);
    process.stderr.write(`ncps ${name}: ${detail}\n`);
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
