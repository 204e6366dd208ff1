// Counts lock acquisitions and failures by kind (the part of the key before the first ':'), for
// ncps_lock_acquisitions_total and ncps_lock_failures_total, whatever the Locker behind it.

import type { Metrics } from '../telemetry/metrics';
import type { Lock, Locker } from './locker';

export function instrumentLocker(locker: Locker & { check?(): Promise<void> }, metrics: Metrics): Locker & { check?(): Promise<void> } {
  const kind = (key: string) => key.split(':', 1)[0] ?? key;
  const count = async <T extends Lock | undefined>(key: string, take: () => Promise<T>): Promise<T> => {
    try {
      const lock = await take();
      if (lock) metrics.lockAcquisitions.labels(kind(key)).inc();
      return lock;
    } catch (error) {
      metrics.lockFailures.labels(kind(key)).inc();
      throw error;
    }
  };
  return {
    acquire: (key, ttlMs) => count(key, () => locker.acquire(key, ttlMs)),
    tryAcquire: (key, ttlMs) => count(key, () => locker.tryAcquire(key, ttlMs)),
    close: () => locker.close(),
    ...(locker.check ? { check: () => locker.check!() } : {}),
  };
}
