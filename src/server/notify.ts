import { CHANGES_CHANNEL } from './install.js';
import type { SqlDatabase } from './sql.js';

/** Wakes long-polling feed requests when a captured change commits (LISTEN/NOTIFY on both engines). */
export interface ChangeSignal {
  /** Resolves true on the next commit notification, false after `ms` or when `signal` aborts. */
  next(ms: number, signal?: AbortSignal): Promise<boolean>;
  close(): Promise<void>;
}

/** Subscribes once to the changes channel and fans notifications out to waiting requests. */
export async function listenForChanges(db: SqlDatabase): Promise<ChangeSignal> {
  const waiters = new Set<(notified: boolean) => void>();
  const unlisten = await db.listen(CHANGES_CHANNEL, () => {
    for (const w of [...waiters]) w(true);
  });
  return {
    next(ms, signal) {
      return new Promise<boolean>((resolve) => {
        if (signal?.aborted) {
          resolve(false);
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
