import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { requireLocalPath } from '../config/index.js';
import { LocalDatabaseError } from '../errors.js';

/** Holds the 16-byte magic string every SQLite 3 database file starts with. */
export const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1');

/** Lists the files SQLite keeps beside a database: write-ahead log, shared memory, rollback journal. */
export const SIDECAR_SUFFIXES = ['-wal', '-shm', '-journal'] as const;

/** Describes a database file that passed the pre-open checks. */
export interface DatabaseFileInfo {
  path: string;
  /** Size of the main file in bytes. */
  sizeBytes: number;
  /** Size of the `-wal` file in bytes (0 when there is none). */
  walBytes: number;
  /** True when the file is empty (SQLite treats it as a database with no tables). */
  empty: boolean;
}

/** Describes which thing is checked, so messages and hints name it the way the user knows it. */
export interface FileRole {
  /** What the file is called in messages, e.g. `Database` or `Backup`. */
  noun: string;
  /** The config key that names it, when there is one (e.g. `database.path`). */
  key?: string | undefined;
}

const DATABASE_ROLE: FileRole = { noun: 'Database', key: 'database.path' };

/** Returns the size of `path` in bytes, or 0 when it does not exist. */
export function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/**
 * Checks that `path` is a regular file holding an SQLite database (or empty) before anything opens it;
 * throws EPS_DB_NOT_FOUND, EPS_DB_NOT_A_FILE, EPS_DB_NOT_SQLITE or EPS_DB_OPEN_FAILED naming the file.
 */
export function inspectDatabaseFile(path: string, role: FileRole = DATABASE_ROLE): DatabaseFileInfo {
  if (role.key !== undefined) requireLocalPath(path, role.key);
  const fix = role.key === undefined ? 'Check the path' : `Check ${role.key} in config.json (or EPETSYNC_DB)`;
  let stats;
  try {
    stats = statSync(path);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new LocalDatabaseError('EPS_DB_NOT_FOUND', `${role.noun} file ${path} does not exist`, {
        hint: `${fix}; epetsync never creates an empty database in its place.`,
        details: { path },
        cause,
      });
    }
    throw new LocalDatabaseError('EPS_DB_OPEN_FAILED', `Cannot read ${role.noun.toLowerCase()} file ${path}: ${code ?? String(cause)}`, {
      hint: 'Check the permissions of the file and its folder.',
      details: { path, errno: code },
      cause,
    });
  }
  if (!stats.isFile()) {
    const kind = stats.isDirectory() ? 'a directory' : 'not a regular file';
    throw new LocalDatabaseError('EPS_DB_NOT_A_FILE', `${role.noun} path ${path} is ${kind}, not an SQLite file`, {
      hint: `${fix}: it must name the .sqlite3 file itself, not its folder.`,
      details: { path },
    });
  }
  if (stats.size > 0) {
    const head = readHead(path, role);
    if (head.length < SQLITE_HEADER.length || !head.equals(SQLITE_HEADER)) {
      throw new LocalDatabaseError('EPS_DB_NOT_SQLITE', `${role.noun} file ${path} is not an SQLite database (its first bytes are not "SQLite format 3")`, {
        hint: `${fix}: it points at a file of another kind.`,
        details: { path },
      });
    }
  }
  return { path, sizeBytes: stats.size, walBytes: fileSize(`${path}-wal`), empty: stats.size === 0 };
}

function readHead(path: string, role: FileRole): Buffer {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const buf = Buffer.alloc(SQLITE_HEADER.length);
    const n = readSync(fd, buf, 0, buf.length, 0);
    return buf.subarray(0, n);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    throw new LocalDatabaseError('EPS_DB_OPEN_FAILED', `Cannot read ${role.noun.toLowerCase()} file ${path}: ${code ?? String(cause)}`, {
      hint: 'Check the permissions of the file; epetsync needs to read it.',
      details: { path, errno: code },
      cause,
    });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
