import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildSyncApp } from '../../src/server/app.js';
import { listenForChanges, type ChangeSignal } from '../../src/server/notify.js';
import type { ConflictPolicy } from '../../src/server/upload.js';
import { ENGINES, startHarness, type Harness } from './fixture.js';

interface UploadBody {
  applied: number;
  conflicts: number;
  results: Array<{ index: number; status: string; resolution?: string; conflict_id?: string; server_values?: Record<string, unknown> | null }>;
}

describe.each(ENGINES)('upload conflicts on %s', (engine) => {
  let h: Harness;
  let changes: ChangeSignal;
  const apps = new Map<string, FastifyInstance>();
  beforeAll(async () => {
    h = await startHarness(engine);
    changes = await listenForChanges(h.server.db);
    for (const policy of ['server-wins', 'client-wins', 'newest-wins'] as ConflictPolicy[]) {
      apps.set(policy, await buildSyncApp({ db: h.server.db, schema: h.server.schema, changes, conflictPolicy: policy, updatedAtColumn: 'updated_at', syncPermission: 'staff' }));
    }
  });
  afterAll(async () => {
    for (const app of apps.values()) await app.close();
    await changes?.close();
    await h?.close();
  });

  let n = 0;
  /** Edits owner 1 on the web after the client's last pull, then uploads the client's edit of the same row. */
  const clash = async (policy: string, clientUpdatedAt: string, serverUpdatedAt = '2026-11-10T00:00:00Z'): Promise<{ body: UploadBody; row: { name: string } }> => {
    n += 1;
    const base = h.json<{ head_cursor: string }>(await h.call({ method: 'GET', url: '/api/database/sync/' })).head_cursor;
    await h.sql(`UPDATE clinic_owner SET name = $1, updated_at = $2 WHERE id = 1`, [`Web edit ${n}`, serverUpdatedAt]);
    const res = await h.call({
      app: apps.get(policy)!,
      method: 'POST',
      url: '/api/database/upload/',
      node: 'desk-1',
      payload: {
        batch_id: `clash-${engine}-${n}`,
        base_cursor: base,
        changes: [
          { table: 'clinic_owner', op: 'upsert', pk: { id: '1' }, values: { id: '1', name: `Desk edit ${n}`, updated_at: clientUpdatedAt } },
          { table: 'clinic_pet', op: 'upsert', pk: { id: '2' }, values: { id: '2', name: `Tom ${n}` } },
        ],
      },
    });
    expect(res.statusCode, res.body).toBe(200);
    const [row] = await h.sql<{ name: string }>(`SELECT name FROM clinic_owner WHERE id = 1`);
    return { body: h.json<UploadBody>(res), row: row! };
  };

  const recorded = async (conflictId: string) =>
    (await h.sql<Record<string, any>>(`SELECT node_id, table_name, pk, client_op, client_values, server_values, policy, resolution FROM epetsync.conflicts WHERE conflict_id = $1::bigint`, [conflictId]))[0];

  it('server-wins: keeps the server row, answers with its values and records both versions', async () => {
    const { body, row } = await clash('server-wins', '2026-11-20T00:00:00Z');
    expect(body).toMatchObject({ applied: 1, conflicts: 1 });
    expect(body.results[0]).toMatchObject({ index: 0, status: 'conflict', resolution: 'server-wins', server_values: { id: '1', name: `Web edit ${n}` } });
    expect(body.results[1]).toEqual({ index: 1, status: 'applied' });
    expect(row.name).toBe(`Web edit ${n}`);
    const c = await recorded(body.results[0]!.conflict_id!);
    expect(c).toMatchObject({ node_id: 'desk-1', table_name: 'clinic_owner', pk: { id: '1' }, client_op: 'upsert', policy: 'server-wins', resolution: 'server-wins' });
    expect(c.client_values.name).toBe(`Desk edit ${n}`);
    expect(c.server_values.name).toBe(`Web edit ${n}`);
  });

  it('client-wins: applies the client row and records both versions', async () => {
    const { body, row } = await clash('client-wins', '2026-11-01T00:00:00Z');
    expect(body.results[0]).toMatchObject({ status: 'conflict', resolution: 'client-wins' });
    expect(body.applied).toBe(2);
    expect(row.name).toBe(`Desk edit ${n}`);
    const c = await recorded(body.results[0]!.conflict_id!);
    expect(c).toMatchObject({ policy: 'client-wins', resolution: 'client-wins' });
    expect(c.server_values.name).toBe(`Web edit ${n}`);
  });

  it('newest-wins: the later updated-at wins, a tie goes to the server', async () => {
    const newer = await clash('newest-wins', '2026-11-20T00:00:00Z');
    expect(newer.body.results[0]).toMatchObject({ status: 'conflict', resolution: 'client-wins' });
    expect(newer.row.name).toBe(`Desk edit ${n}`);
    expect(await recorded(newer.body.results[0]!.conflict_id!)).toMatchObject({ policy: 'newest-wins', resolution: 'client-wins' });

    const older = await clash('newest-wins', '2026-11-05T00:00:00Z');
    expect(older.body.results[0]).toMatchObject({ status: 'conflict', resolution: 'server-wins' });
    expect(older.row.name).toBe(`Web edit ${n}`);
    expect(await recorded(older.body.results[0]!.conflict_id!)).toMatchObject({ policy: 'newest-wins', resolution: 'server-wins' });

    const tie = await clash('newest-wins', '2026-11-10T00:00:00Z');
    expect(tie.body.results[0]).toMatchObject({ resolution: 'server-wins' });
  });

  it('sees no conflict in the node’s own changes or without a base cursor', async () => {
    const base = h.json<{ head_cursor: string }>(await h.call({ method: 'GET', url: '/api/database/sync/' })).head_cursor;
    const upload = (id: string, name: string, withBase: boolean) =>
      h.call({ method: 'POST', url: '/api/database/upload/', node: 'desk-1', payload: { batch_id: `own-${engine}-${id}-${name.replace(/ /g, '_')}`, ...(withBase ? { base_cursor: base } : {}), changes: [{ table: 'clinic_owner', op: 'upsert', pk: { id }, values: { id, name } }] } });
    expect(h.json<UploadBody>(await upload('2', 'Bo one', true)).conflicts).toBe(0);
    expect(h.json<UploadBody>(await upload('2', 'Bo two', true)).conflicts).toBe(0);
    await h.sql(`UPDATE clinic_owner SET name = 'Bo web' WHERE id = 2`);
    expect(h.json<UploadBody>(await upload('2', 'Bo three', false)).conflicts).toBe(0);
    expect(h.json<UploadBody>(await upload('2', 'Bo four', true)).conflicts).toBe(1);
  });
});

