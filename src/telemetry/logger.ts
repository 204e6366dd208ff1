// pino writes JSON lines to stdout synchronously-enough for a server and survives bundling
// (transports run in worker threads, which an esbuild bundle cannot load).

import pino, { type Logger } from 'pino';

export type { Logger };

/** ncps (like the Go original) names its most severe level "panic"; pino calls it "fatal". */
export function createLogger(level: string): Logger {
  return pino({
    level: level === 'panic' ? 'fatal' : level,
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}
