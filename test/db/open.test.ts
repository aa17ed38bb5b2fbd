import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { inspectDatabaseFile, journalMode, openDatabase } from '../../src/db/index.js';
import { failure, hashTree, makeClinicDb, tempDir } from './fixtures.js';


describe('db/open', () => {
  it('reports a missing file and never creates one', () => {
    const dir = tempDir();
    const path = join(dir, 'db.sqlite3');
    const error = failure(() => openDatabase(path));
    expect(error.code).toBe('EPS_DB_NOT_FOUND');
    expect(error.message).toBe(`Database file ${path} does not exist`);
    expect(error.hint).toBe('Check database.path in config.json (or EPETSYNC_DB); epetsync never creates an empty database in its place.');
    expect(error.exitCode).toBe(5);
    expect(hashTree(dir)).toEqual({});
  });

  it('reports a directory where the file should be', () => {
    const dir = tempDir();
    const path = join(dir, 'db.sqlite3');
    mkdirSync(path);
    const error = failure(() => openDatabase(path));
    expect(error.code).toBe('EPS_DB_NOT_A_FILE');
    expect(error.message).toBe(`Database path ${path} is a directory, not an SQLite file`);
  });

  it('reports a file that is not SQLite, but accepts an empty one', () => {
    const dir = tempDir();
    const path = join(dir, 'db.sqlite3');
    writeFileSync(path, 'name,species\nRex,dog\n');
    const error = failure(() => openDatabase(path));
    expect(error.code).toBe('EPS_DB_NOT_SQLITE');
    expect(error.message).toBe(`Database file ${path} is not an SQLite database (its first bytes are not "SQLite format 3")`);
    writeFileSync(path, 'SQLite');
    expect(failure(() => openDatabase(path)).code).toBe('EPS_DB_NOT_SQLITE');
    writeFileSync(path, '');
    const db = openDatabase(path);
    expect(db.prepare('SELECT count(*) FROM sqlite_schema').pluck().get()).toBe(0);
    db.close();
    expect(readFileSync(path).length).toBe(0);
  });

  it('reports a damaged schema page as corrupt', () => {
    const dir = tempDir();
    const path = makeClinicDb(join(dir, 'db.sqlite3'));
    const buf = readFileSync(path);
    // Keep the 100-byte file header, wreck the rest of page 1 (the schema table).
    buf.fill(0x5a, 100, 4096);
    writeFileSync(path, buf);
    const error = failure(() => openDatabase(path));
    expect(error.code).toBe('EPS_DB_CORRUPT');
    expect(error.message).toMatch(new RegExp(`^Database ${path.replace(/[.]/g, '\\.')} is corrupt: `));
    expect(error.hint).toBe('Restore the newest good backup with "epetsync restore --latest" (the damaged file is kept beside it).');
  });

  it('reports a lock held past the busy timeout', () => {
    const dir = tempDir();
    const path = makeClinicDb(join(dir, 'db.sqlite3'), { owners: 2 });
    const holder = new Database(path);
    holder.exec('BEGIN EXCLUSIVE');
    try {
      const error = failure(() => openDatabase(path, { busyTimeoutMs: 50 }));
      expect(error.code).toBe('EPS_DB_BUSY');
      expect(error.message).toBe(`Database ${path} is locked by another process (waited 50 ms)`);
      expect(error.hint).toBe('Wait for the Vet Portal app to finish writing, or raise database.busy_timeout_ms in config.json.');
    } finally {
      holder.exec('ROLLBACK');
      holder.close();
    }
  });

  it('names a Windows path as such on other systems', () => {
    const error = failure(() => inspectDatabaseFile('C:\\epetcare\\db.sqlite3'));
    expect(error.code).toBe(process.platform === 'win32' ? 'EPS_DB_NOT_FOUND' : 'EPS_CONFIG_WINDOWS_PATH');
  });

  it('reads the journal mode without changing it', () => {
    const dir = tempDir();
    const wal = makeClinicDb(join(dir, 'wal.sqlite3'), { owners: 2, journalMode: 'wal' });
    const plain = makeClinicDb(join(dir, 'plain.sqlite3'), { owners: 2 });
    for (const [path, mode] of [[wal, 'wal'], [plain, 'delete']] as const) {
      const db = openDatabase(path, { mode: 'write' });
      expect(journalMode(db)).toBe(mode);
      db.close();
      const again = new Database(path, { readonly: true });
      expect(again.pragma('journal_mode', { simple: true })).toBe(mode);
      again.close();
    }
  });

  it('rolls back a transaction a killed writer left in a hot journal, then opens read-only', () => {
    // Found by the crash chaos test: migrate SIGKILLed mid-write, and every later read-only open failed with SQLITE_READONLY_ROLLBACK.
    const dir = tempDir();
    const path = join(dir, 'db.sqlite3');
    const setup = new Database(path);
    setup.exec(`CREATE TABLE t (id integer PRIMARY KEY, v blob); INSERT INTO t (v) VALUES (x'01')`);
    setup.close();
    const killed = spawnSync('python3', ['-c', `
import os, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA cache_size = 10")
con.execute("BEGIN")
con.executemany("INSERT INTO t (v) VALUES (randomblob(4000))", [()] * 500)
os.kill(os.getpid(), 9)
`, path]);
    expect(killed.signal).toBe('SIGKILL');
    expect(readFileSync(`${path}-journal`).length).toBeGreaterThan(0);
    const db = openDatabase(path);
    try {
      expect(db.readonly).toBe(true);
      expect(db.prepare('SELECT count(*) AS n FROM t').get()).toEqual({ n: 1 });
    } finally {
      db.close();
    }
  });

  it('opens read-only for checks', () => {
    const dir = tempDir();
    const path = makeClinicDb(join(dir, 'db.sqlite3'), { owners: 2 });
    const db = openDatabase(path);
    expect(db.readonly).toBe(true);
    expect(() => db.exec('DELETE FROM clinic_appointment')).toThrow(/readonly/);
    db.close();
  });
});
