import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENGINES, ndjson, startHarness, type Harness } from './fixture.js';

interface FeedBody {
  changes: Array<{ table: string; op: string; pk: Record<string, unknown>; values: Record<string, unknown> | null; origin: string | null }>;
  cursor: string;
  has_more: boolean;
  head_cursor: string;
}

describe.each(ENGINES)('sync API on %s', (engine) => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness(engine);
  });
  afterAll(async () => {
    await h?.close();
  });

  const head = async (): Promise<string> => h.json<{ head_cursor: string }>(await h.call({ method: 'GET', url: '/api/database/sync/' })).head_cursor;
  const feed = async (since: string, node?: string, extra = ''): Promise<FeedBody> => {
    const res = await h.call({ method: 'GET', url: `/api/database/download/?since=${since}${extra}`, ...(node ? { node } : {}) });
    expect(res.statusCode, res.body).toBe(200);
    return h.json<FeedBody>(res);
  };

  it('answers discovery, health and readiness without a token, each with a request id', async () => {
    const disc = await h.server.app.inject({ method: 'GET', url: '/.well-known/epetsync' });
    expect(disc.statusCode).toBe(200);
    expect(disc.json()).toMatchObject({ service: 'epetsync', protocol: 1, endpoints: { sync: '/api/database/sync/', bulk: '/api/database/bulk/' } });
    expect(disc.headers['x-request-id']).toMatch(/^req-/);
    expect((await h.server.app.inject({ method: 'GET', url: '/healthz' })).json()).toEqual({ status: 'ok' });
    expect((await h.server.app.inject({ method: 'GET', url: '/readyz' })).json()).toEqual({ status: 'ready' });
    const given = await h.server.app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'trace-42' } });
    expect(given.headers['x-request-id']).toBe('trace-42');
  });

  it('describes the server, the synced tables in foreign-key order and the scope left out', async () => {
    const res = await h.call({ method: 'GET', url: '/api/database/sync/' });
    expect(res.statusCode).toBe(200);
    const info = h.json<Record<string, any>>(res);
    expect(info).toMatchObject({ service: 'epetsync', protocol: 1, db_type: 'postgresql', engine, conflict_policy: 'server-wins', client: null });
    expect(info.head_cursor).toMatch(/^c1\.\d+\.\d+$/);
    expect(Date.parse(info.server_time)).toBeGreaterThan(Date.now() - 60_000);
    const names = info.tables.map((t: { name: string }) => t.name);
    expect(names.indexOf('clinic_owner')).toBeLessThan(names.indexOf('clinic_pet'));
    expect(names.indexOf('clinic_pet')).toBeLessThan(names.indexOf('clinic_tag'));
    expect(names).not.toContain('django_session');
    expect(names).not.toContain('users');
    expect(info.unsynced_tables).toEqual(expect.arrayContaining([{ name: 'django_session', reason: 'excluded' }, { name: 'audit_raw', reason: 'no primary key' }]));
    const owner = info.tables.find((t: { name: string }) => t.name === 'clinic_owner');
    expect(owner.primary_key).toEqual(['id']);
    expect(owner.columns[1]).toEqual({ name: 'name', type: 'character varying(100)', nullable: false, default: null, max_length: 100, identity: false, generated: false });
    expect(info.tables.find((t: { name: string }) => t.name === 'clinic_tag').primary_key).toEqual(['pet_id', 'tag']);
    expect(info.limits).toMatchObject({ max_batch_changes: 5000, max_wait_seconds: 60 });
  });

  it('streams a snapshot table by table in primary-key order across keyset pages, gzip when accepted', async () => {
    const res = await h.call({ method: 'GET', url: '/api/database/download/?tables=clinic_owner,clinic_visit', headers: { 'accept-encoding': 'gzip' } });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/application\/x-ndjson/);
    expect(res.headers['content-encoding']).toBe('gzip');
    const lines = ndjson(res);
    expect(lines[0]).toMatchObject({ type: 'begin', mode: 'snapshot' });
    expect(lines[1]).toEqual({ type: 'table', table: 'clinic_owner', columns: ['id', 'name', 'email', 'updated_at'], primary_key: ['id'] });
    expect(lines[2]).toEqual({ type: 'row', values: ['1', 'Ana Ménard', 'ana@example.org', '2026-11-01T10:00:00Z'] });
    const visits = lines.filter((l) => l.type === 'row' && typeof (l.values as unknown[])[0] === 'number').map((l) => (l.values as number[])[0]);
    expect(visits).toHaveLength(2500);
    expect(visits).toEqual([...visits].sort((a, b) => a - b));
    expect(lines.at(-1)).toMatchObject({ type: 'end', tables: 2, rows: 2502, cursor: lines[0]!.cursor });
    expect(lines.find((l) => l.type === 'table_end' && l.table === 'clinic_visit')).toEqual({ type: 'table_end', table: 'clinic_visit', rows: 2500 });
  });

  it('records a completed snapshot as the node’s last pull', async () => {
    const lines = ndjson(await h.call({ method: 'GET', url: '/api/database/download/?tables=clinic_owner', node: 'fresh-desk' }));
    const info = h.json<{ client: Record<string, unknown> }>(await h.call({ method: 'GET', url: '/api/database/sync/', node: 'fresh-desk' }));
    expect(info.client).toMatchObject({ node_id: 'fresh-desk', last_pull_cursor: lines.at(-1)!.cursor, last_push_at: null });
  });

  it('resumes a snapshot after the last primary key received', async () => {
    const res = await h.call({ method: 'GET', url: `/api/database/download/?tables=clinic_owner,clinic_visit&after_table=clinic_visit&after=${encodeURIComponent('[2498]')}` });
    const lines = ndjson(res);
    expect(lines.map((l) => l.type)).toEqual(['begin', 'table', 'row', 'row', 'table_end', 'end']);
    expect(lines[2]).toEqual({ type: 'row', values: [2499, 'visit 2499'] });
  });

  it('feeds direct SQL writes in commit order with current values, one entry per row, and delete tombstones', async () => {
    const since = await head();
    await h.sql(`INSERT INTO clinic_owner (name, email) VALUES ('Cy Web', 'cy@example.org')`);
    await h.sql(`UPDATE clinic_pet SET name = 'Rexy' WHERE id = 1`);
    await h.sql(`UPDATE clinic_pet SET name = 'Rex II' WHERE id = 1`);
    await h.sql(`INSERT INTO clinic_visit (id, note) VALUES (9001, 'gone soon')`);
    await h.sql(`DELETE FROM clinic_visit WHERE id = 9001`);
    const page = await feed(since);
    expect(page.changes.map((c) => [c.table, c.op])).toEqual([
      ['clinic_owner', 'upsert'],
      ['clinic_pet', 'upsert'],
      ['clinic_visit', 'delete'],
    ]);
    expect(page.changes[0]!.values).toMatchObject({ name: 'Cy Web', email: 'cy@example.org' });
    expect(page.changes[1]).toMatchObject({ pk: { id: '1' }, values: { name: 'Rex II', weight: '12.50', vaccinated: true }, origin: null });
    expect(page.changes[2]).toEqual({ table: 'clinic_visit', op: 'delete', pk: { id: 9001 }, values: null, origin: null });
    expect(page.has_more).toBe(false);
    expect(page.cursor).toBe(page.head_cursor);
    const again = await feed(page.cursor);
    expect(again.changes).toEqual([]);
    expect(again.cursor).toBe(page.cursor);
    const paged = await feed(since, undefined, '&limit=2');
    expect(paged.has_more).toBe(true);
    const rest = await feed(paged.cursor);
    expect(rest.changes.length).toBeGreaterThan(0);
  });

  it('applies an upload in one transaction, keeps it out of the uploader feed and reports the node state', async () => {
    const since = await head();
    const batch = {
      batch_id: `desk-1:${engine}:1`,
      changes: [
        { table: 'clinic_owner', op: 'upsert', pk: { id: '50' }, values: { id: '50', name: 'Dee Desk', email: 'dee@example.org' } },
        { table: 'clinic_pet', op: 'upsert', pk: { id: '50' }, values: { id: '50', owner_id: '50', name: 'Pip' } },
        { table: 'clinic_tag', op: 'upsert', pk: { pet_id: '50', tag: 'cat' }, values: { pet_id: '50', tag: 'cat' } },
        { table: 'clinic_pet', op: 'delete', pk: { id: '999' } },
      ],
    };
    const res = await h.call({ method: 'POST', url: '/api/database/upload/', node: 'desk-1', payload: batch });
    expect(res.statusCode, res.body).toBe(200);
    const body = h.json<Record<string, any>>(res);
    expect(body).toMatchObject({ batch_id: batch.batch_id, replayed: false, applied: 4, conflicts: 0 });
    expect(body.results).toEqual([0, 1, 2, 3].map((index) => ({ index, status: 'applied' })));
    expect(body.cursor).toMatch(/^c1\./);
    expect(await h.sql(`SELECT name FROM clinic_pet WHERE id = 50`)).toEqual([{ name: 'Pip' }]);

    const own = await feed(since, 'desk-1');
    expect(own.changes).toEqual([]);
    expect(own.cursor).not.toBe(since);
    const other = await feed(since, 'desk-2');
    expect(other.changes.map((c) => [c.table, c.origin])).toEqual([
      ['clinic_owner', 'desk-1'],
      ['clinic_pet', 'desk-1'],
      ['clinic_tag', 'desk-1'],
    ]);
    expect(other.changes[2]!.pk).toEqual({ pet_id: '50', tag: 'cat' });

    // A serial id sent explicitly moves the sequence, so the web app's next insert does not collide.
    const [next] = await h.sql<{ id: string }>(`INSERT INTO clinic_owner (name) VALUES ('after upload') RETURNING id`);
    expect(Number(next!.id)).toBeGreaterThan(50);

    const info = h.json<Record<string, any>>(await h.call({ method: 'GET', url: '/api/database/sync/', node: 'desk-1' }));
    expect(info.client).toMatchObject({ node_id: 'desk-1', last_pull_cursor: own.cursor });
    expect(info.client.last_push_at).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);
    expect(info.client.last_pull_at).toMatch(/Z$/);
  });

  it('acknowledges a replayed batch with the original result and does not apply it twice', async () => {
    const batch = { batch_id: `desk-1:${engine}:replay`, changes: [{ table: 'clinic_visit', op: 'upsert', pk: { id: 7000 }, values: { id: 7000, note: 'first' } }] };
    const first = await h.call({ method: 'POST', url: '/api/database/upload/', node: 'desk-1', payload: batch });
    expect(first.statusCode).toBe(200);
    await h.sql(`UPDATE clinic_visit SET note = 'edited on the web' WHERE id = 7000`);
    const [{ n: before }] = (await h.sql<{ n: string }>(`SELECT count(*)::text AS n FROM epetsync.changelog`)) as [{ n: string }];
    const replay = await h.call({ method: 'POST', url: '/api/database/upload/', node: 'desk-1', payload: batch });
    expect(replay.statusCode).toBe(200);
    const a = h.json<Record<string, unknown>>(first);
    const b = h.json<Record<string, unknown>>(replay);
    expect(b).toEqual({ ...a, replayed: true });
    expect(await h.sql(`SELECT note FROM clinic_visit WHERE id = 7000`)).toEqual([{ note: 'edited on the web' }]);
    expect(await h.sql(`SELECT count(*)::text AS n FROM epetsync.changelog`)).toEqual([{ n: before }]);

    const reused = await h.call({ method: 'POST', url: '/api/database/upload/', node: 'desk-1', payload: { ...batch, changes: [{ ...batch.changes[0], values: { id: 7000, note: 'other' } }] } });
    expect(reused.statusCode).toBe(409);
    expect(h.json<{ error: { code: string } }>(reused).error.code).toBe('BATCH_ID_REUSED');
  });

  it('round-trips every documented type exactly', async () => {
    const values = {
      id: '9007199254740993',
      owner_id: '1',
      name: 'Ménard 🐾 "quoted" \\ back',
      weight: '1234.50',
      birth: '2024-02-29',
      vaccinated: false,
      photo: 'AAEC/w==',
      notes: { weight_kg: 4.2, tags: ['a', null], nested: { ok: true } },
      uid: '0b6c7f2e-1111-4a2b-9c3d-123456789abc',
      visit_time: '09:30:00.123456',
      seen_at: '2026-11-25T09:30:00.5',
      big: '-9223372036854775808',
      score: 3.5,
      small: -32768,
      updated_at: '2026-11-25T09:30:00.000001Z',
    };
    const since = await head();
    const res = await h.call({ method: 'POST', url: '/api/database/upload/', node: 'desk-9', payload: { batch_id: `types-${engine}`, changes: [{ table: 'clinic_pet', op: 'upsert', pk: { id: values.id }, values }] } });
    expect(res.statusCode, res.body).toBe(200);
    const page = await feed(since, 'desk-2');
    expect(page.changes).toHaveLength(1);
    expect(page.changes[0]!.values).toEqual(values);
    const snap = ndjson(await h.call({ method: 'GET', url: '/api/database/download/?tables=clinic_pet' }));
    const table = snap.find((l) => l.type === 'table') as { columns: string[] };
    const row = snap.find((l) => l.type === 'row' && (l.values as unknown[])[0] === values.id) as { values: unknown[] };
    expect(Object.fromEntries(table.columns.map((c, i) => [c, row.values[i]]))).toEqual(values);
    const special = await h.call({ method: 'POST', url: '/api/database/upload/', node: 'desk-9', payload: { batch_id: `types2-${engine}`, changes: [{ table: 'clinic_pet', op: 'upsert', pk: { id: 77 }, values: { id: 77, name: 'Nan', score: 'NaN', big: 12 } }] } });
    expect(special.statusCode, special.body).toBe(200);
    expect(await h.sql(`SELECT score::text, big::text FROM clinic_pet WHERE id = 77`)).toEqual([{ score: 'NaN', big: '12' }]);
  });

  it('takes a gzip upload and carries other types as PostgreSQL text', async () => {
    const since = await head();
    const values = { id: '900', label: 'other types', counts: '{1,2,3}', span: '1 day 02:00:00', stamp: '09:30:00+02' };
    const res = await h.call({
      method: 'POST',
      url: '/api/database/upload/',
      node: 'desk-3',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
      payload: gzipSync(JSON.stringify({ batch_id: `gz-${engine}`, changes: [{ table: 'clinic_import', op: 'upsert', pk: { id: '900' }, values }] })),
    });
    expect(res.statusCode, res.body).toBe(200);
    expect((await feed(since, 'desk-2')).changes[0]!.values).toEqual({ ...values, label_len: 11 });
    // A generated column is served, and a value sent for it is ignored, not an error.
    const again = await h.call({ method: 'POST', url: '/api/database/upload/', node: 'desk-3', payload: { batch_id: `gen-${engine}`, changes: [{ table: 'clinic_import', op: 'upsert', pk: { id: '900' }, values: { id: '900', label: 'renamed', label_len: 999 } }] } });
    expect(again.statusCode, again.body).toBe(200);
    expect(await h.sql(`SELECT label_len FROM clinic_import WHERE id = 900`)).toEqual([{ label_len: 7 }]);
    await h.sql(`DELETE FROM clinic_import WHERE id = 900`);
  });

  it('loads rows in bulk without feeding them, checkpointing the last key for resume', async () => {
    const since = await head();
    const chunk1 = ['{"columns":["id","label","label_len"]}', '[1,"one",null]', '["2","two",3]', '["3","three",0]'].join('\n');
    const r1 = await h.call({ method: 'POST', url: '/api/database/bulk/?table=clinic_import&load_id=mig-1', headers: { 'content-type': 'application/x-ndjson', 'content-encoding': 'gzip' }, payload: gzipSync(chunk1) });
    expect(r1.statusCode, r1.body).toBe(200);
    expect(h.json(r1)).toEqual({ table: 'clinic_import', load_id: 'mig-1', rows: 3, total_rows: 3, last_key: ['3'] });
    const progress = await h.call({ method: 'GET', url: '/api/database/bulk/?table=clinic_import&load_id=mig-1' });
    expect(h.json(progress)).toEqual({ table: 'clinic_import', load_id: 'mig-1', total_rows: 3, last_key: ['3'] });
    const r2 = await h.call({ method: 'POST', url: '/api/database/bulk/?table=clinic_import&load_id=mig-1', headers: { 'content-type': 'application/x-ndjson' }, payload: '{"columns":["id","label"]}\n["4","four, with \\"quotes\\""]\n["5",null]\n' });
    expect(r2.statusCode).toBe(409); // label is NOT NULL: the whole chunk is refused
    expect(h.json<{ error: { code: string; details: { line: number } } }>(r2).error).toMatchObject({ code: 'CONSTRAINT_VIOLATION', details: { line: 3 } });
    const r3 = await h.call({ method: 'POST', url: '/api/database/bulk/?table=clinic_import&load_id=mig-1', headers: { 'content-type': 'application/x-ndjson' }, payload: '{"columns":["id","label"]}\n["4","four, with \\"quotes\\""]\n["5","five"]\n' });
    expect(h.json(r3)).toMatchObject({ rows: 2, total_rows: 5, last_key: ['5'] });
    expect(await h.sql(`SELECT id::text, label FROM clinic_import ORDER BY id`)).toEqual([
      { id: '1', label: 'one' },
      { id: '2', label: 'two' },
      { id: '3', label: 'three' },
      { id: '4', label: 'four, with "quotes"' },
      { id: '5', label: 'five' },
    ]);
    expect((await feed(since)).changes.filter((c) => c.table === 'clinic_import')).toEqual([]);
    const [next] = await h.sql<{ id: string }>(`INSERT INTO clinic_import (label) VALUES ('web') RETURNING id::text AS id`);
    expect(Number(next!.id)).toBeGreaterThan(5); // past every id loaded (and uploaded) so far
    const unknown = await h.call({ method: 'GET', url: '/api/database/bulk/?table=clinic_import&load_id=never' });
    expect(h.json(unknown)).toEqual({ table: 'clinic_import', load_id: 'never', total_rows: 0, last_key: null });
  });

  it('wakes a long poll within a second of a commit', async () => {
    const since = await head();
    const started = Date.now();
    const pending = h.call({ method: 'GET', url: `/api/database/download/?since=${since}&wait=20` });
    await new Promise((r) => setTimeout(r, 700));
    const committedAt = Date.now();
    await h.sql(`INSERT INTO clinic_visit (id, note) VALUES (8001, 'late')`);
    const res = await pending;
    const answeredAt = Date.now();
    expect(res.statusCode).toBe(200);
    expect(h.json<FeedBody>(res).changes.map((c) => c.pk)).toEqual([{ id: 8001 }]);
    expect(answeredAt - committedAt).toBeLessThan(1000);
    expect(committedAt - started).toBeGreaterThanOrEqual(650);
  });

  it('picks up a table the web app adds by migration, with change capture on it', async () => {
    expect(await h.server.refreshSchema()).toBe(false);
    await h.sql(`CREATE TABLE clinic_invoice (id bigserial PRIMARY KEY, total numeric(10,2) NOT NULL)`);
    await h.sql(`ALTER TABLE clinic_visit ADD COLUMN room text`);
    expect(await h.server.refreshSchema()).toBe(true);
    const info = h.json<{ tables: Array<{ name: string; columns: Array<{ name: string }> }> }>(await h.call({ method: 'GET', url: '/api/database/sync/' }));
    expect(info.tables.map((t) => t.name)).toContain('clinic_invoice');
    expect(info.tables.find((t) => t.name === 'clinic_visit')!.columns.map((c) => c.name)).toEqual(['id', 'note', 'room']);
    const since = await head();
    await h.sql(`INSERT INTO clinic_invoice (total) VALUES (99.90)`);
    await h.sql(`UPDATE clinic_visit SET room = 'B' WHERE id = 1`);
    const page = await feed(since);
    expect(page.changes.map((c) => [c.table, c.values])).toEqual([
      ['clinic_invoice', { id: '1', total: '99.90' }],
      ['clinic_visit', { id: 1, note: 'visit 1', room: 'B' }],
    ]);
  });

  it('syncs a partitioned table under its own name, not its partitions’', async () => {
    const info = h.json<{ tables: Array<{ name: string }> }>(await h.call({ method: 'GET', url: '/api/database/sync/' }));
    expect(info.tables.map((t) => t.name)).toContain('clinic_log');
    expect(info.tables.map((t) => t.name)).not.toContain('clinic_log_2026');
    const since = await head();
    await h.sql(`INSERT INTO clinic_log (id, year, entry) VALUES (1, 2026, 'partitioned')`);
    expect((await feed(since)).changes).toEqual([{ table: 'clinic_log', op: 'upsert', pk: { id: 1, year: 2026 }, values: { id: 1, year: 2026, entry: 'partitioned' }, origin: null }]);
  });

  it('answers an empty long poll when the wait runs out, with the same cursor', async () => {
    const since = await head();
    const started = Date.now();
    const res = await h.call({ method: 'GET', url: `/api/database/download/?since=${since}&wait=1` });
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(h.json<FeedBody>(res)).toMatchObject({ changes: [], cursor: since, has_more: false });
  });
});
