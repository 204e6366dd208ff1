// Finding the command in `ncps [global flags] <command> [flags]`, as urfave/cli (the Go ncps) does:
// flags may come before the command, with their values as the next argument (`--config FILE`).
// Which flags take a value is known from the option table, so nothing is guessed.

import { ConfigError, flagTakesValue } from '../config/load';

export interface SplitArgv {
  /** Flags (and their values) before the command. */
  before: string[];
  /** The first argument that is neither a flag nor a flag's value. */
  name: string | undefined;
  /** Everything after it. */
  after: string[];
}

/** Flags every level answers by itself, before any option table is consulted. */
const BARE = new Set(['--help', '-h', '--version', '-v']);

export function splitCommand(argv: readonly string[]): SplitArgv {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') return { before: argv.slice(0, i), name: argv[i + 1], after: argv.slice(i + 2) };
    if (!arg.startsWith('-') || arg === '-') return { before: argv.slice(0, i), name: arg, after: argv.slice(i + 1) };
    if (BARE.has(arg) || arg.includes('=')) continue;
    const name = arg.replace(/^--?/, '');
    const takesValue = flagTakesValue(name);
    if (takesValue === undefined) throw new ConfigError(`unknown flag: --${name} (see ncps help)`);
    if (takesValue) {
      if (i + 1 >= argv.length) throw new ConfigError(`flag --${name} needs a value`);
      i++;
    }
  }
  return { before: [...argv], name: undefined, after: [] };
}
