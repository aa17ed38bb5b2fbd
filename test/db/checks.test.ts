import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { foreignKeyCheck, integrityCheck, openDatabase, quickCheck } from '../../src/db/index.js';
import { corruptPages, makeClinicDb, tempDir } from './fixtures.js';

describe('db/checks', () => {
  it('passes a healthy database', () => {
    const path = makeClinicDb(join(tempDir(), 'db.sqlite3'), { owners: 300 });
    const db = openDatabase(path);
    expect(quickCheck(db)).toEqual({ check: 'quick_check', ok: true, messages: [], tables: [], truncated: false });
    expect(integrityCheck(db)).toEqual({ check: 'integrity_check', ok: true, messages: [], tables: [], truncated: false });
    expect(foreignKeyCheck(db)).toEqual({ ok: true, count: 0, byTable: {}, violations: [] });
    db.close();
  });

  it('detects a copy with garbage pages in the middle, with both checks, and names the table', () => {
    const dir = tempDir();
    const good = makeClinicDb(join(dir, 'db.sqlite3'), { owners: 300 });
    const bad = join(dir, 'copy.sqlite3');
    copyFileSync(good, bad);
    corruptPages(bad, 3);
    const db = openDatabase(bad);
    const quick = quickCheck(db);
    expect(quick.ok).toBe(false);
    expect(quick.messages.length).toBeGreaterThan(0);
    expect(quick.tables.length).toBeGreaterThan(0);
    for (const t of quick.tables) expect(['clinic_owner', 'clinic_pet', 'clinic_appointment']).toContain(t);
    const full = integrityCheck(db);
    expect(full.ok).toBe(false);
    expect(full.check).toBe('integrity_check');
    expect(full.messages.join('\n')).toMatch(/malformed|Tree \d+ page \d+|wrong # of entries/);
    db.close();
  });

  it('lists rows whose parent is missing, per table', () => {
    const path = makeClinicDb(join(tempDir(), 'db.sqlite3'), { owners: 5 });
    const raw = new Database(path);
    raw.pragma('foreign_keys = OFF');
    raw.exec('DELETE FROM clinic_owner WHERE id IN (2, 3)');
    raw.close();
    const db = openDatabase(path);
    const fk = foreignKeyCheck(db);
    expect(fk.ok).toBe(false);
    expect(fk.count).toBe(2);
    expect(fk.byTable).toEqual({ clinic_pet: 2 });
    expect(fk.violations).toEqual([
      { table: 'clinic_pet', rowid: 2, parent: 'clinic_owner', fkid: 0 },
      { table: 'clinic_pet', rowid: 3, parent: 'clinic_owner', fkid: 0 },
    ]);
    db.close();
  });

  it('caps the messages it keeps and says so', () => {
    const dir = tempDir();
    const path = makeClinicDb(join(dir, 'db.sqlite3'), { owners: 300 });
    corruptPages(path, 6);
    const db = openDatabase(path);
    const quick = quickCheck(db, 1);
    expect(quick.ok).toBe(false);
    expect(quick.messages).toHaveLength(1);
    expect(quick.truncated).toBe(true);
    db.close();
  });
});
