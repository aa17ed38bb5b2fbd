import { readFileSync } from 'node:fs';
import type Database from 'better-sqlite3';
import { INTERNAL_PREFIX, META, captureVersion, readMeta } from './local-capture.js';
import { isProcessAlive, readLock, type LockOwner } from './lock.js';
import { META_LAST_CYCLE } from './monitor.js';
import { listConflicts, listQuarantine, outboxCount } from './store.js';

/** Describes the sync side of `epetsync status` (and of diagnose): queue, quarantine, conflicts, cursor, monitor. */
export interface SyncStatus {
  /** Change capture is installed in the desktop database (monitor ran at least once). */
  captureInstalled: boolean;
  cursor: string | null;
  /** Local changes waiting to be pushed. */
  pending: number;
  oldestPending: string | null;
  /** Batches written to the outbox and not yet acknowledged. */
  unacknowledgedBatches: number;
  quarantined: number;
  conflicts: number;
  /** The last cycle a monitor finished (from the desktop database). */
  lastCycle: unknown;
  monitor: { running: boolean; pid: number | null; lock: LockOwner | null };
}

/** Reads the sync state of a desktop database without changing it; `pidFile` is the background monitor's. */
export function readSyncStatus(db: Database.Database, dbPath: string, pidFile: string): SyncStatus {
  const installed = captureVersion(db) !== null;
  let pending = 0;
  let oldest: string | null = null;
  const hasLog = db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(`${INTERNAL_PREFIX}changelog`) !== undefined;
  if (hasLog) {
    const row = db.prepare(`SELECT count(*) AS n, min(changed_at) AS oldest FROM ${INTERNAL_PREFIX}changelog`).safeIntegers(false).get() as { n: number; oldest: string | null };
    pending = row.n;
    oldest = row.oldest;
  }
  const last = readMeta(db, META_LAST_CYCLE);
  let lastCycle: unknown = null;
  try {
    lastCycle = last === null ? null : JSON.parse(last);
  } catch {
    lastCycle = null;
  }
  let pid: number | null = null;
  try {
    const n = Number(readFileSync(pidFile, 'utf8').trim());
    pid = isProcessAlive(n) ? n : null;
  } catch {
    pid = null;
  }
  const lock = readLock(dbPath);
  const lockAlive = lock !== null && isProcessAlive(lock.pid);
  return {
    captureInstalled: installed,
    cursor: readMeta(db, META.pullCursor),
    pending,
    oldestPending: oldest,
    unacknowledgedBatches: outboxCount(db),
    quarantined: listQuarantine(db).length,
    conflicts: listConflicts(db).length,
    lastCycle,
    monitor: { running: pid !== null || lockAlive, pid: pid ?? (lockAlive ? lock.pid : null), lock },
  };
}
