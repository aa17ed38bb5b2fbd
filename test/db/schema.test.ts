import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { countRows, describeTable, hasAutoincrement, introspectSchema, listTables, openDatabase, quoteIdent } from '../../src/db/index.js';
import { tempDir } from './fixtures.js';

function schemaDb(): string {
  const path = join(tempDir(), 'schema.sqlite3');
  const db = new Database(path);
  db.exec(`
    CREATE TABLE clinic_owner (id INTEGER PRIMARY KEY AUTOINCREMENT, email VARCHAR(254) NOT NULL UNIQUE, name TEXT DEFAULT 'unknown');
    CREATE TABLE clinic_species (code TEXT PRIMARY KEY, label TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE clinic_visit (
      clinic_id INTEGER NOT NULL,
      visit_no INTEGER NOT NULL,
      owner_id INTEGER REFERENCES clinic_owner(id) ON DELETE CASCADE,
      species_code TEXT REFERENCES clinic_species,
      at DATETIME DEFAULT CURRENT_TIMESTAMP,
      PRIMARY KEY (visit_no, clinic_id)
    );
    CREATE TABLE clinic_dose (
      clinic_id INTEGER, visit_no INTEGER, drug TEXT,
      FOREIGN KEY (clinic_id, visit_no) REFERENCES clinic_visit (clinic_id, visit_no)
    );
    CREATE UNIQUE INDEX clinic_dose_once ON clinic_dose (clinic_id, visit_no, drug);
    CREATE INDEX clinic_dose_lower ON clinic_dose (lower(drug)) WHERE drug IS NOT NULL;
    CREATE TABLE "clinic pet ""x""" ("Pet Name" TEXT NOT NULL, "MixedCase" INTEGER, "weight ""kg""" REAL, id INTEGER PRIMARY KEY);
    CREATE INDEX "idx ""pet"" name" ON "clinic pet ""x""" ("Pet Name", "MixedCase");
    CREATE TABLE note (body TEXT, "autoincrement" TEXT DEFAULT 'AUTOINCREMENT');
    CREATE TABLE _epetsync_changelog (seq INTEGER PRIMARY KEY AUTOINCREMENT, row TEXT);
    INSERT INTO clinic_owner (email) VALUES ('a@example.com'), ('b@example.com'), ('c@example.com');
    DELETE FROM clinic_owner WHERE id = 3;
    INSERT INTO "clinic pet ""x""" ("Pet Name", "MixedCase") VALUES ('Rex', 1), ('Tom', 2);
    INSERT INTO _epetsync_changelog (row) VALUES ('x');
  `);
  db.close();
  return path;
}