describe('upload racing an uncommitted web app insert (PostgreSQL)', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness('postgres');
  });
  afterAll(async () => {
    await h?.close();
  });

  it.each([['one change', 1], ['a batch of several', 3]])('settles a desktop insert as an id collision, not an overwrite, when the web row with its id commits while the upload waits for it (%s)', async (_label, size) => {
    const { default: pg } = await import('pg');
    const base = h.json<{ head_cursor: string }>(await h.call({ method: 'GET', url: '/api/database/sync/' })).head_cursor;
    const id = 9000 + size;
    // The web app has inserted the row and not committed yet: invisible to the upload's conflict look.
    const web = new pg.Client({ connectionString: h.databaseUrl });
    await web.connect();
    try {
      await web.query('BEGIN');
      await web.query(`INSERT INTO clinic_owner (id, name) VALUES ($1, 'Web row')`, [id]);
      const changes = [
        { table: 'clinic_owner', op: 'upsert', pk: { id: String(id) }, values: { id: String(id), name: 'Desk row' } },
        ...Array.from({ length: size - 1 }, (_, i) => ({ table: 'clinic_visit', op: 'upsert', pk: { id: String(i + 1) }, values: { id: String(i + 1), note: `desk ${size}` } })),
      ];
      const upload = h.call({ method: 'POST', url: '/api/database/upload/', node: 'desk-race', payload: { batch_id: `race-${size}`, base_cursor: base, changes } });
      // The upload now waits on the uncommitted row; the web app commits.
      await new Promise((r) => setTimeout(r, 300));
      await web.query('COMMIT');
      const res = await upload;
      expect(res.statusCode, res.body).toBe(200);
      const body = h.json<UploadBody>(res);
      expect(body.results[0]).toMatchObject({ index: 0, status: 'conflict', resolution: 'server-wins', server_values: { id: String(id), name: 'Web row' } });
      expect(await h.sql(`SELECT name FROM clinic_owner WHERE id = $1`, [id])).toEqual([{ name: 'Web row' }]);
    } finally {
      await web.end();
    }
  });
});
