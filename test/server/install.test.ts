/**
 * Change-capture installation (`installChangeCapture`, run by every `epetsync serve` start) against
 * the real PostgreSQL server while the web app is writing.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { installChangeCapture, introspectSchema, openSqlDatabase, type SqlDatabase } from '../../src/server/index.js';
import { createTestDatabase, pgQuery, type TestDatabase } from '../helpers/pg.js';
import { PG_SCHEMA } from '../sync/fixture.js';

let database: TestDatabase;
let db: SqlDatabase;

beforeAll(async () => {
  database = await createTestDatabase('epsinstall');
  await pgQuery(database.url, PG_SCHEMA);
  db = await openSqlDatabase({ databaseUrl: database.url });
});
afterAll(async () => {
  await db?.close();
  await database?.drop();
});

describe('installChangeCapture', () => {
  it('runs again when PostgreSQL picks it as the victim of a deadlock with the web app, instead of failing serve at start', async () => {
    // Found by the crash chaos test: serve restarted under a busy web app exited 3 with "deadlock detected".
    const schema = await introspectSchema(db);
    const web = new pg.Client({ connectionString: database.url });
    await web.connect();
    try {
      // The web app holds clinic_pet; the install takes clinic_owner first, then waits for clinic_pet.
      await web.query('BEGIN');
      await web.query('UPDATE clinic_pet SET name = name WHERE false');
      const installing = installChangeCapture(db, schema).then(
        (r) => ({ ok: true as const, tables: r.tables }),
        (error: unknown) => ({ ok: false as const, code: (error as { code?: unknown }).code }),
      );
      for (let i = 0; ; i += 1) {
        const [row] = await pgQuery<{ n: number }>(database.url, `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`);
        if (row!.n > 0) break;
        if (i > 200) throw new Error('the install never waited for the web app');
        await new Promise((r) => setTimeout(r, 25));
      }
      // Now the web app wants clinic_owner: a deadlock, which PostgreSQL breaks by aborting the install's transaction.
      await web.query('UPDATE clinic_owner SET name = name WHERE false');
      await web.query('COMMIT');
      expect(await installing).toEqual({ ok: true, tables: schema.tables.length });
      const triggers = await pgQuery<{ n: number }>(database.url, `SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = 'epetsync_capture'`);
      expect(triggers[0]!.n).toBe(schema.tables.length);
    } finally {
      await web.end();
    }
  });

  it('never enters the capture function for rows written with capture off, as bulk loads write them', async () => {
    await installChangeCapture(db, await introspectSchema(db));
    // One session per count: function counts a session has not flushed yet still show in the next transaction's view.
    const callsDuring = async (capture: 'on' | 'off'): Promise<number> => {
      const client = new pg.Client({ connectionString: database.url });
      await client.connect();
      try {
        await client.query(`SET track_functions = 'pl'`);
        await client.query('BEGIN');
        try {
          await client.query(`SELECT set_config('epetsync.capture', $1, true)`, [capture]);
          await client.query(`INSERT INTO clinic_species (code, label) SELECT 'sp-${capture}-' || g, 'species' FROM generate_series(1, 50) g`);
          const [row] = (await client.query<{ calls: number }>(`SELECT coalesce(sum(calls), 0)::int AS calls FROM pg_stat_xact_user_functions WHERE schemaname = 'epetsync' AND funcname = 'capture'`)).rows;
          return row!.calls;
        } finally {
          await client.query('ROLLBACK');
        }
      } finally {
        await client.end();
      }
    };
    expect(await callsDuring('on')).toBe(50);
    // The trigger's WHEN clause is checked by PostgreSQL itself: no PL/pgSQL call per loaded row.
    expect(await callsDuring('off')).toBe(0);
  });
});
