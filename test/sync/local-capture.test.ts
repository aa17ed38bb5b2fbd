import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import {
  CAPTURE_VERSION,
  CHANGELOG_ROW_INDEX,
  acknowledgeChanges,
  applyWithoutCapture,
  captureVersion,
  installCapture,
  installedTriggers,
  parseKey,
  pendingSummary,
  readPendingChanges,
  META,
  readMeta,
  removeCapture,
  writeMeta,
  type CapturedTable,
} from '../../src/sync/local-capture.js';
import { desktopWrite } from '../helpers/desktop-writer.js';

const TABLES: CapturedTable[] = [
  { name: 'clinic_owner', primaryKey: ['id'] },
  { name: 'clinic_pet', primaryKey: ['id'] },
  { name: 'clinic_vaccination', primaryKey: ['pet_id', 'vaccine'] },
  { name: 'Clinic "Notes" tbl', primaryKey: ['Note Key'] },
];

function clinicDb(): { path: string; db: Database.Database } {
  const dir = mkdtempSync(join(tmpdir(), 'eps-capture-'));
  const path = join(dir, 'db.sqlite3');
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.exec(`
    CREATE TABLE clinic_owner (id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR(100) NOT NULL);
    CREATE TABLE clinic_pet (id INTEGER PRIMARY KEY AUTOINCREMENT, owner_id INTEGER REFERENCES clinic_owner(id), name TEXT);
    CREATE TABLE clinic_vaccination (pet_id INTEGER NOT NULL, vaccine TEXT NOT NULL, given_on DATE, PRIMARY KEY (pet_id, vaccine));
    CREATE TABLE "Clinic ""Notes"" tbl" ("Note Key" TEXT PRIMARY KEY, body TEXT);
  `);
  db.defaultSafeIntegers(true);
  return { path, db };
}

