// Counts lock attempts, failures and hold times for the Go ncps's lock metrics
// (ncps_lock_acquisitions_total, ncps_lock_failures_total, ncps_lock_hold_duration_seconds), with
// its label values (type exclusive; mode local or distributed; result success or contention;
// reason), plus `kind`: the part of the key before the first ':' (download, narinfo, lru, …).

import type { Metrics } from '../telemetry/metrics';
import type { Lock, Locker } from './locker';

export function instrumentLocker(
  locker: Locker & { check?(): Promise<void> },
  metrics: Metrics,
  mode: 'local' | 'distributed' = 'local',
): Locker & { check?(): Promise<void> } {
  const kindOf = (key: string) => key.split(':', 1)[0] ?? key;
  const count = async <T extends Lock | undefined>(key: string, take: () => Promise<T>): Promise<T> => {
    const kind = kindOf(key);
    // A lock taken in-process because Redis is unreachable (degraded mode) is a local one.
    let lock: T;
    try {
      lock = await take();
    } catch (error) {
      const reason = (error as Error).name === 'LockUnavailableError' ? 'max_retries' : 'redis_error';
      metrics.lockFailures.labels({ type: 'exclusive', mode, reason, kind }).inc();
      throw error;
    }
    const lockMode = (lock as { degraded?: boolean } | undefined)?.degraded ? 'local' : mode;
    metrics.lockAcquisitions.labels({ type: 'exclusive', mode: lockMode, result: lock ? 'success' : 'contention', kind }).inc();
    if (!lock) return lock;
    const stopTimer = metrics.lockHoldDuration.startTimer({ type: 'exclusive', mode: lockMode, kind });
    const release = lock.release.bind(lock);
    let released = false;
    lock.release = () => {
      if (!released) {
        released = true;
        stopTimer();
      }
      return release();
    };
    return lock;
  };
  return {
    acquire: (key, ttlMs) => count(key, () => locker.acquire(key, ttlMs)),
    tryAcquire: (key, ttlMs) => count(key, () => locker.tryAcquire(key, ttlMs)),
    close: () => locker.close(),
    ...(locker.check ? { check: () => locker.check!() } : {}),
  };
}
