import { createHash } from 'node:crypto';
import { closeSync, constants, copyFileSync, existsSync, fsyncSync, openSync, readSync, renameSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { requireLocalPath } from '../config/index.js';
import { LocalDatabaseError, isEpetsyncError } from '../errors.js';
import { formatStamp, fsyncFile, listBackups, removeWithSidecars, verifyCopy, type BackupFile } from './backup.js';
import type { IntegrityResult } from './checks.js';
import { SIDECAR_SUFFIXES, inspectDatabaseFile } from './file.js';
import { isCorruptionError, sqliteCode, toLocalDatabaseError } from './open.js';

/** Describes which backup to restore. */
export interface FindBackupOptions {
  databasePath: string;
  backupDir: string;
  /** A backup file named on the command line, absolute or relative to `cwd`. */
  file?: string | undefined;
  /** Pick the newest backup of this database in `backupDir`. */
  latest?: boolean | undefined;
  cwd: string;
}

/** Describes how {@link restoreDatabase} runs. */
export interface RestoreOptions {
  /** The live database (`database.path`) to replace; it need not exist. */
  databasePath: string;
  /** The backup file to put in its place. */
  backupPath: string;
  busyTimeoutMs?: number;
  /** Clock, for tests. */
  now?: () => Date;
}

/** Names one file moved out of the way by a restore. */
export interface ReplacedFile {
  from: string;
  to: string;
}

/** Reports a finished restore. */
export interface RestoreResult {
  database: string;
  /** The backup that was restored. */
  restoredFrom: string;
  sizeBytes: number;
  /** SHA-256 of the restored file, equal to the backup's. */
  sha256: string;
  /** Journal mode recorded in the restored file. */
  journalMode: string;
  /** integrity_check of the copy before it was moved into place. */
  integrity: IntegrityResult;
  /** The previous database and its -wal/-shm/-journal, moved aside (never deleted). */
  replaced: ReplacedFile[];
  durationMs: number;
}

/** Returns the absolute path of the backup to restore (named file or the newest); throws EPS_BACKUP_NOT_FOUND. */
export function findBackup(options: FindBackupOptions): string {
  if (options.file !== undefined) {
    const path = resolve(options.cwd, options.file);
    let isFile = false;
    try {
      isFile = statSync(path).isFile();
    } catch {
      throw new LocalDatabaseError('EPS_BACKUP_NOT_FOUND', `Backup file ${path} does not exist`, {
        hint: `Name an existing backup (they are in ${options.backupDir}) or use --latest.`,
        details: { path },
      });
    }
    if (!isFile) {
      throw new LocalDatabaseError('EPS_BACKUP_NOT_FOUND', `Backup path ${path} is not a file`, {
        hint: `Name one backup file (they are in ${options.backupDir}) or use --latest.`,
        details: { path },
      });
    }
    return path;
  }
  const newest: BackupFile | undefined = listBackups(options.databasePath, options.backupDir)[0];
  if (newest === undefined) {
    throw new LocalDatabaseError('EPS_BACKUP_NOT_FOUND', `No backup of ${options.databasePath} found in ${options.backupDir}`, {
      hint: 'Take one with "epetsync backup", or name a backup file to restore.',
      details: { backupDir: options.backupDir },
    });
  }
  return newest.path;
}

/** Returns the SHA-256 of a file as hex, reading it in chunks (clinic databases can be large). */
export function sha256File(path: string): string {
  const hash = createHash('sha256');
  const buf = Buffer.alloc(1 << 20);
  const fd = openSync(path, 'r');
  try {
    for (let n = readSync(fd, buf); n > 0; n = readSync(fd, buf)) hash.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

/**
 * Replaces the live database with a backup: copies the backup to a temp file beside the database and
 * integrity-checks that copy (a bad backup changes nothing), moves the current file and its
 * -wal/-shm/-journal aside to `<name>.replaced-<stamp>`, renames the copy into place and checks it
 * is byte-identical to the backup. The backup itself is only read.
 */
export function restoreDatabase(options: RestoreOptions): RestoreResult {
  const now = options.now ?? (() => new Date());
  const started = performance.now();
  const target = requireLocalPath(options.databasePath, 'database.path');
  checkRestoreTarget(target);
  inspectDatabaseFile(options.backupPath, { noun: 'Backup' });
  const stamp = formatStamp(now());
  const temp = `${target}.restoring-${stamp}`;
  const backupHash = sha256File(options.backupPath);

  try {
    copyFileSync(options.backupPath, temp, constants.COPYFILE_EXCL);
    fsyncFile(temp);
  } catch (cause) {
    removeWithSidecars(temp);
    throw new LocalDatabaseError('EPS_DB_OPEN_FAILED', `Cannot copy the backup into ${dirname(target)}: ${(cause as NodeJS.ErrnoException).code ?? String(cause)}`, {
      hint: 'Check that the database folder is writable and the disk is not full.',
      details: { path: temp },
      cause,
    });
  }

  let check;
  try {
    check = verifyCopy(temp, options.busyTimeoutMs);
  } catch (error) {
    removeWithSidecars(temp);
    if (isCorruptionError(error)) throw corruptBackup(options.backupPath, (error as Error).message, error);
    throw sqliteCode(error) === undefined ? error : toLocalDatabaseError(error, options.backupPath, { noun: 'Backup', action: 'check' });
  }
  if (!check.integrity.ok) {
    removeWithSidecars(temp);
    throw corruptBackup(options.backupPath, check.integrity.messages[0] ?? 'integrity_check failed');
  }
  if (sha256File(temp) !== backupHash) {
    removeWithSidecars(temp);
    throw new LocalDatabaseError('EPS_BACKUP_FAILED', `The copy of ${options.backupPath} does not match the backup; nothing was changed`, {
      hint: 'Check the disk holding the database folder, then run the restore again.',
      details: { path: options.backupPath },
    });
  }

  const replaced: ReplacedFile[] = [];
  try {
    for (const path of [target, ...SIDECAR_SUFFIXES.map((s) => `${target}${s}`)]) {
      if (!existsSync(path)) continue;
      const to = `${path}.replaced-${stamp}`;
      renameSync(path, to);
      replaced.push({ from: path, to });
    }
    renameSync(temp, target);
    syncDir(dirname(target));
  } catch (cause) {
    // Put back what was moved so a failed restore leaves the live files as they were.
    const stranded: ReplacedFile[] = [];
    for (const r of [...replaced].reverse()) {
      try {
        renameSync(r.to, r.from);
      } catch {
        stranded.push(r);
      }
    }
    removeWithSidecars(temp);
    const code = (cause as NodeJS.ErrnoException).code ?? String(cause);
    const outcome = stranded.length === 0 ? 'nothing was changed' : `these files are still under their new names: ${stranded.map((r) => r.to).join(', ')}`;
    throw new LocalDatabaseError('EPS_DB_OPEN_FAILED', `Cannot move ${target} aside to restore the backup (${code}); ${outcome}`, {
      hint: 'Close the Vet Portal app (it keeps the file open) and run the restore again.',
      details: { path: target, errno: code, stranded },
      cause,
    });
  }

  const restoredHash = sha256File(target);
  if (restoredHash !== backupHash) {
    throw new LocalDatabaseError('EPS_BACKUP_FAILED', `The restored ${target} does not match the backup ${options.backupPath}`, {
      hint: `The previous files are kept as ${replaced.map((r) => r.to).join(', ') || '(none)'}; check the disk and run the restore again.`,
      details: { path: target, replaced },
    });
  }
  return {
    database: target,
    restoredFrom: options.backupPath,
    sizeBytes: statSync(target).size,
    sha256: restoredHash,
    journalMode: check.journalMode,
    integrity: check.integrity,
    replaced,
    durationMs: Math.round(performance.now() - started),
  };
}

/** Checks that `target` can be replaced: a regular file or nothing, in an existing folder; throws EPS_DB_NOT_A_FILE or EPS_DB_NOT_FOUND. */
export function checkRestoreTarget(target: string): void {
  let stats;
  try {
    stats = statSync(target);
  } catch {
    stats = undefined;
  }
  if (stats !== undefined && !stats.isFile()) {
    throw new LocalDatabaseError('EPS_DB_NOT_A_FILE', `Database path ${target} is ${stats.isDirectory() ? 'a directory' : 'not a regular file'}, not an SQLite file`, {
      hint: 'Check database.path in config.json (or EPETSYNC_DB): it must name the .sqlite3 file itself, not its folder.',
      details: { path: target },
    });
  }
  if (stats === undefined && !existsSync(dirname(target))) {
    throw new LocalDatabaseError('EPS_DB_NOT_FOUND', `The folder of the database ${target} does not exist`, {
      hint: 'Check database.path in config.json (or EPETSYNC_DB), or create the folder first.',
      details: { path: target },
    });
  }
}

function corruptBackup(backupPath: string, reason: string, cause?: unknown): LocalDatabaseError {
  return new LocalDatabaseError('EPS_DB_CORRUPT', `Backup ${backupPath} is corrupt (${reason.replace(/\s+/g, ' ')}); nothing was changed`, {
    hint: 'Restore an older backup instead: name its file, e.g. "epetsync restore <file> --yes".',
    details: { path: backupPath },
    cause: isEpetsyncError(cause) ? undefined : cause,
  });
}

function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Directories cannot be opened for fsync on Windows; the rename is still atomic there.
  }
}
