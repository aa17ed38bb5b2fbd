import Database from 'better-sqlite3';
import { LocalDatabaseError, isEpetsyncError } from '../errors.js';
import { inspectDatabaseFile, type FileRole } from './file.js';

/** Names an open better-sqlite3 connection. */
export type SqliteDatabase = Database.Database;

/** Describes how {@link openDatabase} opens a file. */
export interface OpenDatabaseOptions {
  /** `read` (default) opens read-only for checks and backups; `write` opens read-write. */
  mode?: 'read' | 'write';
  /** How long to wait for another process's lock before failing with EPS_DB_BUSY (config `database.busy_timeout_ms`). */
  busyTimeoutMs?: number;
  /** What the file is, for messages (default: the database named by `database.path`). */
  role?: FileRole;
}

/**
 * Opens an existing SQLite file after checking it is one, and reads its schema so that a bad
 * header, corruption or a lock surfaces here as a {@link LocalDatabaseError} naming the file.
 * Never creates a file and never changes the journal mode.
 */
export function openDatabase(path: string, options: OpenDatabaseOptions = {}): SqliteDatabase {
  const role = options.role ?? { noun: 'Database', key: 'database.path' };
  const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  inspectDatabaseFile(path, role);
  const readonly = (options.mode ?? 'read') === 'read';
  let db: SqliteDatabase | undefined;
  try {
    db = openChecked(path, readonly, busyTimeoutMs);
    return db;
  } catch (error) {
    db?.close();
    if (!readonly || sqliteCode(error) !== 'SQLITE_READONLY_ROLLBACK') throw toLocalDatabaseError(error, path, { noun: role.noun, busyTimeoutMs, action: 'open' });
  }
  // A writer killed mid-transaction (a crash, a power cut) left a hot journal, which a read-only
  // connection cannot roll back. A read-write open rolls it back, as the desktop app's next open
  // would: the file returns to its last committed state, nothing committed is touched.
  try {
    openChecked(path, false, busyTimeoutMs).close();
    return openChecked(path, true, busyTimeoutMs);
  } catch (error) {
    throw toLocalDatabaseError(error, path, { noun: role.noun, busyTimeoutMs, action: 'open' });
  }
}

function openChecked(path: string, readonly: boolean, busyTimeoutMs: number): SqliteDatabase {
  const db = new Database(path, { readonly, fileMustExist: true, timeout: busyTimeoutMs });
  try {
    // better-sqlite3 opens lazily: reading the schema is what surfaces a bad header, corruption or a lock.
    db.prepare('SELECT count(*) FROM sqlite_schema').get();
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}

/** Describes the operation that failed, for {@link toLocalDatabaseError}. */
export interface SqliteFailureContext {
  noun?: string;
  busyTimeoutMs?: number;
  /** A verb phrase: `open`, `read`, `back up`, `check`. */
  action?: string;
}

/** Returns the SQLite result code of a better-sqlite3 error (`SQLITE_CORRUPT`), or undefined. */
export function sqliteCode(error: unknown): string | undefined {
  const code: unknown = error instanceof Error ? (error as Error & { code?: unknown }).code : undefined;
  return typeof code === 'string' && code.startsWith('SQLITE_') ? code : undefined;
}

/** Returns true when `error` says the database image is damaged (SQLITE_CORRUPT, SQLITE_NOTADB, "malformed"). */
export function isCorruptionError(error: unknown): boolean {
  const code = sqliteCode(error) ?? '';
  return code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB' || (error instanceof Error && /malformed/i.test(error.message));
}

/** Maps a better-sqlite3 failure on `path` to EPS_DB_CORRUPT, EPS_DB_BUSY or EPS_DB_OPEN_FAILED with a hint. */
export function toLocalDatabaseError(error: unknown, path: string, context: SqliteFailureContext = {}): LocalDatabaseError {
  if (isEpetsyncError(error)) return error;
  const noun = context.noun ?? 'Database';
  const action = context.action ?? 'open';
  const code = sqliteCode(error);
  const reason = error instanceof Error ? error.message : String(error);
  const details = { path, sqlite: code ?? null };
  if (isCorruptionError(error)) {
    return new LocalDatabaseError('EPS_DB_CORRUPT', `${noun} ${path} is corrupt: ${reason}`, {
      hint: noun === 'Database'
        ? 'Restore the newest good backup with "epetsync restore --latest" (the damaged file is kept beside it).'
        : 'Use another backup; this file cannot be trusted.',
      details,
      cause: error,
    });
  }
  if (code !== undefined && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'))) {
    const waited = context.busyTimeoutMs ?? 0;
    return new LocalDatabaseError('EPS_DB_BUSY', `${noun} ${path} is locked by another process (waited ${waited} ms)`, {
      hint: 'Wait for the Vet Portal app to finish writing, or raise database.busy_timeout_ms in config.json.',
      details: { ...details, busyTimeoutMs: waited },
      cause: error,
    });
  }
  return new LocalDatabaseError('EPS_DB_OPEN_FAILED', `Cannot ${action} ${noun.toLowerCase()} ${path}: ${reason}`, {
    hint: 'Check the permissions of the file and its folder, and that the disk is not full.',
    details,
    cause: error,
  });
}

/** Returns the journal mode the file is in (`delete`, `wal`, …), read without changing it. */
export function journalMode(db: SqliteDatabase): string {
  return String(db.pragma('journal_mode', { simple: true }));
}
