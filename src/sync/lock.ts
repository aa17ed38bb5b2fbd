import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { EpetsyncError } from '../errors.js';

/**
 * The single-instance lock of a desktop database: a file `<db>.epetsync.lock` beside it holding
 * the owner's pid. Created with O_EXCL, so two monitors started at once (overlapping scheduled
 * runs) cannot both get it. A lock whose pid is no longer alive was left by a crash: it is
 * taken over, and the takeover is reported.
 */

/** Describes who holds a lock. */
export interface LockOwner {
  pid: number;
  host: string;
  startedAt: string;
  command: string;
}

/** Describes a lock this process holds. */
export interface HeldLock {
  path: string;
  /** The dead owner whose stale lock was taken over, if any. */
  takenOver: LockOwner | null;
  /** Removes the lock file if it is still ours. */
  release(): void;
}

/** Returns the lock file path for a database path. */
export function lockPath(dbPath: string): string {
  return `${dbPath}.epetsync.lock`;
}

/** Returns true when a process with this pid exists (EPERM means it exists but belongs to someone else). */
export function isProcessAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Reads the lock's owner, or null when there is no lock (an unreadable file counts as a dead owner). */
export function readLock(dbPath: string): LockOwner | null {
  let text: string;
  try {
    text = readFileSync(lockPath(dbPath), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  try {
    const data = JSON.parse(text) as Partial<LockOwner>;
    return { pid: Number(data.pid), host: String(data.host ?? ''), startedAt: String(data.startedAt ?? ''), command: String(data.command ?? '') };
  } catch {
    // Half-written by a process killed mid-write: nobody can own it.
    return { pid: 0, host: '', startedAt: '', command: '' };
  }
}

/** Takes the lock for `dbPath` or throws EPS_LOCKED naming the live owner; a stale lock from a dead process is taken over. */
export function acquireLock(dbPath: string, command: string): HeldLock {
  const path = lockPath(dbPath);
  const me: LockOwner = { pid: process.pid, host: hostname(), startedAt: new Date().toISOString(), command };
  let takenOver: LockOwner | null = null;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(path, `${JSON.stringify(me)}\n`, { flag: 'wx', mode: 0o644 });
      return {
        path,
        takenOver,
        release() {
          const owner = readLock(dbPath);
          if (owner?.pid === process.pid) {
            try {
              unlinkSync(path);
            } catch {
              // Already gone: nothing to release.
            }
          }
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new EpetsyncError('EPS_DB_OPEN_FAILED', `Cannot create the lock file ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, {
          hint: 'Check that the folder of the database is writable by this user.',
          cause: error,
        });
      }
    }
    const owner = readLock(dbPath);
    if (owner === null) continue;
    // Another host's pid means nothing here; a shared folder lock from another machine is respected.
    const sameHost = owner.host === '' || owner.host === hostname();
    if (!sameHost || isProcessAlive(owner.pid)) {
      throw new EpetsyncError('EPS_LOCKED', `Another epetsync (${owner.command || 'process'}, pid ${owner.pid}${sameHost ? '' : ` on ${owner.host}`}) is already syncing ${dbPath}`, {
        hint: sameHost
          ? `Stop it first (epetsync monitor --stop), or wait for it to finish; the lock is ${path}.`
          : `Stop the epetsync on ${owner.host}; if it is gone, delete ${path}.`,
        details: { lock: path, pid: owner.pid, host: owner.host, started_at: owner.startedAt },
      });
    }
    takenOver = owner;
    try {
      unlinkSync(path);
    } catch {
      // Another process took it over first; the next attempt sees its lock.
    }
  }
  throw new EpetsyncError('EPS_LOCKED', `Could not take the lock ${path}: other processes keep taking it`, { hint: 'Make sure only one scheduled epetsync runs at a time.' });
}
