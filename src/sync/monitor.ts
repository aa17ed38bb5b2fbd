import { statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { isRetryable } from '../client/index.js';
import { LocalDatabaseError, isEpetsyncError } from '../errors.js';
import type { Logger } from '../logger.js';
import { isCorruptionError, sqliteCode } from '../db/index.js';
import type { CycleResult, SyncEngine, SyncRemote } from './engine.js';

/**
 * The monitor loop: sync cycles on an interval and, with real-time sync, on every local commit
 * (the database file and its WAL are watched) and every remote change (a long poll on the feed).
 * Cycles never overlap. Transient failures (network, 5xx, a busy database) are retried with
 * backoff while local changes keep queueing safely in the changelog; the stop signal ends the
 * loop after the batch in flight.
 */

/** Describes one cycle as the monitor reports it: its result or the failure that will be retried. */
export type CycleReport =
  | { ok: true; at: string; trigger: Trigger; result: CycleResult }
  | { ok: false; at: string; trigger: Trigger; code: string; message: string; retryInMs: number };

/** Names what started a cycle. */
export type Trigger = 'start' | 'interval' | 'local' | 'remote' | 'retry';

/** Configures {@link runMonitor}. */
export interface MonitorOptions {
  engine: SyncEngine;
  remote: SyncRemote;
  dbPath: string;
  intervalSeconds: number;
  realTime: boolean;
  /** One cycle, then return (its failure is thrown). */
  once: boolean;
  signal: AbortSignal;
  logger?: Logger | undefined;
  /** Keeps retrying failures that need a person without --fix (auth, endpoint): the client re-authenticates and re-discovers on each try. */
  fix?: boolean | undefined;
  /**
   * With --fix: called when the desktop database turns out to be corrupt. It must stop using the
   * damaged file, put the newest good backup in its place (keeping the damaged one), and return
   * an engine on the restored file; the loop then re-pulls from the backup's cursor.
   */
  recover?: ((error: unknown) => Promise<SyncEngine>) | undefined;
  /** Seconds the feed long poll waits (default 25). */
  longPollSeconds?: number | undefined;
  onCycle?(report: CycleReport): void;
}

/** Describes how a monitor run ended. */
export interface MonitorSummary {
  cycles: number;
  failures: number;
  pushed: number;
  pulled: number;
  conflicts: number;
  quarantined: number;
  stoppedBy: 'once' | 'signal';
}

/** Returns true for a failure the monitor waits out and retries (network, 5xx, busy database). */
export function isTransient(error: unknown, fix: boolean): boolean {
  if (isRetryable(error)) return true;
  const code = isEpetsyncError(error) ? error.code : (sqliteCode(error) ?? '');
  if (code === 'EPS_DB_BUSY' || code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return true;
  if (code === 'EPS_SERVER_ERROR' || code.startsWith('EPS_CONNECT_')) return true;
  if (fix && (code.startsWith('EPS_AUTH_') || code === 'EPS_ENDPOINT_NOT_FOUND' || code === 'EPS_PROTOCOL_MALFORMED')) return true;
  return false;
}

function isCorrupt(error: unknown): boolean {
  return (isEpetsyncError(error) && error.code === 'EPS_DB_CORRUPT') || (!isEpetsyncError(error) && isCorruptionError(error));
}

/** Identifies a file on disk: deleting the path or moving another file over it changes what the path names. */
export interface FileIdentity {
  dev: bigint;
  ino: bigint;
}

/** Returns the device and inode `path` names now, or null when nothing is there. */
export function fileIdentity(path: string): FileIdentity | null {
  const st = statSync(path, { bigint: true, throwIfNoEntry: false });
  return st ? { dev: st.dev, ino: st.ino } : null;
}

/**
 * Throws EPS_DB_REPLACED when `path` no longer names the file the monitor opened (`opened`): it
 * was deleted, or another file was moved over it. The open connection would go on writing into
 * a file nobody reads any more, whose -wal and -shm sit beside the new file under the same names.
 */
export function checkSameDatabase(path: string, opened: FileIdentity | null): void {
  if (opened === null) return;
  const now = fileIdentity(path);
  if (now !== null && now.dev === opened.dev && now.ino === opened.ino) return;
  if (now === null) {
    throw new LocalDatabaseError('EPS_DB_REPLACED', `The database ${path} was deleted while epetsync monitor was syncing it; the monitor stopped and created nothing in its place`, {
      hint: `Put the database back at ${path} (epetsync restore --latest restores the newest backup), then start the monitor again.`,
      details: { path, change: 'deleted' },
    });
  }
  throw new LocalDatabaseError('EPS_DB_REPLACED', `The database ${path} was replaced by another file while epetsync monitor was syncing it; the monitor stopped without writing to the new file`, {
    hint: `Check that ${path} is the database the desktop app should use (epetsync status), or put the right one back (epetsync restore FILE); then start the monitor again.`,
    details: { path, change: 'replaced' },
  });
}

function isSameDatabase(path: string, opened: FileIdentity | null): boolean {
  try {
    checkSameDatabase(path, opened);
    return true;
  } catch {
    return false;
  }
}

/** Returns the wait before retry number `failures` (1-based): 1 s doubling to 60 s. */
export function retryDelayMs(failures: number): number {
  return Math.min(60_000, 1000 * 2 ** Math.max(0, failures - 1));
}

/** Runs sync cycles until the signal (or once); see the module comment. */
export async function runMonitor(options: MonitorOptions): Promise<MonitorSummary> {
  const { signal } = options;
  // Replaced when --fix restores a backup; the watcher and the long poll always use the current one.
  const current = { engine: options.engine };
  const summary: MonitorSummary = { cycles: 0, failures: 0, pushed: 0, pulled: 0, conflicts: 0, quarantined: 0, stoppedBy: 'signal' };
  const wake = new Wake();
  let seenVersion = current.engine.dataVersion();
  // The file the engine has open; checked before every cycle (and on every file event), so nothing is synced into a file that was deleted or replaced.
  let opened = fileIdentity(options.dbPath);
  // Our own commits touch the files too; only another connection's commit moves data_version.
  const onLocal = (): void => {
    if (!isSameDatabase(options.dbPath, opened)) {
      wake.fire('local');
      return;
    }
    let version: number;
    try {
      version = current.engine.dataVersion();
    } catch {
      return;
    }
    if (version === seenVersion) return;
    seenVersion = version;
    wake.fire('local');
  };
  const stopWatching = options.realTime && !options.once ? watchLocal(options.dbPath, onLocal, options.logger) : () => {};
  // File events can be missed (network drives, some editors' saves): a cheap data_version poll backs them up.
  const backstop = options.realTime && !options.once ? setInterval(onLocal, 500) : undefined;
  // The long poll also ends with the loop: a loop ended by an error must not wait on it (it waits for a cycle that never comes).
  const loopEnded = new AbortController();
  const pollSignal = AbortSignal.any([signal, loopEnded.signal]);
  const poller = options.realTime && !options.once ? longPoll({ ...options, signal: pollSignal }, () => current.engine, wake) : Promise.resolve();
  let failures = 0;
  let recoveries = 0;
  let trigger: Trigger = 'start';
  try {
    while (!signal.aborted) {
      let delay = options.intervalSeconds * 1000;
      try {
        checkSameDatabase(options.dbPath, opened);
        const result = await current.engine.runCycle(signal);
        failures = 0;
        // A cycle that worked proves the restored file good: a later corruption is a new one, restored
        // again. Only restores in a row (a backup that fails too) stop the monitor.
        recoveries = 0;
        summary.cycles += 1;
        summary.pushed += result.pushed;
        summary.pulled += result.pulled;
        summary.conflicts += result.conflicts + result.collisions;
        summary.quarantined += result.quarantined;
        recordLastCycle(current.engine, { at: new Date().toISOString(), ok: true, result }, options.logger);
        options.onCycle?.({ ok: true, at: new Date().toISOString(), trigger, result });
      } catch (error) {
        if (options.fix && options.recover && isCorrupt(error) && recoveries < 2) {
          recoveries += 1;
          const message = error instanceof Error ? error.message : String(error);
          options.logger?.error({ err: error }, 'the desktop database is corrupt: stopping writes and restoring the newest good backup');
          options.onCycle?.({ ok: false, at: new Date().toISOString(), trigger, code: 'EPS_DB_CORRUPT', message: `${message}; restoring the newest good backup`, retryInMs: 0 });
          current.engine = await options.recover(error);
          // The restored file is a new file at the path: it is the one to keep syncing.
          opened = fileIdentity(options.dbPath);
          trigger = 'retry';
          continue;
        }
        if (options.once || !isTransient(error, options.fix === true)) throw error;
        failures += 1;
        summary.failures += 1;
        delay = retryDelayMs(failures);
        const code = isEpetsyncError(error) ? error.code : (sqliteCode(error) ?? 'EPS_INTERNAL');
        const message = error instanceof Error ? error.message : String(error);
        options.logger?.warn({ code, failures, retryInMs: delay }, `sync cycle failed: ${message}; retrying`);
        options.onCycle?.({ ok: false, at: new Date().toISOString(), trigger, code, message, retryInMs: delay });
      }
      if (options.once) {
        summary.stoppedBy = 'once';
        break;
      }
      trigger = await wake.wait(delay, signal, failures > 0 ? 'retry' : 'interval');
    }
  } finally {
    clearInterval(backstop);
    stopWatching();
    loopEnded.abort();
    wake.fire('remote');
    await poller;
  }
  return summary;
}

function recordLastCycle(engine: SyncEngine, value: unknown, logger: Logger | undefined): void {
  try {
    engine.recordMeta(META_LAST_CYCLE, JSON.stringify(value));
  } catch (error) {
    // Only a status nicety: a busy database must not fail the cycle that just succeeded.
    logger?.debug({ err: error }, 'could not record the last cycle');
  }
}

/** Names the meta key holding the last cycle's summary (read by `epetsync status`). */
export const META_LAST_CYCLE = 'last_cycle';

/** Wakes the loop early: the first trigger since the last wait wins. */
class Wake {
  private pending: Trigger | undefined;
  private resolve: ((t: Trigger) => void) | undefined;

  fire(trigger: Trigger): void {
    if (this.resolve) {
      const r = this.resolve;
      this.resolve = undefined;
      r(trigger);
    } else this.pending ??= trigger;
  }

  wait(ms: number, signal: AbortSignal, timeoutTrigger: Trigger): Promise<Trigger> {
    if (this.pending) {
      const t = this.pending;
      this.pending = undefined;
      return Promise.resolve(t);
    }
    if (signal.aborted) return Promise.resolve(timeoutTrigger);
    return new Promise((resolve) => {
      const done = (t: Trigger): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        this.resolve = undefined;
        resolve(t);
      };
      const onAbort = (): void => done(timeoutTrigger);
      const timer = setTimeout(() => done(timeoutTrigger), ms);
      signal.addEventListener('abort', onAbort, { once: true });
      this.resolve = done;
    });
  }
}

/** Watches the database file and its WAL/journal for commits by any process; returns the stop function. */
function watchLocal(dbPath: string, onChange: () => void, logger: Logger | undefined): () => void {
  const names = new Set([basename(dbPath), `${basename(dbPath)}-wal`, `${basename(dbPath)}-journal`]);
  let watcher: FSWatcher | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    // The folder, not the files: the WAL comes and goes, and a watch on a deleted file goes deaf.
    watcher = watch(dirname(dbPath), { persistent: false }, (_event, name) => {
      if (name !== null && !names.has(String(name))) return;
      // Debounced: one commit touches the WAL several times.
      clearTimeout(timer);
      timer = setTimeout(onChange, 30);
    });
    watcher.on('error', (error) => logger?.warn({ err: error }, 'watching the database folder failed; falling back to the interval'));
  } catch (error) {
    logger?.warn({ err: error }, 'cannot watch the database folder; real-time push falls back to the interval');
  }
  return () => {
    clearTimeout(timer);
    watcher?.close();
  };
}

/** Long-polls the feed from the stored cursor and wakes the loop when something is ready. */
async function longPoll(options: MonitorOptions, engineOf: () => SyncEngine, wake: Wake): Promise<void> {
  const { signal } = options;
  let failures = 0;
  while (!signal.aborted) {
    try {
      const engine = engineOf();
      const cursor = engine.cursor();
      if (cursor === '') {
        await sleep(200, signal);
        continue;
      }
      const page = await options.remote.changesSince(cursor, { limit: 1, wait: options.longPollSeconds ?? 25, signal });
      failures = 0;
      if (page.changes.length > 0 || page.has_more) {
        wake.fire('remote');
        // Let the cycle apply it before asking again from the same cursor.
        await engine.nextCycleEnd(signal);
      }
    } catch (error) {
      if (signal.aborted) return;
      failures += 1;
      options.logger?.debug({ err: error }, 'feed long poll failed');
      await sleep(retryDelayMs(failures), signal);
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
