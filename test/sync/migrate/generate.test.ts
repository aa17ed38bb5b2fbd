import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { FIRST_RECORD_ID, generateClinicDatabase } from '../../../src/sync/generate.js';
import { hashFile, tempDir } from '../../db/fixtures.js';

describe('generateClinicDatabase', () => {
  it('builds the same database for the same seed and scale, with the quirks migrate must carry', () => {
    const dir = tempDir();
    const a = generateClinicDatabase(join(dir, 'a.sqlite3'), { scale: 30, seed: 5 });
    const b = generateClinicDatabase(join(dir, 'b.sqlite3'), { scale: 30, seed: 5 });
    expect(a.rows).toEqual(b.rows);
    expect(hashFile(a.path)).toBe(hashFile(b.path));
    expect(a.rows.clinic_owner).toBe(30);
    expect(a.totalRows).toBeGreaterThan(200);
    const db = new Database(a.path, { readonly: true });
    db.defaultSafeIntegers(true);
    try {
      const kinds = db.prepare(`SELECT DISTINCT typeof(balance) AS t FROM clinic_owner ORDER BY t`).pluck().all();
      expect(kinds).toEqual(['integer', 'real', 'text']);
      const spellings = db.prepare(`SELECT created_at FROM clinic_owner`).pluck().all() as string[];
      expect(spellings.some((s) => s.includes('T'))).toBe(true);
      expect(spellings.some((s) => / \d\d:\d\d:\d\d$/.test(s))).toBe(true);
      expect(db.prepare(`SELECT min(id) FROM clinic_medicalrecord`).pluck().get()).toBe(FIRST_RECORD_ID);
      expect(db.prepare(`SELECT count(*) FROM clinic_owner WHERE phone IS NULL`).pluck().get()).toBeGreaterThan(0n);
      expect(db.prepare(`SELECT count(*) FROM "clinic vaccine log"`).pluck().get()).toBe(BigInt(a.rows['clinic vaccine log']!));
      expect(db.prepare(`SELECT count(*) FROM clinic_pet WHERE name GLOB '*[^ -~]*'`).pluck().get()).toBeGreaterThan(0n);
    } finally {
      db.close();
    }
    expect(() => generateClinicDatabase(a.path, { scale: 1 })).toThrow(/already holds a database/);
  });
});
