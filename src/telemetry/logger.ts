// pino writes JSON lines to stdout; on a terminal they are prettified in-process. Transports
// (worker threads) are avoided on purpose: they cannot be loaded from a single-file bundle. The
// destination (./log-output) never blocks the server on a slow or vanished reader.

import { isatty } from 'node:tty';
import pino, { type Logger } from 'pino';
import { prettyFactory } from 'pino-pretty';
import { LogOutput } from './log-output';

export type { Logger };

export interface LoggerOptions {
  /** Human-readable lines; by default when stdout is a terminal. */
  pretty?: boolean;
  /** 'nonblocking' for the server (lines are dropped, not waited for); 'blocking' by default. */
  mode?: 'nonblocking' | 'blocking';
}

/** The outputs of the loggers made so far: their dropped lines are a metric, and exit flushes them. */
const outputs: LogOutput[] = [];

/** Log lines lost so far (reader gone, or too slow). */
export function droppedLogLines(): number {
  let total = 0;
  for (const output of outputs) total += output.dropped;
  return total;
}

/** Lets buffered log lines out before the process exits, waiting at most `timeoutMs`. */
export async function flushLogs(timeoutMs = 2_000): Promise<void> {
  await Promise.all(outputs.map((output) => output.flush(timeoutMs)));
}

/** ncps (like the Go original) names its most severe level "panic"; pino calls it "fatal". */
export function createLogger(level: string, options: LoggerOptions = {}): Logger {
  const settings = {
    // `disabled` (zerolog's, so the Go ncps's) is pino's `silent`.
    level: level === 'panic' ? 'fatal' : level === 'disabled' ? 'silent' : level,
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
    // Defence in depth: these never belong in a log line, whoever logs them.
    redact: { paths: ['headers.authorization', 'req.headers.authorization', 'password', 'token', 'secretKey'], censor: '[redacted]' },
  };
  // (isatty, not process.stdout.isTTY: that would open a second, blocking handle on fd 1.)
  const usePretty = options.pretty ?? isatty(1);
  const output = new LogOutput(1, {
    mode: options.mode ?? 'blocking',
    ...(usePretty ? { format: prettyFactory({ colorize: true }) } : {}),
  });
  outputs.push(output);
  return pino(settings, output);
}