describe('local-capture', () => {
  it('records inserts, updates, deletes and key changes made by the desktop app through Python sqlite3', () => {
    const { path, db } = clinicDb();
    installCapture(db, TABLES);
    desktopWrite(path, [
      [["INSERT INTO clinic_owner (name) VALUES ('Ana Ménard')", []], ['INSERT INTO clinic_pet (owner_id, name) VALUES (1, ?)', ['Rex']]],
      [["UPDATE clinic_pet SET name = 'Rex II' WHERE id = 1", []]],
      [["INSERT INTO clinic_vaccination VALUES (1, 'rabies, 3y', '2026-11-01')", []]],
      [["INSERT INTO \"Clinic \"\"Notes\"\" tbl\" VALUES ('it''s, odd', 'x')", []]],
      [['UPDATE clinic_pet SET id = 9007199254740993 WHERE id = 1', []]],
      [["DELETE FROM clinic_vaccination WHERE pet_id = 1 AND vaccine = 'rabies, 3y'", []]],
    ]);
    const changes = readPendingChanges(db, 100);
    expect(changes.map(({ table, pk, op }) => ({ table, pk, op }))).toEqual([
      { table: 'clinic_owner', pk: [1n], op: 'I' },
      { table: 'clinic_pet', pk: [1n], op: 'I' },
      { table: 'clinic_pet', pk: [1n], op: 'U' },
      { table: 'clinic_vaccination', pk: [1n, 'rabies, 3y'], op: 'I' },
      { table: 'Clinic "Notes" tbl', pk: ["it's, odd"], op: 'I' },
      { table: 'clinic_pet', pk: [1n], op: 'D' },
      { table: 'clinic_pet', pk: [9007199254740993n], op: 'I' },
      { table: 'clinic_vaccination', pk: [1n, 'rabies, 3y'], op: 'D' },
    ]);
    expect(pendingSummary(db).count).toBe(8);
  });

  it('does not record rows applied from the remote, and keeps recording the desktop app afterwards', () => {
    const { path, db } = clinicDb();
    installCapture(db, TABLES);
    applyWithoutCapture(db, () => {
      db.prepare('INSERT INTO clinic_owner (id, name) VALUES (?, ?)').run(50n, 'from the web');
      db.prepare('UPDATE clinic_owner SET name = ? WHERE id = ?').run('from the web, edited', 50n);
    });
    expect(readPendingChanges(db, 10)).toEqual([]);
    expect(db.prepare('SELECT suppress FROM _epetsync_apply').get()).toEqual({ suppress: 0n });
    desktopWrite(path, [[["UPDATE clinic_owner SET name = 'edited at the desk' WHERE id = 50", []]]]);
    expect(readPendingChanges(db, 10).map((c) => c.op)).toEqual(['U']);
  });

  it('rolls back the suppression with the transaction when applying fails', () => {
    const { db } = clinicDb();
    installCapture(db, TABLES);
    expect(() =>
      applyWithoutCapture(db, () => {
        db.prepare('INSERT INTO clinic_owner (id, name) VALUES (?, ?)').run(1n, 'x');
        throw new Error('apply failed');
      }),
    ).toThrow('apply failed');
    expect(db.prepare('SELECT count(*) AS n FROM clinic_owner').get()).toEqual({ n: 0n });
    db.prepare('INSERT INTO clinic_owner (name) VALUES (?)').run('captured');
    expect(readPendingChanges(db, 10)).toHaveLength(1);
  });

  it('installs idempotently, upgrades the table set, and removes cleanly', () => {
    const { db } = clinicDb();
    installCapture(db, TABLES);
    const first = db.prepare("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name").all();
    expect(installCapture(db, TABLES)).toEqual({ installed: TABLES.map((t) => t.name), removed: [], version: CAPTURE_VERSION });
    expect(db.prepare("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name").all()).toEqual(first);
    expect(captureVersion(db)).toBe(CAPTURE_VERSION);
    expect(installedTriggers(db).get('clinic_pet')).toHaveLength(3);

    expect(installCapture(db, TABLES.slice(0, 2)).removed.sort()).toEqual(['Clinic "Notes" tbl', 'clinic_vaccination']);
    expect([...installedTriggers(db).keys()].sort()).toEqual(['clinic_owner', 'clinic_pet']);

    expect(removeCapture(db)).toEqual({ removed: 6 });
    expect(installedTriggers(db).size).toBe(0);
    db.prepare('INSERT INTO clinic_owner (name) VALUES (?)').run('not captured');
    expect(readPendingChanges(db, 10)).toEqual([]);
    removeCapture(db, { dropTables: true });
    expect(captureVersion(db)).toBeNull();
  });

  it('indexes the changelog by row, and gives an existing install the index on its next start without losing pending changes', () => {
    const { path, db } = clinicDb();
    const rowLookup = `EXPLAIN QUERY PLAN SELECT seq FROM _epetsync_changelog WHERE table_name = 'clinic_owner' AND pk = '1' ORDER BY seq`;
    const plan = (): string => (db.prepare(rowLookup).all() as Array<{ detail: string }>).map((r) => r.detail).join('; ');
    installCapture(db, TABLES);
    expect(db.prepare(`SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND name = ?`).pluck().get(CHANGELOG_ROW_INDEX)).toBe('_epetsync_changelog');
    expect(plan()).toContain(`USING COVERING INDEX ${CHANGELOG_ROW_INDEX}`);

    // A desktop database whose capture was installed before the index existed, with changes waiting.
    db.exec(`DROP INDEX ${CHANGELOG_ROW_INDEX}`);
    desktopWrite(path, [[["INSERT INTO clinic_owner (name) VALUES ('before')", []], ["UPDATE clinic_owner SET name = 'still before' WHERE id = 1", []]]]);
    expect(plan()).toContain('SCAN _epetsync_changelog');
    installCapture(db, TABLES);
    expect(plan()).toContain(`USING COVERING INDEX ${CHANGELOG_ROW_INDEX}`);
    expect(readPendingChanges(db, 10).map(({ table, pk, op }) => ({ table, pk, op }))).toEqual([
      { table: 'clinic_owner', pk: [1n], op: 'I' },
      { table: 'clinic_owner', pk: [1n], op: 'U' },
    ]);
    // The desktop app's own SQLite keeps writing through the triggers into the indexed changelog.
    desktopWrite(path, [[["DELETE FROM clinic_owner WHERE id = 1", []]]]);
    expect(readPendingChanges(db, 10).map((c) => c.op)).toEqual(['I', 'U', 'D']);
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
  });

  it('clears only acknowledged entries, so an edit made after reading stays pending', () => {
    const { path, db } = clinicDb();
    installCapture(db, TABLES);
    db.prepare('INSERT INTO clinic_owner (name) VALUES (?)').run('a');
    const batch = readPendingChanges(db, 10);
    desktopWrite(path, [[["UPDATE clinic_owner SET name = 'b' WHERE id = 1", []]]]);
    expect(acknowledgeChanges(db, batch.map((c) => c.seq))).toBe(1);
    expect(readPendingChanges(db, 10).map((c) => c.op)).toEqual(['U']);
  });

  it('parses every literal quote() writes', () => {
    expect(parseKey("1,'a''b,c',X'00FF',NULL,-5,2.5")).toEqual([1n, "a'b,c", Buffer.from([0, 255]), null, -5n, 2.5]);
    expect(() => parseKey("'unterminated")).toThrow('malformed changelog key');
  });
});

describe('local-capture meta', () => {
  it('persists the pull cursor with the rows of the same transaction, or not at all', () => {
    const { db } = clinicDb();
    installCapture(db, TABLES);
    expect(readMeta(db, META.pullCursor)).toBeNull();
    applyWithoutCapture(db, () => {
      db.prepare('INSERT INTO clinic_owner (id, name) VALUES (?, ?)').run(1n, 'from the web');
      writeMeta(db, META.pullCursor, 'c1.10.5');
    });
    expect(readMeta(db, META.pullCursor)).toBe('c1.10.5');
    expect(() =>
      applyWithoutCapture(db, () => {
        db.prepare('INSERT INTO clinic_owner (id, name) VALUES (?, ?)').run(2n, 'page 2');
        writeMeta(db, META.pullCursor, 'c1.11.9');
        throw new Error('crash during apply');
      }),
    ).toThrow('crash during apply');
    expect(readMeta(db, META.pullCursor)).toBe('c1.10.5');
    expect(db.prepare('SELECT count(*) AS n FROM clinic_owner').get()).toEqual({ n: 1n });
  });
});
