// pino writes JSON lines to stdout; on a terminal they are prettified in-process. Transports
// (worker threads) are avoided on purpose: they cannot be loaded from a single-file bundle.

import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

/** ncps (like the Go original) names its most severe level "panic"; pino calls it "fatal". */
export function createLogger(level: string, options: { pretty?: boolean } = {}): Logger {
  const settings = {
    level: level === 'panic' ? 'fatal' : level,
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
    // Defence in depth: these never belong in a log line, whoever logs them.
    redact: { paths: ['headers.authorization', 'req.headers.authorization', 'password', 'token', 'secretKey'], censor: '[redacted]' },
  };
  const usePretty = options.pretty ?? Boolean(process.stdout.isTTY);
  return usePretty ? pino(settings, pretty({ colorize: true, sync: true })) : pino(settings);
}
