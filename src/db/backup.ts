import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmdirSync, statSync, unlinkSync } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { requireLocalPath } from '../config/index.js';
import { LocalDatabaseError, isEpetsyncError } from '../errors.js';
import { integrityCheck, quickCheck, type IntegrityCheckName, type IntegrityResult } from './checks.js';
import { SIDECAR_SUFFIXES } from './file.js';
import { journalMode, openDatabase, sqliteCode, toLocalDatabaseError, type SqliteDatabase } from './open.js';

/** Describes one backup file in the backup folder. */
export interface BackupFile {
  /** File name, e.g. `db-20261125T101500123Z.sqlite3`. */
  file: string;
  /** Absolute path. */
  path: string;
  sizeBytes: number;
  /** When the backup was taken (from its name), ISO 8601. */
  takenAt: string;
  /** Seconds between `takenAt` and now. */
  ageSeconds: number;
}

/** Describes how {@link takeBackup} runs. */
export interface TakeBackupOptions {
  /** The live database (`database.path`). */
  databasePath: string;
  /** Where backups go (`database.backup_dir`); created when missing. */
  backupDir: string;
  /** Keep only the newest N backups of this database afterwards; omit to keep all. */
  keep?: number | undefined;
  busyTimeoutMs?: number;
  /** Clock, for tests. */
  now?: () => Date;
}

/** Reports a verified backup and the rotation that followed it. */
export interface BackupResult {
  database: string;
  /** The new backup. */
  backup: BackupFile;
  /** Database pages copied. */
  pages: number;
  pageSize: number;
  /** Journal mode of the live database (read, not changed); the copy carries the same mode in its header. */
  journalMode: string;
  durationMs: number;
  /** The copy's integrity_check (always ok: a copy that fails is deleted and an error raised). */
  integrity: IntegrityResult;
  /** Backups deleted by rotation, oldest last. */
  removed: BackupFile[];
  /** Backups of this database left in the folder, the new one included. */
  kept: number;
  /** Non-fatal problems (e.g. an old backup that could not be deleted). */
  warnings: string[];
}

const STAMP = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z$/;

/** Returns `date` as a sortable UTC stamp with milliseconds: `20261125T101500123Z`. */
export function formatStamp(date: Date): string {
  return date.toISOString().replace(/[-:.]/g, '');
}

/** Returns the Date a {@link formatStamp} stamp stands for, or undefined when `stamp` is not one. */
export function parseStamp(stamp: string): Date | undefined {
  const m = STAMP.exec(stamp);
  if (!m) return undefined;
  const date = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]), Number(m[7])));
  // Date.UTC rolls month 13 over into the next year: only a stamp that round-trips is one.
  return Number.isNaN(date.getTime()) || formatStamp(date) !== stamp ? undefined : date;
}

/** Returns the database file name without its extension (`db.sqlite3` → `db`), the prefix of its backups. */
export function backupPrefix(databasePath: string): string {
  const name = basename(databasePath);
  const ext = extname(name);
  return ext === '' || ext === name ? name : name.slice(0, -ext.length);
}

/** Returns the backup file name for a backup of `databasePath` taken at `date`: `<prefix>-<stamp>.sqlite3`. */
export function backupFileName(databasePath: string, date: Date): string {
  return `${backupPrefix(databasePath)}-${formatStamp(date)}.sqlite3`;
}

function backupPattern(databasePath: string): RegExp {
  const prefix = backupPrefix(databasePath).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^${prefix}-(\\d{8}T\\d{9}Z)\\.sqlite3$`);
}

/** Lists the backups of `databasePath` in `backupDir`, newest first; only files named by epetsync's pattern count. */
export function listBackups(databasePath: string, backupDir: string, now: Date = new Date()): BackupFile[] {
  let names: string[];
  try {
    names = readdirSync(backupDir);
  } catch {
    return [];
  }
  const pattern = backupPattern(databasePath);
  const out: BackupFile[] = [];
  for (const file of names) {
    const m = pattern.exec(file);
    const taken = m ? parseStamp(m[1]!) : undefined;
    if (taken === undefined) continue;
    const path = join(backupDir, file);
    let stats;
    try {
      stats = statSync(path);
    } catch {
      continue;
    }
    if (!stats.isFile()) continue;
    out.push({ file, path, sizeBytes: stats.size, takenAt: taken.toISOString(), ageSeconds: Math.max(0, (now.getTime() - taken.getTime()) / 1000) });
  }
  // The stamp sorts as text in time order.
  return out.sort((a, b) => (a.file < b.file ? 1 : a.file > b.file ? -1 : 0));
}

/** Deletes all but the newest `keep` backups of `databasePath` (epetsync-named files only) and returns what it deleted. */
export function pruneBackups(databasePath: string, backupDir: string, keep: number, now: Date = new Date()): { removed: BackupFile[]; warnings: string[] } {
  if (!Number.isInteger(keep) || keep < 1) throw new RangeError(`keep must be a whole number >= 1, got ${keep}`);
  const removed: BackupFile[] = [];
  const warnings: string[] = [];
  for (const old of listBackups(databasePath, backupDir, now).slice(keep)) {
    try {
      unlinkSync(old.path);
      removed.push(old);
    } catch (error) {
      warnings.push(`could not delete old backup ${old.path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
    }
  }
  return { removed, warnings };
}

