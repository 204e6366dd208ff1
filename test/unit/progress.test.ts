import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatSeconds, Progress, type ProgressCounts } from '../../src/migrate/progress';
import type { Logger } from '../../src/telemetry/logger';

/** A terminal stand-in that keeps what was drawn. */
function terminal(): NodeJS.WriteStream & { text: string } {
  const out = { isTTY: true, text: '', write: (s: string) => ((out.text += s), true) };
  return out as unknown as NodeJS.WriteStream & { text: string };
}

function logs(): { logger: Logger; lines: Array<{ fields: Record<string, unknown>; msg: string }> } {
  const lines: Array<{ fields: Record<string, unknown>; msg: string }> = [];
  return { logger: { info: (fields: Record<string, unknown>, msg: string) => lines.push({ fields, msg }) } as unknown as Logger, lines };
}

describe('progress', () => {
  it('draws a bar with done/total on a terminal', () => {
    const tty = terminal();
    const counts: ProgressCounts = { done: 5, failed: 1, total: 10 };
    new Progress('migrating', () => counts, logs().logger, tty).stop();
    assert.match(tty.text, /migrating \[#{15}-{15}\] 5\/10 failed 1/);
  });

  it('shows a running count when the total is not known, on a terminal and in logs', () => {
    const tty = terminal();
    new Progress('looking at files', () => ({ done: 1234, failed: 0, total: undefined }), logs().logger, tty).stop();
    assert.match(tty.text, /looking at files: 1234 so far, failed 0/);
    assert.doesNotMatch(tty.text, /ETA|\[/);
    const { logger, lines } = logs();
    new Progress('looking at files', () => ({ done: 7, failed: 0, total: undefined }), logger, { isTTY: false } as NodeJS.WriteStream).stop();
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.msg, 'looking at files: progress');
    assert.equal(lines[0]!.fields.done, 7);
    assert.equal('etaSeconds' in lines[0]!.fields, false);
  });

  it('formats times left', () => {
    assert.equal(formatSeconds(5), '5s');
    assert.equal(formatSeconds(65), '1m05s');
    assert.equal(formatSeconds(3 * 3600 + 120), '3h02m');
  });
});
