import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Backoff, UpstreamBackoff, parseRetryAfter } from '../../src/upstream/backoff';

describe('upstream back-off', () => {
  it('parses Retry-After as seconds or as an HTTP date', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    assert.equal(parseRetryAfter('3', now), 3000);
    assert.equal(parseRetryAfter(' 120 ', now), 120_000);
    assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:10 GMT', now), 10_000);
    assert.equal(parseRetryAfter('Wed, 31 Dec 2025 00:00:00 GMT', now), 0);
    assert.equal(parseRetryAfter('soon', now), undefined);
    assert.equal(parseRetryAfter(undefined, now), undefined);
  });

  it('doubles the wait after each failure in a row, up to a minute, and resets on success', () => {
    const b = new Backoff();
    const delays = Array.from({ length: 9 }, () => b.failed(undefined, 0));
    assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
    assert.equal(b.available(59_999), false);
    assert.equal(b.available(60_000), true);
    b.succeeded();
    assert.equal(b.available(0), true);
    assert.equal(b.failed(undefined, 0), 1000);
  });

  it('waits as long as Retry-After says, within one second and ten minutes', () => {
    const b = new Backoff();
    assert.equal(b.failed('3', 0), 3000);
    assert.equal(b.failed('0', 0), 1000);
    assert.equal(b.failed('86400', 0), 600_000);
  });

  it('backs off one path for its own failures, the whole upstream for rate limits', () => {
    const b = new UpstreamBackoff();
    b.failed('a.narinfo', 'path', undefined, 0);
    assert.equal(b.available('a.narinfo', 500), false);
    assert.equal(b.available('b.narinfo', 500), true);
    b.failed('a.narinfo', 'upstream', '5', 0);
    assert.equal(b.available('b.narinfo', 4_000), false);
    assert.equal(b.available('b.narinfo', 5_000), true);
    b.succeeded('a.narinfo');
    assert.equal(b.available('a.narinfo', 0), true);
  });
});
