import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseSchedule, startSchedule } from '../../src/cache/schedule';

describe('schedules in the Go ncps forms', () => {
  it('parses cron specs, descriptors, @every and CRON_TZ=', () => {
    assert.deepEqual(parseSchedule('0 2 * * *'), { kind: 'cron', pattern: '0 2 * * *' });
    assert.deepEqual(parseSchedule('@midnight'), { kind: 'cron', pattern: '@daily' });
    assert.deepEqual(parseSchedule('@hourly'), { kind: 'cron', pattern: '@hourly' });
    assert.deepEqual(parseSchedule('@every 1h30m'), { kind: 'every', intervalMs: 5_400_000 });
    assert.deepEqual(parseSchedule('@every 1500ms'), { kind: 'every', intervalMs: 1000 }, 'rounded down to seconds, as robfig/cron does');
    assert.deepEqual(parseSchedule('CRON_TZ=America/Los_Angeles 0 0 * * *'), { kind: 'cron', pattern: '0 0 * * *', timezone: 'America/Los_Angeles' });
    assert.deepEqual(parseSchedule('TZ=Europe/Berlin @daily'), { kind: 'cron', pattern: '@daily', timezone: 'Europe/Berlin' });
    assert.throws(() => parseSchedule('@every 500ms'), /at least 1s/);
    assert.throws(() => parseSchedule('@every soon'), /not a duration/);
    assert.throws(() => parseSchedule('CRON_TZ=Mars/Olympus 0 0 * * *'), /unknown time zone/);
    assert.throws(() => parseSchedule('every day'));
  });

  it('runs in the CRON_TZ zone rather than the configured one', () => {
    const job = startSchedule(parseSchedule('CRON_TZ=Asia/Tokyo 0 0 * * *'), 'America/New_York', () => {});
    try {
      const next = job.next()!;
      const tokyo = new Intl.DateTimeFormat('en-GB', { timeZone: 'Asia/Tokyo', hour: '2-digit', minute: '2-digit', hour12: false }).format(next);
      assert.equal(tokyo, '00:00');
    } finally {
      job.stop();
    }
  });

  it('@every counts from start', () => {
    const before = Date.now();
    const job = startSchedule(parseSchedule('@every 1h'), 'Local', () => {});
    try {
      const next = job.next()!.getTime();
      assert.ok(next >= before + 3_600_000 && next <= Date.now() + 3_600_000);
    } finally {
      job.stop();
    }
  });
});
