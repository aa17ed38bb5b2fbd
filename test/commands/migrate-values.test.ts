import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CLINIC_TABLES, DJANGO_POSTGRES_SCHEMA, generateClinicDatabase } from '../../src/sync/generate.js';
import { clinicFolderFor, startMigrateBed, type MigrateBed } from '../helpers/clinic-db.js';

interface Case {
  kind: string;
  table: string;
  column: string;
  /** Breaks one value of the freshly generated database; returns the primary key it broke. */
  inject(db: Database.Database): Record<string, unknown>;
  /** Text the stop message must show for the value. */
  value: string;
  /** A schema of its own for the remote (the case then gets its own database and server). */
  schema?: readonly string[];
}

const CASES: Case[] = [
  {
    kind: 'not-an-integer',
    table: 'clinic_appointment',
    column: 'duration_minutes',
    inject: (db) => (db.prepare(`UPDATE clinic_appointment SET duration_minutes = 'half an hour' WHERE id = 2`).run(), { id: 2 }),
    value: '"half an hour"',
  },
  {
    kind: 'nul-in-text',
    table: 'clinic_appointment',
    column: 'reason',
    inject: (db) => (db.prepare(`UPDATE clinic_appointment SET reason = ? WHERE id = 3`).run('Lame\u0000leg'), { id: 3 }),
    value: '"Lame\\u0000leg"',
  },
  {
    kind: 'invalid-utf8',
    table: 'clinic_appointment',
    column: 'status',
    inject: (db) => (db.prepare(`UPDATE clinic_appointment SET status = ? WHERE id = 4`).run(Buffer.from([0x62, 0xff, 0x6b])), { id: 4 }),
    value: '{"base64":"Yv9r"}',
  },
  {
    kind: 'invalid-date',
    table: 'clinic_pet_tags',
    column: 'added_on',
    inject: (db) => {
      const row = db.prepare(`SELECT pet_id, tag FROM clinic_pet_tags ORDER BY pet_id, tag LIMIT 1 OFFSET 2`).get() as { pet_id: number; tag: string };
      db.prepare(`UPDATE clinic_pet_tags SET added_on = '2024-02-30' WHERE pet_id = ? AND tag = ?`).run(row.pet_id, row.tag);
      return { pet_id: String(row.pet_id), tag: row.tag };
    },
    value: '"2024-02-30"',
  },
  {
    kind: 'too-long',
    table: 'clinic_appointment',
    column: 'status',
    inject: (db) => (db.prepare(`UPDATE clinic_appointment SET status = ? WHERE id = 5`).run('rescheduled-by-phone!'), { id: 5 }),
    value: '"rescheduled-by-phone!"',
  },
  {
    kind: 'null-in-not-null',
    table: 'clinic_appointment',
    column: 'fee',
    inject: (db) => {
      db.prepare(`UPDATE clinic_appointment SET fee = 10 WHERE fee IS NULL`).run();
      db.prepare(`UPDATE clinic_appointment SET fee = NULL WHERE id = 6`).run();
      return { id: 6 };
    },
    value: 'null',
    // The web app's schema says NOT NULL from the start (the server reads it when it starts).
    schema: DJANGO_POSTGRES_SCHEMA.map((sql) => sql.replace('"fee" numeric(8, 2) NULL', '"fee" numeric(8, 2) NOT NULL')),
  },
  {
    kind: 'refused-by-remote',
    table: 'clinic_appointment',
    column: '(row)',
    // Converts fine, but the web app's CHECK constraint refuses it: found by halving the refused request.
    inject: (db) => (db.prepare(`UPDATE clinic_appointment SET duration_minutes = -15 WHERE id = 6`).run(), { id: 6 }),
    value: '{"id":6,"pet_id":',
  },
  {
    kind: 'not-a-boolean',
    table: 'clinic_pet',
    column: 'is_neutered',
    inject: (db) => (db.prepare(`UPDATE clinic_pet SET is_neutered = 2 WHERE id = 2`).run(), { id: 2 }),
    value: '"2"',
  },
  {
    kind: 'invalid-timestamp',
    table: 'clinic_owner',
    column: 'created_at',
    inject: (db) => (db.prepare(`UPDATE clinic_owner SET created_at = '2024-13-01 10:00:00' WHERE id = 2`).run(), { id: 2 }),
    value: '"2024-13-01 10:00:00"',
  },
];

