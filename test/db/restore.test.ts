import { copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { findBackup, restoreDatabase, takeBackup } from '../../src/db/index.js';
import { corruptPages, failure, hashFile, hashTree, makeClinicDb, tempDir } from './fixtures.js';


/** Leaves `path` as a crashed WAL-mode app would: committed rows still only in -wal, and a -shm. */
function crashedWalDb(dir: string, path: string): void {
  const scratch = join(dir, 'scratch');
  mkdirSync(scratch);
  const live = makeClinicDb(join(scratch, 'live.sqlite3'), { owners: 20, journalMode: 'wal', seed: 99 });
  const db = new Database(live);
  db.pragma('wal_autocheckpoint = 0');
  db.exec("INSERT INTO clinic_owner (name, email) VALUES ('Only In Wal', 'wal@example.com')");
  // Copy while the connection is open: closing would checkpoint the WAL into the file and delete it.
  copyFileSync(live, path);
  copyFileSync(`${live}-wal`, `${path}-wal`);
  copyFileSync(`${live}-shm`, `${path}-shm`);
  db.close();
}

describe('db/restore', () => {
  it('moves the current file, -wal and -shm aside intact and puts a copy identical to the backup in place', async () => {
    const dir = tempDir();
    const db = join(dir, 'db.sqlite3');
    const backupDir = join(dir, 'backups');
    makeClinicDb(db, { owners: 10 });
    const { backup } = await takeBackup({ databasePath: db, backupDir });
    const backupHash = hashFile(backup.path);
    // The database moves on after the backup, then the app crashes in WAL mode.
    crashedWalDb(dir, db);
    const before = { db: hashFile(db), wal: hashFile(`${db}-wal`), shm: hashFile(`${db}-shm`) };

    const result = restoreDatabase({ databasePath: db, backupPath: backup.path, now: () => new Date('2026-11-25T10:20:00.000Z') });

    expect(result.replaced).toEqual([
      { from: db, to: `${db}.replaced-20261125T102000000Z` },
      { from: `${db}-wal`, to: `${db}-wal.replaced-20261125T102000000Z` },
      { from: `${db}-shm`, to: `${db}-shm.replaced-20261125T102000000Z` },
    ]);
    expect(hashFile(`${db}.replaced-20261125T102000000Z`)).toBe(before.db);
    expect(hashFile(`${db}-wal.replaced-20261125T102000000Z`)).toBe(before.wal);
    expect(hashFile(`${db}-shm.replaced-20261125T102000000Z`)).toBe(before.shm);
    expect(hashFile(db)).toBe(backupHash);
    expect(result.sha256).toBe(backupHash);
    expect(hashFile(backup.path)).toBe(backupHash);
    expect(existsSync(`${db}-wal`)).toBe(false);
    expect(readdirSync(dir).filter((f) => f.includes('.restoring-'))).toEqual([]);

    // The replaced set still holds the row that only lived in its WAL.
    const rescue = join(dir, 'rescue');
    mkdirSync(rescue);
    for (const [from, to] of [['', ''], ['-wal', '-wal'], ['-shm', '-shm']]) copyFileSync(`${db}${from}.replaced-20261125T102000000Z`, join(rescue, `old.sqlite3${to}`));
    const old = new Database(join(rescue, 'old.sqlite3'), { readonly: true });
    expect(old.prepare("SELECT count(*) FROM clinic_owner WHERE email = 'wal@example.com'").pluck().get()).toBe(1);
    old.close();
    const restored = new Database(db, { readonly: true });
    expect(restored.prepare('SELECT count(*) FROM clinic_owner').pluck().get()).toBe(10);
    restored.close();
  });

  it('restores a WAL-mode backup byte for byte, leaving no -wal/-shm of its own', async () => {
    const dir = tempDir();
    const db = makeClinicDb(join(dir, 'db.sqlite3'), { owners: 10, journalMode: 'wal' });
    const { backup } = await takeBackup({ databasePath: db, backupDir: join(dir, 'backups') });
    const result = restoreDatabase({ databasePath: db, backupPath: backup.path });
    expect(result.journalMode).toBe('wal');
    expect(hashFile(db)).toBe(hashFile(backup.path));
    // The read-only backup connection left the live file's empty -wal/-shm; they were moved aside with it.
    expect(readdirSync(dir).filter((f) => f.startsWith('db.sqlite3')).sort()).toEqual(['db.sqlite3', ...result.replaced.map((r) => r.to.slice(dir.length + 1))].sort());
    expect(existsSync(`${db}-wal`)).toBe(false);
    expect(readdirSync(join(dir, 'backups'))).toEqual([backup.file]);
  });

  it('puts the live files back when one of them cannot be moved aside', async () => {
    const dir = tempDir();
    const db = makeClinicDb(join(dir, 'db.sqlite3'), { owners: 5 });
    const { backup } = await takeBackup({ databasePath: db, backupDir: join(dir, 'backups') });
    writeFileSync(`${db}-wal`, '');
    // A non-empty folder squatting on the -wal's new name makes that one rename fail half-way.
    mkdirSync(join(dir, 'db.sqlite3-wal.replaced-20261125T103000000Z'));
    writeFileSync(join(dir, 'db.sqlite3-wal.replaced-20261125T103000000Z', 'x'), 'x');
    const before = hashTree(dir);
    const error = failure(() => restoreDatabase({ databasePath: db, backupPath: backup.path, now: () => new Date('2026-11-25T10:30:00.000Z') }));
    expect(error.code).toBe('EPS_DB_OPEN_FAILED');
    expect(error.message).toMatch(new RegExp(`^Cannot move ${db.replace(/\./g, '\\.')} aside to restore the backup \\(E[A-Z]+\\); nothing was changed$`));
    expect(error.hint).toBe('Close the Vet Portal app (it keeps the file open) and run the restore again.');
    expect(hashTree(dir)).toEqual(before);
  });

  it('refuses a corrupt backup and changes nothing', async () => {
    const dir = tempDir();
    const db = makeClinicDb(join(dir, 'db.sqlite3'), { owners: 300 });
    const { backup } = await takeBackup({ databasePath: db, backupDir: join(dir, 'backups') });
    corruptPages(backup.path, 3);
    const before = hashTree(dir);
    const error = failure(() => restoreDatabase({ databasePath: db, backupPath: backup.path }));
    expect(error.code).toBe('EPS_DB_CORRUPT');
    expect(error.message).toMatch(new RegExp(`^Backup ${backup.path.replace(/\./g, '\\.')} is corrupt \\(.+\\); nothing was changed$`));
    expect(error.hint).toBe('Restore an older backup instead: name its file, e.g. "epetsync restore <file> --yes".');
    expect(hashTree(dir)).toEqual(before);
  });

  it('restores onto a missing database with nothing to move aside', async () => {
    const dir = tempDir();
    const source = makeClinicDb(join(dir, 'old.sqlite3'), { owners: 3 });
    const { backup } = await takeBackup({ databasePath: source, backupDir: join(dir, 'backups') });
    const target = join(dir, 'db.sqlite3');
    const result = restoreDatabase({ databasePath: target, backupPath: backup.path });
    expect(result.replaced).toEqual([]);
    expect(hashFile(target)).toBe(hashFile(backup.path));
  });

  it('refuses a directory at the database path and a backup that is not SQLite', async () => {
    const dir = tempDir();
    const source = makeClinicDb(join(dir, 'old.sqlite3'), { owners: 3 });
    const { backup } = await takeBackup({ databasePath: source, backupDir: join(dir, 'backups') });
    mkdirSync(join(dir, 'db.sqlite3'));
    expect(failure(() => restoreDatabase({ databasePath: join(dir, 'db.sqlite3'), backupPath: backup.path })).code).toBe('EPS_DB_NOT_A_FILE');
    writeFileSync(join(dir, 'fake.sqlite3'), 'not a database at all');
    const error = failure(() => restoreDatabase({ databasePath: source, backupPath: join(dir, 'fake.sqlite3') }));
    expect(error.code).toBe('EPS_DB_NOT_SQLITE');
    expect(error.message).toBe(`Backup file ${join(dir, 'fake.sqlite3')} is not an SQLite database (its first bytes are not "SQLite format 3")`);
  });

  it('finds the newest backup, a named one relative to the cwd, or says there is none', async () => {
    const dir = tempDir();
    const db = makeClinicDb(join(dir, 'db.sqlite3'), { owners: 3 });
    const backupDir = join(dir, 'backups');
    const none = failure(() => findBackup({ databasePath: db, backupDir, latest: true, cwd: dir }));
    expect(none.code).toBe('EPS_BACKUP_NOT_FOUND');
    expect(none.message).toBe(`No backup of ${db} found in ${backupDir}`);
    const a = await takeBackup({ databasePath: db, backupDir, now: () => new Date('2026-11-25T10:00:00.000Z') });
    const b = await takeBackup({ databasePath: db, backupDir, now: () => new Date('2026-11-25T11:00:00.000Z') });
    expect(findBackup({ databasePath: db, backupDir, latest: true, cwd: dir })).toBe(b.backup.path);
    expect(findBackup({ databasePath: db, backupDir, file: relative(dir, a.backup.path), cwd: dir })).toBe(a.backup.path);
    expect(findBackup({ databasePath: db, backupDir, file: a.backup.path, cwd: '/' })).toBe(a.backup.path);
    const missing = failure(() => findBackup({ databasePath: db, backupDir, file: 'backups/nope.sqlite3', cwd: dir }));
    expect(missing.code).toBe('EPS_BACKUP_NOT_FOUND');
    expect(missing.message).toBe(`Backup file ${join(dir, 'backups', 'nope.sqlite3')} does not exist`);
  });
});
