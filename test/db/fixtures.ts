import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import Database from 'better-sqlite3';
import { expect } from 'vitest';
import { EpetsyncError } from '../../src/errors.js';

/** Returns a fresh temp folder (`eps-…`). */
export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'eps-'));
}

/** Describes the clinic database {@link makeClinicDb} builds. */
export interface ClinicDbOptions {
  /** Number of owners (each with one pet and one appointment). */
  owners?: number;
  journalMode?: 'delete' | 'wal';
  /** A small deterministic generator seed for names. */
  seed?: number;
}

/** Builds a Vet Portal–like SQLite file (owners, pets, appointments with FKs, AUTOINCREMENT) and returns its path. */
export function makeClinicDb(path: string, options: ClinicDbOptions = {}): string {
  const owners = options.owners ?? 50;
  let state = options.seed ?? 7;
  const next = (): number => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state;
  };
  const db = new Database(path);
  try {
    if (options.journalMode === 'wal') db.pragma('journal_mode = wal');
    db.exec(`
      CREATE TABLE clinic_owner (id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR(100) NOT NULL, email VARCHAR(254) UNIQUE);
      CREATE TABLE clinic_pet (id INTEGER PRIMARY KEY AUTOINCREMENT, owner_id INTEGER NOT NULL REFERENCES clinic_owner(id), name TEXT NOT NULL, notes TEXT);
      CREATE TABLE clinic_appointment (id INTEGER PRIMARY KEY AUTOINCREMENT, pet_id INTEGER NOT NULL REFERENCES clinic_pet(id), at DATETIME NOT NULL);
      CREATE INDEX clinic_pet_owner ON clinic_pet(owner_id);
    `);
    const owner = db.prepare('INSERT INTO clinic_owner (name, email) VALUES (?, ?)');
    const pet = db.prepare('INSERT INTO clinic_pet (owner_id, name, notes) VALUES (?, ?, ?)');
    const appointment = db.prepare('INSERT INTO clinic_appointment (pet_id, at) VALUES (?, ?)');
    db.transaction(() => {
      for (let i = 1; i <= owners; i += 1) {
        const id = Number(owner.run(`Owner ${i} ${next() % 1000}`, `owner${i}@example.com`).lastInsertRowid);
        const petId = Number(pet.run(id, `Pet ${next() % 1000}`, 'x'.repeat(200 + (next() % 200))).lastInsertRowid);
        appointment.run(petId, `2026-11-${String(1 + (i % 28)).padStart(2, '0')} 10:00:00`);
      }
    })();
  } finally {
    db.close();
  }
  return path;
}

/**
 * Overwrites the root page of one table with garbage, after checkpointing the WAL into the file,
 * so that the next read of that table (and only a read that reaches it) finds the file malformed.
 * Returns the byte range of the damaged page.
 */
export function corruptTablePage(path: string, table: string): { start: number; end: number } {
  const db = new Database(path);
  let root: number;
  let pageSize: number;
  try {
    db.pragma('wal_checkpoint(TRUNCATE)');
    root = Number(db.prepare('SELECT rootpage FROM sqlite_master WHERE name = ?').pluck().get(table));
    pageSize = Number(db.pragma('page_size', { simple: true }));
  } finally {
    db.close();
  }
  if (!(root > 1)) throw new Error(`${path} has no table ${table} to corrupt`);
  const buf = readFileSync(path);
  for (let i = 0; i < pageSize; i += 1) buf[(root - 1) * pageSize + i] = (i * 31 + 0xa5) & 0xff;
  writeFileSync(path, buf);
  return { start: (root - 1) * pageSize, end: root * pageSize };
}

/** Overwrites `count` pages in the middle of an SQLite file with garbage (page 1, the header, is left intact). */
export function corruptPages(path: string, count = 3, pageSize = 4096): void {
  const buf = readFileSync(path);
  const pages = Math.floor(buf.length / pageSize);
  if (pages < count + 2) throw new Error(`${path} has only ${pages} pages; make the fixture larger`);
  const first = Math.max(1, Math.floor(pages / 2) - Math.floor(count / 2));
  for (let p = first; p < first + count; p += 1) {
    for (let i = 0; i < pageSize; i += 1) buf[p * pageSize + i] = (i * 31 + p * 7 + 0xa5) & 0xff;
  }
  writeFileSync(path, buf);
}

/** Returns every file and folder under `dir` with the SHA-256 of each file, to prove nothing was altered. */
export function hashTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const full = join(d, name);
      const rel = relative(dir, full);
      if (statSync(full).isDirectory()) {
        out[`${rel}/`] = 'dir';
        walk(full);
      } else {
        out[rel] = createHash('sha256').update(readFileSync(full)).digest('hex');
      }
    }
  };
  walk(dir);
  return out;
}

/** Returns the SHA-256 of one file. */
export function hashFile(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Describes a clinic folder for CLI tests: config.json, db.sqlite3 and a log folder outside it. */
export interface ClinicFolder {
  root: string;
  /** The folder holding config.json and the database (hashed by the tests). */
  dir: string;
  config: string;
  db: string;
  backupDir: string;
  logFile: string;
}

/** Creates `<tmp>/clinic/config.json` pointing at `db.sqlite3` and `backups/`, logging outside the clinic folder. */
export function makeClinicFolder(database: Record<string, unknown> = {}): ClinicFolder {
  const root = tempDir();
  const dir = join(root, 'clinic');
  mkdirSync(dir);
  const logFile = join(root, 'logs', 'epetsync.log');
  const config = join(dir, 'config.json');
  writeFileSync(config, `${JSON.stringify({ database: { path: 'db.sqlite3', backup_dir: 'backups', ...database }, logging: { file: logFile } }, null, 2)}\n`);
  return { root, dir, config, db: join(dir, 'db.sqlite3'), backupDir: join(dir, 'backups'), logFile };
}

/** Returns the lines of a CLI run's stderr (without the final newline), for exact `Error:`/`Try:` assertions. */
export function errorLines(stderr: string): string[] {
  expect(stderr.endsWith('\n')).toBe(true);
  return stderr.slice(0, -1).split('\n');
}

/** Returns the EpetsyncError `fn` throws; fails the test when it throws nothing or something else. */
export function failure(fn: () => unknown): EpetsyncError {
  try {
    fn();
  } catch (error) {
    if (error instanceof EpetsyncError) return error;
    throw error;
  }
  throw new Error('expected an EpetsyncError');
}