/** Normalises a key for comparison with a report (wire-encoded: bigint columns are strings). */
function wireKey(table: string, key: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(key).map(([k, v]) => [k, table === 'clinic_appointment' && k === 'id' ? Number(v) : String(v)]));
}

describe('migrate with values that cannot be converted', () => {
  let bed: MigrateBed;

  beforeAll(async () => {
    bed = await startMigrateBed('eps_migval');
  });
  afterAll(async () => {
    await bed?.close();
  });
  beforeEach(async () => {
    await bed.sql(`TRUNCATE ${CLINIC_TABLES.map((t) => `"${t}"`).join(', ')}`);
  });

  for (const c of CASES) {
    it(`${c.kind}: stops naming table, key, column and value; with --reject-file sets the row aside and loads the rest`, async () => {
      const own = c.schema ? await startMigrateBed('eps_migval', c.schema) : undefined;
      const target = own ?? bed;
      try {
        const { folder, cli } = clinicFolderFor(target);
        generateClinicDatabase(folder.db, { scale: 12, seed: 4 });
        const db = new Database(folder.db);
        const key = wireKey(c.table, c.inject(db));
        db.close();

        const stopped = await cli(['--json', 'migrate']);
        expect(stopped.code, stopped.stdout).toBe(1);
        const err = JSON.parse(stopped.stdout) as { error: { code: string; message: string } };
        expect(err.error.code).toBe('EPS_MIGRATE_UNCONVERTIBLE');
        expect(err.error.message).toContain(`${c.table} ${JSON.stringify(key)} column "${c.column}": value ${c.value}`);
        expect(err.error.message).toContain(c.kind);
        const counts = await target.sql<{ n: string }>(`SELECT count(*)::text AS n FROM "${c.table}"`);
        // A value found by the audit stops before anything is sent; one the database refuses stops after the rows before it.
        if (c.kind === 'refused-by-remote') expect(Number(counts[0]!.n)).toBe(5);
        else expect(counts[0]!.n).toBe('0');

        const human = await cli(['migrate']);
        expect(human.code).toBe(1);
        expect(human.stderr).toContain(`Error: ${c.table} ${JSON.stringify(key)} column "${c.column}"`);

        if (c.kind === 'refused-by-remote') {
          // Emptied after a partial load: the next run must start those tables over, not continue after the old checkpoint.
          await target.sql(`TRUNCATE ${CLINIC_TABLES.map((t) => `"${t}"`).join(', ')}`);
        }
        const rejectFile = join(folder.dir, 'rejects.ndjson');
        const run = await cli(['--json', 'migrate', '--reject-file', rejectFile]);
        expect(run.code, run.stdout).toBe(0);
        const out = JSON.parse(run.stdout) as { result: { rejected: number; mismatched: string[]; tables: Array<{ table: string; rejected: number; loaded: number; localRows: number; verified: boolean }> } };
        expect(out.result.mismatched).toEqual([]);
        const report = out.result.tables.find((t) => t.table === c.table)!;
        expect(report.rejected).toBe(1);
        expect(report.loaded).toBe(report.localRows - 1);
        expect(out.result.tables.every((t) => t.verified)).toBe(true);
        expect(existsSync(rejectFile)).toBe(true);
        const lines = readFileSync(rejectFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { table: string; pk: unknown; column: string; kind: string });
        expect(lines[0]).toMatchObject({ table: c.table, pk: key, column: c.column, kind: c.kind });
        expect(out.result.rejected).toBe(lines.length);
        // Children of a rejected row cannot be loaded either: they are set aside with their reason.
        expect(lines.slice(1).every((l) => l.kind === 'parent-rejected')).toBe(true);
        const remote = await target.sql<{ n: string }>(`SELECT count(*)::text AS n FROM "${c.table}"`);
        expect(Number(remote[0]!.n)).toBe(report.localRows - 1);
        if (c.kind === 'not-a-boolean') {
          // --verify alone remembers the last migrate's reject file: rows set aside are not expected remotely.
          const verify = await cli(['migrate', '--verify']);
          expect(verify.code, verify.stdout).toBe(0);
          expect(verify.stdout).toContain('Verified: both sides hold the same rows.');
        }
      } finally {
        await own?.close();
      }
    });
  }
});