/** Creates the backup folder when missing; throws EPS_BACKUP_DIR naming it. Returns the outermost folder it created, if any. */
export function ensureBackupDir(backupDir: string): string | undefined {
  requireLocalPath(backupDir, 'database.backup_dir');
  let created: string | undefined;
  try {
    created = mkdirSync(backupDir, { recursive: true });
    if (!statSync(backupDir).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code ?? String(cause);
    const why = code === 'EEXIST' || code === 'ENOTDIR' ? 'a file is in the way' : code;
    throw new LocalDatabaseError('EPS_BACKUP_DIR', `Cannot create the backup folder ${backupDir} (${why})`, {
      hint: 'Set database.backup_dir in config.json to a folder epetsync can create and write.',
      details: { backupDir, errno: code },
      cause,
    });
  }
  return created;
}

/** Removes a file and the sidecars SQLite may have left beside it; missing files are fine. */
export function removeWithSidecars(path: string): void {
  for (const p of [path, ...SIDECAR_SUFFIXES.map((s) => `${path}${s}`)]) {
    try {
      unlinkSync(p);
    } catch {
      // Already gone.
    }
  }
}

/** Flushes a file to disk so that a rename after it never exposes a half-written copy. */
export function fsyncFile(path: string): void {
  const fd = openSync(path, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Reports what {@link verifyCopy} found in a copy epetsync made. */
export interface CopyCheck {
  integrity: IntegrityResult;
  pages: number;
  pageSize: number;
  journalMode: string;
}

/**
 * Runs integrity_check on a copy epetsync itself made. It is opened read-write on purpose: closing a
 * read-write connection removes the -wal/-shm files a WAL-mode copy needs while open, where a
 * read-only one would leave them behind. Nothing is written to the copy.
 */
export function verifyCopy(path: string, busyTimeoutMs = 5000, check: IntegrityCheckName = 'integrity_check'): CopyCheck {
  const db = new Database(path, { fileMustExist: true, timeout: busyTimeoutMs });
  try {
    return {
      integrity: check === 'integrity_check' ? integrityCheck(db) : quickCheck(db),
      pages: Number(db.pragma('page_count', { simple: true })),
      pageSize: Number(db.pragma('page_size', { simple: true })),
      journalMode: journalMode(db),
    };
  } finally {
    db.close();
  }
}

/**
 * Takes an online backup of the live database with SQLite's backup API into `<dir>/<prefix>-<stamp>.sqlite3`:
 * copy to a `.partial` name, integrity_check the copy, only then rename it into place, then rotate.
 * A copy that fails its check is deleted and an error raised; it never counts as a backup.
 */
export async function takeBackup(options: TakeBackupOptions): Promise<BackupResult> {
  const now = options.now ?? (() => new Date());
  const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  const started = performance.now();
  if (options.keep !== undefined && (!Number.isInteger(options.keep) || options.keep < 1)) {
    throw new RangeError(`keep must be a whole number >= 1, got ${options.keep}`);
  }
  const source = openDatabase(options.databasePath, { mode: 'read', busyTimeoutMs });
  let partial: string | undefined;
  let createdDir: string | undefined;
  try {
    const mode = journalMode(source);
    createdDir = ensureBackupDir(options.backupDir);
    let stamp = now();
    let finalPath = join(options.backupDir, backupFileName(options.databasePath, stamp));
    // Two backups in the same millisecond must not overwrite each other.
    while (existsSync(finalPath) || existsSync(`${finalPath}.partial`)) {
      stamp = new Date(stamp.getTime() + 1);
      finalPath = join(options.backupDir, backupFileName(options.databasePath, stamp));
    }
    partial = `${finalPath}.partial`;
    await copyOnline(source, partial, options.databasePath, busyTimeoutMs);
    let check: CopyCheck;
    try {
      check = verifyCopy(partial, busyTimeoutMs);
    } catch (error) {
      throw failedCopy(source, options.databasePath, partial, error instanceof Error ? error.message : String(error), error);
    }
    if (!check.integrity.ok) throw failedCopy(source, options.databasePath, partial, check.integrity.messages[0] ?? 'integrity_check failed');
    fsyncFile(partial);
    renameSync(partial, finalPath);
    partial = undefined;
    const pruned = options.keep === undefined ? { removed: [], warnings: [] } : pruneBackups(options.databasePath, options.backupDir, options.keep, now());
    const all = listBackups(options.databasePath, options.backupDir, now());
    const backup = all.find((b) => b.path === finalPath) ?? { file: basename(finalPath), path: finalPath, sizeBytes: statSync(finalPath).size, takenAt: stamp.toISOString(), ageSeconds: 0 };
    return {
      database: options.databasePath,
      backup,
      pages: check.pages,
      pageSize: check.pageSize,
      journalMode: mode,
      durationMs: Math.round(performance.now() - started),
      integrity: check.integrity,
      removed: pruned.removed,
      kept: all.length,
      warnings: pruned.warnings,
    };
  } catch (error) {
    if (partial !== undefined) removeWithSidecars(partial);
    if (createdDir !== undefined) removeCreatedDirs(options.backupDir, createdDir);
    throw asBackupError(error, options.databasePath, partial ?? options.backupDir, busyTimeoutMs);
  } finally {
    source.close();
  }
}

async function copyOnline(source: SqliteDatabase, partial: string, databasePath: string, busyTimeoutMs: number): Promise<void> {
  try {
    // Copy every remaining page in one step: one read transaction gives one consistent snapshot, and
    // a writer committing between small steps would restart the copy again and again.
    await source.backup(partial, { progress: () => 0x7fffffff });
  } catch (error) {
    const code = sqliteCode(error);
    if (code !== undefined && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED') || code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB')) {
      throw toLocalDatabaseError(error, databasePath, { busyTimeoutMs, action: 'back up' });
    }
    throw new LocalDatabaseError('EPS_BACKUP_FAILED', `Cannot write the backup ${partial}: ${error instanceof Error ? error.message : String(error)}`, {
      hint: 'Check that the backup folder is writable and the disk is not full.',
      details: { path: partial, sqlite: code ?? null },
      cause: error,
    });
  }
}

// File-system and SQLite failures become local database errors; anything else is a bug and stays as it is.
function asBackupError(error: unknown, databasePath: string, target: string, busyTimeoutMs: number): unknown {
  if (isEpetsyncError(error)) return error;
  if (sqliteCode(error) !== undefined) return toLocalDatabaseError(error, databasePath, { busyTimeoutMs, action: 'back up' });
  const code = error instanceof Error ? (error as NodeJS.ErrnoException).code : undefined;
  if (typeof code !== 'string') return error;
  return new LocalDatabaseError('EPS_BACKUP_FAILED', `Cannot write the backup ${target}: ${code}`, {
    hint: 'Check that the backup folder is writable and the disk is not full.',
    details: { path: target, errno: code },
    cause: error,
  });
}

function failedCopy(source: SqliteDatabase, databasePath: string, partial: string, reason: string, cause?: unknown): LocalDatabaseError {
  removeWithSidecars(partial);
  // The backup API copies pages as they are, so a damaged copy usually means a damaged original: say so.
  let sourceCheck: IntegrityResult | undefined;
  try {
    sourceCheck = quickCheck(source);
  } catch {
    sourceCheck = undefined;
  }
  if (sourceCheck !== undefined && !sourceCheck.ok) {
    return new LocalDatabaseError('EPS_DB_CORRUPT', `Database ${databasePath} is corrupt (${sourceCheck.messages[0]?.replace(/\s+/g, ' ') ?? 'quick_check failed'}); no backup was kept`, {
      hint: 'Restore the newest good backup with "epetsync restore --latest" (the damaged file is kept beside it).',
      details: { path: databasePath, problems: sourceCheck.messages, tables: sourceCheck.tables },
      cause,
    });
  }
  return new LocalDatabaseError('EPS_BACKUP_FAILED', `The backup copy ${partial} failed its integrity check (${reason.replace(/\s+/g, ' ')}) and was deleted`, {
    hint: 'Run "epetsync backup" again; if it keeps failing, check the disk holding the backup folder.',
    details: { path: partial },
    cause: isEpetsyncError(cause) ? undefined : cause,
  });
}

// A failed first backup leaves no empty folders behind: remove what ensureBackupDir created, innermost first.
function removeCreatedDirs(backupDir: string, outermost: string): void {
  for (let dir = resolve(backupDir); ; dir = dirname(dir)) {
    try {
      rmdirSync(dir);
    } catch {
      return;
    }
    if (dir === resolve(outermost) || dir === dirname(dir)) return;
  }
}
