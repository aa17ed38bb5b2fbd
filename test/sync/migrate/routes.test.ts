import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TableChecksum } from '../../../src/sync/checksum.js';
import { toWire, type SqliteValue } from '../../../src/sync/convert.js';
import { parsePgType } from '../../../src/sync/pg-type.js';
import { ENGINES, fingerprint, startHarness, type Harness } from '../../server/fixture.js';

describe.each(ENGINES)('migrate-support routes on %s', (engine) => {
  let h: Harness;

  beforeAll(async () => {
    h = await startHarness(engine);
  });
  afterAll(async () => {
    await h?.close();
  });

  it('needs a token on every route', async () => {
    const column = { name: 'id', type: 'bigint', not_null: true, default: null, identity: false, non_negative: false };
    const bodies: Record<string, unknown> = {
      'counts/': {},
      'checksum/': { table: 'clinic_owner' },
      'finish/': {},
      'replace/': { load_id: 'L1', tables: ['clinic_owner'] },
      'schema/': { tables: [{ name: 'newtable', columns: [column], primary_key: ['id'], unique: [], foreign_keys: [] }] },
    };
    for (const [path, payload] of Object.entries(bodies)) {
      const res = await h.server.app.inject({ method: 'POST', url: `/api/database/migrate/${path}`, payload: payload as object });
      expect(res.statusCode, path).toBe(401);
      expect(h.json<{ error: { code: string } }>(res).error.code).toBe('AUTH_REQUIRED');
    }
    const stage = await h.server.app.inject({ method: 'POST', url: '/api/database/migrate/stage/?table=clinic_visit&load_id=L1', headers: { 'content-type': 'application/x-ndjson' }, payload: '{"columns":["id"]}\n' });
    expect(stage.statusCode).toBe(401);
    expect(await h.sql(`SELECT to_regclass('newtable') AS t`)).toEqual([{ t: null }]);
  });

  it('counts rows and computes the same checksum a client computes over the same rows', async () => {
    const counts = h.json<{ head_cursor: string; tables: Array<{ table: string; rows: number }> }>(await h.call({ method: 'POST', url: '/api/database/migrate/counts/', payload: { tables: ['clinic_owner', 'clinic_visit'] } }));
    expect(counts.tables).toEqual([{ table: 'clinic_owner', rows: 2 }, { table: 'clinic_visit', rows: 2500 }]);
    expect(counts.head_cursor).toMatch(/^c1\./);

    const res = await h.call({ method: 'POST', url: '/api/database/migrate/checksum/', payload: { table: 'clinic_owner', columns: ['id', 'name', 'email', 'updated_at'] } });
    expect(res.statusCode).toBe(200);
    const answer = h.json<{ rows: number; checksum: string }>(res);
    // The same rows as the desktop app would hold them, converted by the client's conversion module.
    const types = ['bigint', 'character varying(100)', 'text', 'timestamp with time zone'].map(parsePgType);
    const local: SqliteValue[][] = [[2n, 'Bo Li', null, '2026-11-01 10:00:00'], [1n, 'Ana Ménard', 'ana@example.org', '2026-11-01T10:00:00']];
    const sum = new TableChecksum(types);
    for (const row of local) sum.add(row.map((v, i) => { const c = toWire(v, types[i]!, { timezone: 'UTC' }); if (!c.ok) throw new Error(c.reason); return c.value; }));
    expect(answer).toMatchObject({ rows: 2, checksum: sum.digest() });
    const other = new TableChecksum(types);
    other.add(['1', 'Ana Ménard', 'ana@example.org', '2026-11-01T10:00:00Z']);
    expect(other.digest()).not.toBe(answer.checksum);
  });

  it('takes table and column names only from the introspected schema, and validates bodies', async () => {
    const before = await fingerprint(h);
    const unknownTable = await h.call({ method: 'POST', url: '/api/database/migrate/checksum/', payload: { table: 'clinic_owner"; DROP TABLE clinic_pet; --' } });
    expect(unknownTable.statusCode).toBe(400);
    expect(h.json<{ error: { code: string } }>(unknownTable).error.code).toBe('UNKNOWN_TABLE');
    const unknownColumn = await h.call({ method: 'POST', url: '/api/database/migrate/checksum/', payload: { table: 'clinic_owner', columns: ['id', 'name) FROM pg_shadow --'] } });
    expect(h.json<{ error: { code: string } }>(unknownColumn).error.code).toBe('UNKNOWN_COLUMN');
    const extra = await h.call({ method: 'POST', url: '/api/database/migrate/counts/', payload: { tables: ['clinic_owner'], sql: 'x' } });
    expect(extra.statusCode).toBe(400);
    expect(h.json<{ error: { code: string } }>(extra).error.code).toBe('BAD_REQUEST');
    const excluded = await h.call({ method: 'POST', url: '/api/database/migrate/replace/', payload: { load_id: 'L1', tables: ['django_session'] } });
    expect(h.json<{ error: { code: string } }>(excluded).error.code).toBe('UNKNOWN_TABLE');
    const badType = await h.call({
      method: 'POST',
      url: '/api/database/migrate/schema/',
      payload: { tables: [{ name: 'evil', columns: [{ name: 'id', type: 'integer); DROP TABLE clinic_pet; --', not_null: true, default: null, identity: false, non_negative: false }], primary_key: ['id'], unique: [], foreign_keys: [] }] },
    });
    expect(badType.statusCode).toBe(400);
    expect(h.json<{ error: { message: string } }>(badType).error.message).toContain('is not one the mapping produces');
    const badDefault = await h.call({
      method: 'POST',
      url: '/api/database/migrate/schema/',
      payload: { tables: [{ name: 'evil', columns: [{ name: 'id', type: 'bigint', not_null: true, default: "1; DROP TABLE clinic_pet", identity: false, non_negative: false }], primary_key: ['id'], unique: [], foreign_keys: [] }] },
    });
    expect(h.json<{ error: { message: string } }>(badDefault).error.message).toContain('is not a plain literal');
    const exists = await h.call({
      method: 'POST',
      url: '/api/database/migrate/schema/',
      payload: { tables: [{ name: 'clinic_owner', columns: [{ name: 'id', type: 'bigint', not_null: true, default: null, identity: false, non_negative: false }], primary_key: ['id'], unique: [], foreign_keys: [] }] },
    });
    expect(h.json<{ error: { message: string } }>(exists).error.message).toBe('table "clinic_owner" already exists');
    expect(await fingerprint(h)).toBe(before);
  });

  it('pages through a table in key order with an opaque next key, without recording a pull', async () => {
    const first = h.json<{ columns: string[]; rows: unknown[][]; next: string[] | null }>(await h.call({ method: 'POST', url: '/api/database/migrate/rows/', node: 'desk-rows', payload: { table: 'clinic_visit', limit: 2000 } }));
    expect(first.columns).toEqual(['id', 'note']);
    expect(first.rows.length).toBe(2000);
    expect(first.rows[0]).toEqual([1, 'visit 1']);
    expect(first.next).toEqual(['2000']);
    const second = h.json<{ rows: unknown[][]; next: string[] | null }>(await h.call({ method: 'POST', url: '/api/database/migrate/rows/', node: 'desk-rows', payload: { table: 'clinic_visit', limit: 2000, after: first.next } }));
    expect(second.rows.length).toBe(500);
    expect(second.rows[0]).toEqual([2001, 'visit 2001']);
    expect(second.next).toBeNull();
    expect(await h.sql(`SELECT node_id FROM epetsync.nodes WHERE node_id = 'desk-rows'`)).toEqual([]);
  });

  it('moves sequences past the largest id and answers the next value', async () => {
    await h.sql(`INSERT INTO clinic_owner (id, name) VALUES (500, 'Explicit id') `);
    const res = h.json<{ sequences: Array<{ table: string; next_value: string }> }>(await h.call({ method: 'POST', url: '/api/database/migrate/finish/', payload: { tables: ['clinic_owner'] } }));
    expect(res.sequences).toEqual([{ table: 'clinic_owner', sequence: expect.stringContaining('clinic_owner_id_seq'), next_value: '501' }]);
    const next = await h.sql<{ id: string }>(`INSERT INTO clinic_owner (name) VALUES ('Web app') RETURNING id::text AS id`);
    expect(next[0]!.id).toBe('501');
    await h.sql(`DELETE FROM clinic_owner WHERE id IN (500, 501)`);
  });

  it('replaces staged tables in one transaction, or not at all', async () => {
    const stage = (table: string, body: string) =>
      h.call({ method: 'POST', url: `/api/database/migrate/stage/?table=${table}&load_id=R1`, headers: { 'content-type': 'application/x-ndjson' }, payload: body });
    expect((await stage('clinic_visit', '{"columns":["id","note"]}\n[1,"staged one"]\n[2,"staged two"]\n')).statusCode).toBe(200);
    const before = await fingerprint(h);
    // A staged tag whose pet does not exist: the foreign key check at the end refuses the whole replace.
    expect((await stage('clinic_tag', '{"columns":["pet_id","tag"]}\n["999","orphan"]\n')).statusCode).toBe(200);
    const refused = await h.call({ method: 'POST', url: '/api/database/migrate/replace/', payload: { load_id: 'R1', tables: ['clinic_visit', 'clinic_tag'] } });
    expect(refused.statusCode).toBe(409);
    expect(h.json<{ error: { code: string } }>(refused).error.code).toBe('CONSTRAINT_VIOLATION');
    expect((await fingerprint(h)).split('|').slice(4)).toEqual(before.split('|').slice(4));
    expect(await h.sql(`SELECT count(*)::int AS n FROM clinic_visit`)).toEqual([{ n: 2500 }]);

    expect((await stage('clinic_visit', '{"columns":["id","note"]}\n[1,"staged one"]\n[2,"staged two"]\n')).statusCode).toBe(200);
    const ok = await h.call({ method: 'POST', url: '/api/database/migrate/replace/', payload: { load_id: 'R1', tables: ['clinic_visit'] } });
    expect(ok.statusCode, ok.body).toBe(200);
    expect(await h.sql(`SELECT id, note FROM clinic_visit ORDER BY id`)).toEqual([{ id: 1, note: 'staged one' }, { id: 2, note: 'staged two' }]);
    expect(await h.sql(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'epetsync' AND tablename LIKE 'stage_%'`)).toEqual([{ n: 0 }]);
  });
});
