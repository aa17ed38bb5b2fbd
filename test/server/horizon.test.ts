import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSyncServer } from '../../src/server/index.js';
import { EpetsyncError } from '../../src/errors.js';
import { createTestDatabase, pgQuery, type TestDatabase } from '../helpers/pg.js';
import { FIXTURE_SQL, startHarness, type Harness } from './fixture.js';

interface FeedBody {
  changes: Array<{ table: string; op: string; pk: Record<string, unknown>; values: Record<string, unknown> | null; origin: string | null }>;
  cursor: string;
}

describe('change feed safe horizon on real PostgreSQL', () => {
  let h: Harness;
  const clients: pg.Client[] = [];
  beforeAll(async () => {
    h = await startHarness('postgres');
  });
  afterAll(async () => {
    for (const c of clients) await c.end().catch(() => {});
    await h?.close();
  });

  const client = async (): Promise<pg.Client> => {
    const c = new pg.Client({ connectionString: h.databaseUrl });
    await c.connect();
    clients.push(c);
    return c;
  };
  const head = async (): Promise<string> => h.json<{ head_cursor: string }>(await h.call({ method: 'GET', url: '/api/database/sync/' })).head_cursor;
  const feed = async (since: string, extra = ''): Promise<FeedBody> => h.json<FeedBody>(await h.call({ method: 'GET', url: `/api/database/download/?since=${since}${extra}` }));
  const ids = (page: FeedBody): unknown[] => page.changes.map((c) => c.pk.id);

  it('never skips a change that commits late with a lower sequence number', async () => {
    const since = await head();
    const a = await client();
    const b = await client();
    await a.query('BEGIN');
    await a.query(`INSERT INTO clinic_visit (id, note) VALUES (10001, 'A: written first, committed last')`);
    await b.query('BEGIN');
    await b.query(`INSERT INTO clinic_visit (id, note) VALUES (10002, 'B: written second, committed first')`);
    await b.query('COMMIT');
    const [seqs] = (await h.sql<{ a: string; b: string }>(
      `SELECT (SELECT seq FROM epetsync.changelog WHERE pk = '{"id":"10002"}')::text AS b, (SELECT count(*) FROM epetsync.changelog WHERE pk = '{"id":"10001"}')::text AS a`,
    )) as [{ a: string; b: string }];
    expect(seqs.a).toBe('0'); // A's row is not visible yet, but its sequence number is already taken

    // B is committed, but A (older, still open) holds the horizon: serving B now would let a
    // client's cursor pass A's lower sequence number and lose A's change for good.
    const early = await feed(since);
    expect(early.changes).toEqual([]);
    expect(early.cursor).toBe(since);

    // A long poll waiting now is woken by A's commit and gets both, in commit-safe order.
    const pending = h.call({ method: 'GET', url: `/api/database/download/?since=${early.cursor}&wait=10` });
    await new Promise((r) => setTimeout(r, 300));
    const committedAt = Date.now();
    await a.query('COMMIT');
    const late = h.json<FeedBody>(await pending);
    expect(Date.now() - committedAt).toBeLessThan(1000);
    expect(ids(late)).toEqual([10001, 10002]);
    expect((await feed(late.cursor)).changes).toEqual([]);
  });

  it('orders by transaction, so a later-begun transaction with an earlier sequence waits for the older one', async () => {
    const since = await head();
    const a = await client();
    const b = await client();
    await a.query('BEGIN');
    await a.query('SELECT pg_current_xact_id()'); // A takes the older transaction id
    await b.query('BEGIN');
    await b.query(`INSERT INTO clinic_visit (id, note) VALUES (10011, 'B: lower seq, newer txid')`);
    await a.query(`INSERT INTO clinic_visit (id, note) VALUES (10012, 'A: higher seq, older txid')`);
    await b.query('COMMIT');
    expect((await feed(since)).changes).toEqual([]);
    await a.query('COMMIT');
    const page = await feed(since);
    expect(ids(page)).toEqual([10012, 10011]);
    // Read one change at a time: the cursor after the first must still lead to the second.
    const first = await feed(since, '&limit=1');
    expect(ids(first)).toEqual([10012]);
    expect(ids(await feed(first.cursor, '&limit=1'))).toEqual([10011]);
  });

  it('is not held back by a transaction open in another database of the same server', async () => {
    const other = await createTestDatabase('eps_other');
    const stranger = new pg.Client({ connectionString: other.url });
    await stranger.connect();
    try {
      await stranger.query('BEGIN');
      await stranger.query('SELECT pg_current_xact_id()');
      const since = await head();
      await h.sql(`INSERT INTO clinic_visit (id, note) VALUES (10021, 'not held back')`);
      expect(ids(await feed(since))).toEqual([10021]);
      await stranger.query('ROLLBACK');
    } finally {
      await stranger.end();
      await other.drop();
    }
  });

  it('survives its LISTEN and pooled connections being killed, and long polls still wake', async () => {
    const admin = await client();
    const killed = await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'epetsync-serve'`);
    expect(killed.rowCount).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 300));
    const since = await head();
    const pending = h.call({ method: 'GET', url: `/api/database/download/?since=${since}&wait=10` });
    await new Promise((r) => setTimeout(r, 500));
    const committedAt = Date.now();
    await admin.query(`INSERT INTO clinic_visit (id, note) VALUES (10031, 'after the kill')`);
    const page = h.json<FeedBody>(await pending);
    expect(Date.now() - committedAt).toBeLessThan(1000);
    expect(ids(page)).toEqual([10031]);
  });

  it('applies concurrent batches that lock the same rows in opposite order (a deadlock victim is retried)', async () => {
    const change = (id: number, note: string) => ({ table: 'clinic_visit', op: 'upsert', pk: { id }, values: { id, note } });
    for (let round = 0; round < 3; round += 1) {
      const [one, two] = await Promise.all([
        h.call({ method: 'POST', url: '/api/database/upload/', node: 'desk-a', payload: { batch_id: `dl-a-${round}`, changes: [change(11, 'a'), change(12, 'a'), change(13, 'a'), change(14, 'a')] } }),
        h.call({ method: 'POST', url: '/api/database/upload/', node: 'desk-b', payload: { batch_id: `dl-b-${round}`, changes: [change(14, 'b'), change(13, 'b'), change(12, 'b'), change(11, 'b')] } }),
      ]);
      expect([one.statusCode, two.statusCode], `${one.body} ${two.body}`).toEqual([200, 200]);
    }
    const notes = await h.sql<{ note: string }>(`SELECT DISTINCT note FROM clinic_visit WHERE id BETWEEN 11 AND 14`);
    expect(notes).toHaveLength(1); // one batch wholly after the other
  });

  it('captures writes the web app makes directly over its own connection, including a key change', async () => {
    const since = await head();
    const web = await client();
    await web.query(`INSERT INTO clinic_owner (name, email) VALUES ('Django ORM', 'orm@example.org')`);
    await web.query(`UPDATE clinic_visit SET id = 20001 WHERE id = 10001`);
    const page = await feed(since);
    expect(page.changes.map((c) => [c.table, c.op, c.pk.id])).toEqual([
      ['clinic_owner', 'upsert', page.changes[0]!.pk.id],
      ['clinic_visit', 'delete', 10001],
      ['clinic_visit', 'upsert', 20001],
    ]);
    expect(page.changes[0]).toMatchObject({ values: { name: 'Django ORM' }, origin: null });
  });
  it('reports the newest change as the head, comparing sequence numbers as numbers, not text', async () => {
    // 150 changes in one transaction take sequence numbers across a digit boundary (…99, 100…),
    // where text order would put "99" above "100" and report a head 50 changes behind.
    await h.sql(`INSERT INTO clinic_visit (id, note) SELECT g, 'digits ' || g FROM generate_series(70001, 70150) g`);
    const [newest] = (await h.sql<{ txid: string; seq: string }>(
      `SELECT txid::text AS txid, seq::text AS seq FROM epetsync.changelog c ORDER BY c.txid DESC, c.seq DESC LIMIT 1`,
    )) as [{ txid: string; seq: string }];
    expect(await head()).toBe(`c1.${newest.txid}.${newest.seq}`);
  });
});

describe('change capture install', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase('eps_inst');
    for (const sql of FIXTURE_SQL) await pgQuery(db.url, sql);
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('refuses --no-install on a database without the epetsync schema', async () => {
    const error = await startSyncServer({ databaseUrl: db.url, port: 0, install: false }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EpetsyncError);
    expect((error as EpetsyncError).code).toBe('EPS_SERVE_DATABASE');
  });

  it('installs idempotently when two servers start together, and drops triggers of tables leaving the scope', async () => {
    const [one, two] = await Promise.all([
      startSyncServer({ databaseUrl: db.url, port: 0 }),
      startSyncServer({ databaseUrl: db.url, port: 0 }),
    ]);
    await one.close();
    await two.close();
    const count = async () => (await pgQuery<{ n: string }>(db.url, `SELECT count(*)::text AS n FROM pg_trigger WHERE tgname = 'epetsync_capture' AND tgparentid = 0`))[0]!.n;
    expect(await count()).toBe('6');
    const narrowed = await startSyncServer({ databaseUrl: db.url, port: 0, exclude: ['clinic_visit'] });
    expect(narrowed.schema.byName.has('clinic_visit')).toBe(false);
    await narrowed.close();
    expect(await count()).toBe('5');
    const again = await startSyncServer({ databaseUrl: db.url, port: 0, install: false });
    await again.close();
    const only = await startSyncServer({ databaseUrl: db.url, port: 0, include: ['clinic_owner', 'django_session'], install: false });
    expect(only.schema.tables.map((t) => t.name)).toEqual(['clinic_owner']);
    expect(only.schema.unsynced).toEqual(expect.arrayContaining([{ name: 'clinic_pet', reason: 'not included' }, { name: 'django_session', reason: 'excluded' }]));
    await only.close();
  });
});
