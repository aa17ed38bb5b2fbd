import { CHANGES_CHANNEL } from './install.js';
import type { SqlDatabase } from './sql.js';

/** Wakes long-polling feed requests when a captured change commits (LISTEN/NOTIFY on both engines). */
export interface ChangeSignal {
  /**
   * Returns how many notifications arrived so far. Take it before reading the feed and pass it to
   * `next`: a commit notified while the read was in flight then wakes the wait at once instead of
   * being missed until the polling tick.
   */
  mark(): number;
  /** Resolves true on the next commit notification (at once when one arrived since `since`), false after `ms` or when `signal` aborts. */
  next(ms: number, signal?: AbortSignal, since?: number): Promise<boolean>;
  close(): Promise<void>;
}

/** Subscribes once to the changes channel and fans notifications out to waiting requests. */
export async function listenForChanges(db: SqlDatabase): Promise<ChangeSignal> {
  const waiters = new Set<(notified: boolean) => void>();
  let notifications = 0;
  const unlisten = await db.listen(CHANGES_CHANNEL, () => {
    notifications += 1;
    for (const w of [...waiters]) w(true);
  });
  return {
    mark() {
      return notifications;
    },
    next(ms, signal, since) {
      return new Promise<boolean>((resolve) => {
        if (signal?.aborted) {
          resolve(false);
          return;
        }
        if (since !== undefined && since !== notifications) {
          resolve(true);
          return;
        }
        const done = (notified: boolean): void => {
          clearTimeout(timer);
          waiters.delete(done);
          signal?.removeEventListener('abort', onAbort);
          resolve(notified);
        };
        const onAbort = (): void => done(false);
        const timer = setTimeout(() => done(false), Math.max(0, ms));
        waiters.add(done);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    },
    async close() {
      for (const w of [...waiters]) w(false);
      await unlisten();
    },
  };
}