describe('db/schema', () => {
  it('lists user tables only, leaving out sqlite_% and _epetsync_%', () => {
    const db = openDatabase(schemaDb());
    expect(listTables(db)).toEqual(['clinic_dose', 'clinic_owner', 'clinic pet "x"', 'clinic_species', 'clinic_visit', 'note'].sort());
    db.close();
  });

  it('describes AUTOINCREMENT, its sqlite_sequence value and a unique constraint', () => {
    const db = openDatabase(schemaDb());
    const owner = describeTable(db, 'clinic_owner');
    expect(owner.autoincrement).toBe(true);
    expect(owner.sequence).toBe(3);
    expect(owner.primaryKey).toEqual(['id']);
    expect(owner.rowidAlias).toBe(true);
    expect(owner.columns).toEqual([
      { name: 'id', declaredType: 'INTEGER', notNull: false, defaultValue: null, primaryKeyPosition: 1, hidden: 0 },
      { name: 'email', declaredType: 'VARCHAR(254)', notNull: true, defaultValue: null, primaryKeyPosition: 0, hidden: 0 },
      { name: 'name', declaredType: 'TEXT', notNull: false, defaultValue: "'unknown'", primaryKeyPosition: 0, hidden: 0 },
    ]);
    expect(owner.indexes).toEqual([{ name: 'sqlite_autoindex_clinic_owner_1', unique: true, origin: 'u', partial: false, columns: ['email'] }]);
    const note = describeTable(db, 'note');
    expect(note.autoincrement).toBe(false);
    expect(note.sequence).toBeNull();
    expect(note.primaryKey).toEqual([]);
    db.close();
  });

  it('describes a text key WITHOUT ROWID and a composite key in key order', () => {
    const db = openDatabase(schemaDb());
    const species = describeTable(db, 'clinic_species');
    expect(species.withoutRowid).toBe(true);
    expect(species.primaryKey).toEqual(['code']);
    expect(species.rowidAlias).toBe(false);
    const visit = describeTable(db, 'clinic_visit');
    expect(visit.primaryKey).toEqual(['visit_no', 'clinic_id']);
    expect(visit.rowidAlias).toBe(false);
    expect(visit.columns.find((c) => c.name === 'at')?.defaultValue).toBe('CURRENT_TIMESTAMP');
    expect(visit.indexes).toEqual([{ name: 'sqlite_autoindex_clinic_visit_1', unique: true, origin: 'pk', partial: false, columns: ['visit_no', 'clinic_id'] }]);
    db.close();
  });

  it('describes single and composite foreign keys, with the parent key left implicit', () => {
    const db = openDatabase(schemaDb());
    expect(describeTable(db, 'clinic_visit').foreignKeys).toEqual([
      { id: 0, columns: ['species_code'], referencedTable: 'clinic_species', referencedColumns: [null], onUpdate: 'NO ACTION', onDelete: 'NO ACTION' },
      { id: 1, columns: ['owner_id'], referencedTable: 'clinic_owner', referencedColumns: ['id'], onUpdate: 'NO ACTION', onDelete: 'CASCADE' },
    ]);
    const dose = describeTable(db, 'clinic_dose');
    expect(dose.foreignKeys).toEqual([
      { id: 0, columns: ['clinic_id', 'visit_no'], referencedTable: 'clinic_visit', referencedColumns: ['clinic_id', 'visit_no'], onUpdate: 'NO ACTION', onDelete: 'NO ACTION' },
    ]);
    expect(dose.indexes).toEqual([
      { name: 'clinic_dose_lower', unique: false, origin: 'c', partial: true, columns: [null] },
      { name: 'clinic_dose_once', unique: true, origin: 'c', partial: false, columns: ['clinic_id', 'visit_no', 'drug'] },
    ]);
    db.close();
  });

  it('handles a table named clinic pet "x" with spaces, quotes and MixedCase columns', () => {
    const db = openDatabase(schemaDb());
    const pet = describeTable(db, 'clinic pet "x"');
    expect(pet.columns.map((c) => c.name)).toEqual(['Pet Name', 'MixedCase', 'weight "kg"', 'id']);
    expect(pet.columns[0]).toEqual({ name: 'Pet Name', declaredType: 'TEXT', notNull: true, defaultValue: null, primaryKeyPosition: 0, hidden: 0 });
    expect(pet.primaryKey).toEqual(['id']);
    expect(pet.indexes).toEqual([{ name: 'idx "pet" name', unique: false, origin: 'c', partial: false, columns: ['Pet Name', 'MixedCase'] }]);
    expect(db.prepare(`SELECT ${quoteIdent('MixedCase')} FROM ${quoteIdent('clinic pet "x"')} ORDER BY 1`).pluck().all()).toEqual([1, 2]);
    db.close();
  });

  it('counts rows in every table, whatever its name', () => {
    const db = openDatabase(schemaDb());
    expect(countRows(db)).toEqual([
      { table: 'clinic pet "x"', rows: 2 },
      { table: 'clinic_dose', rows: 0 },
      { table: 'clinic_owner', rows: 2 },
      { table: 'clinic_species', rows: 0 },
      { table: 'clinic_visit', rows: 0 },
      { table: 'note', rows: 0 },
    ]);
    expect(introspectSchema(db).map((t) => t.name)).toEqual(listTables(db));
    db.close();
  });

  it('finds AUTOINCREMENT only outside strings and quoted names', () => {
    expect(hasAutoincrement('CREATE TABLE a (id integer primary key autoincrement)')).toBe(true);
    expect(hasAutoincrement(`CREATE TABLE b (id integer primary key, "autoincrement" text default 'AUTOINCREMENT')`)).toBe(false);
    expect(hasAutoincrement('CREATE TABLE c (id integer primary key, [autoincrement] text, `AUTOINCREMENT` int)')).toBe(false);
  });

  it('quotes identifiers by doubling quotes', () => {
    expect(quoteIdent('clinic pet "x"')).toBe('"clinic pet ""x"""');
  });
});
