/**
 * The upload apply path (src/server/upload.ts) on a large batch: runs of changes to one table are
 * applied with one statement each, and every promise of the change-by-change path still holds
 * (order, refused change named by index and nothing applied, rows twice in a batch, conflicts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENGINES, startHarness, type Harness } from './fixture.js';

interface UploadBody {
  replayed: boolean;
  applied: number;
  conflicts: number;
  results: Array<{ index: number; status: string; resolution?: string; server_values?: Record<string, unknown> | null }>;
}

type Change = { table: string; op: 'upsert' | 'delete'; pk: Record<string, unknown>; values?: Record<string, unknown> };

describe.each(ENGINES)('upload apply on %s', (engine) => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness(engine);
  });
  afterAll(async () => {
    await h?.close();
  });

  const upload = (batchId: string, changes: Change[], baseCursor?: string) =>
    h.call({ method: 'POST', url: '/api/database/upload/', node: 'desk-big', payload: { batch_id: `${batchId}-${engine}`, ...(baseCursor ? { base_cursor: baseCursor } : {}), changes } });
  const head = async (): Promise<string> => h.json<{ head_cursor: string }>(await h.call({ method: 'GET', url: '/api/database/sync/' })).head_cursor;
  const count = async (sql: string): Promise<number> => Number((await h.sql<{ n: string }>(`SELECT (${sql})::text AS n`))[0]!.n);

  it('applies a large batch across tables in order: parents, children, composite keys, then deletes children-first', async () => {
    const owners: Change[] = Array.from({ length: 1500 }, (_, i) => ({
      table: 'clinic_owner',
      op: 'upsert',
      pk: { id: String(10_000 + i) },
      values: { id: String(10_000 + i), name: `Owner ${i} 'quoted' \\ "and" {braces}, commas`, email: i % 2 ? null : `o${i}@example.org`, updated_at: '2026-11-25T10:00:00Z' },
    }));
    const pets: Change[] = Array.from({ length: 1500 }, (_, i) => ({ table: 'clinic_pet', op: 'upsert', pk: { id: String(20_000 + i) }, values: { id: String(20_000 + i), owner_id: String(10_000 + i), name: `Pet ${i}` } }));
    const tags: Change[] = Array.from({ length: 300 }, (_, i) => ({ table: 'clinic_tag', op: 'upsert', pk: { pet_id: String(20_000 + i), tag: `t,${i}` }, values: { pet_id: String(20_000 + i), tag: `t,${i}` } }));
    const first = await upload('big-1', [...owners, ...pets, ...tags]);
    expect(first.statusCode).toBe(200);
    expect(h.json<UploadBody>(first)).toMatchObject({ replayed: false, applied: 3300, conflicts: 0 });
    expect(h.json<UploadBody>(first).results.every((r, i) => r.index === i && r.status === 'applied')).toBe(true);
    expect(await h.sql(`SELECT name, email FROM clinic_owner WHERE id IN (10000, 10001) ORDER BY id`)).toEqual([
      { name: `Owner 0 'quoted' \\ "and" {braces}, commas`, email: 'o0@example.org' },
      { name: `Owner 1 'quoted' \\ "and" {braces}, commas`, email: null },
    ]);
    expect(await count(`SELECT count(*) FROM clinic_pet WHERE id >= 20000`)).toBe(1500);
    expect(await count(`SELECT count(*) FROM clinic_tag`)).toBe(300);
    // Every change is in the feed's changelog, marked as this node's (so it is not echoed back).
    expect(await count(`SELECT count(*) FROM epetsync.changelog WHERE origin = 'desk-big'`)).toBe(3300);
    // The sequence moved past the uploaded ids: the web app's next owner does not take one.
    const [web] = await h.sql<{ id: string }>(`INSERT INTO clinic_owner (name) VALUES ('web after upload') RETURNING id::text AS id`);
    expect(Number(web!.id)).toBeGreaterThan(11_499);

    // Deletes children-first, then an update of a surviving owner, all in one batch.
    const deletes: Change[] = [
      ...tags.map((t) => ({ table: t.table, op: 'delete' as const, pk: t.pk })),
      ...pets.slice(0, 300).map((p) => ({ table: p.table, op: 'delete' as const, pk: p.pk })),
      ...owners.slice(0, 300).map((o) => ({ table: o.table, op: 'delete' as const, pk: o.pk })),
      { table: 'clinic_owner', op: 'upsert', pk: { id: '11499' }, values: { id: '11499', name: 'renamed' } },
    ];
    const second = await upload('big-2', deletes);
    expect(h.json<UploadBody>(second)).toMatchObject({ applied: 901, conflicts: 0 });
    expect(await count(`SELECT count(*) FROM clinic_tag`)).toBe(0);
    expect(await count(`SELECT count(*) FROM clinic_pet WHERE id >= 20000`)).toBe(1200);
    expect(await count(`SELECT count(*) FROM clinic_owner WHERE id BETWEEN 10000 AND 11499`)).toBe(1200);
    expect(await h.sql(`SELECT name FROM clinic_owner WHERE id = 11499`)).toEqual([{ name: 'renamed' }]);
  });

  it('names the refused change of a large batch by its index and applies nothing of it', async () => {
    const before = await count(`SELECT count(*) FROM clinic_owner`);
    const changes: Change[] = Array.from({ length: 800 }, (_, i) => ({ table: 'clinic_owner', op: 'upsert', pk: { id: String(30_000 + i) }, values: { id: String(30_000 + i), name: `Refused batch ${i}`, email: `r${i}@example.org` } }));
    // Change 517 takes an email another row already holds (UNIQUE).
    changes[517]!.values!.email = 'ana@example.org';
    const res = await upload('refused', changes);
    expect(res.statusCode).toBe(409);
    expect(h.json<{ error: { code: string; details: { index: number } } }>(res).error).toMatchObject({ code: 'CONSTRAINT_VIOLATION', details: { index: 517 } });
    expect(await count(`SELECT count(*) FROM clinic_owner`)).toBe(before);
    expect(await count(`SELECT count(*) FROM epetsync.batches WHERE batch_id = 'refused-${engine}'`)).toBe(0);
  });

  it('applies a row that appears twice in a batch in order, the later change winning', async () => {
    const res = await upload('twice', [
      { table: 'clinic_visit', op: 'upsert', pk: { id: 41 }, values: { id: 41, note: 'first' } },
      { table: 'clinic_visit', op: 'upsert', pk: { id: 42 }, values: { id: 42, note: 'other' } },
      { table: 'clinic_visit', op: 'upsert', pk: { id: 41 }, values: { id: 41, note: 'second' } },
      { table: 'clinic_visit', op: 'delete', pk: { id: 42 } },
    ]);
    expect(h.json<UploadBody>(res)).toMatchObject({ applied: 4, conflicts: 0 });
    expect(await h.sql(`SELECT id, note FROM clinic_visit WHERE id IN (41, 42)`)).toEqual([{ id: 41, note: 'second' }]);
  });

  it('reports the one conflicting change of a large batch, applies the rest, and replays the same answer', async () => {
    const seed: Change[] = Array.from({ length: 600 }, (_, i) => ({ table: 'clinic_visit', op: 'upsert', pk: { id: 50_000 + i }, values: { id: 50_000 + i, note: 'v1' } }));
    await upload('conflict-seed', seed);
    const base = await head();
    await h.sql(`UPDATE clinic_visit SET note = 'web edit' WHERE id = 50321`);
    const edits = seed.map((c) => ({ ...c, values: { ...c.values, note: 'desk edit' } }));
    const res = await upload('conflict', edits, base);
    const body = h.json<UploadBody>(res);
    expect(body).toMatchObject({ applied: 599, conflicts: 1 });
    expect(body.results.filter((r) => r.status === 'conflict')).toEqual([
      expect.objectContaining({ index: 321, resolution: 'server-wins', server_values: { id: 50321, note: 'web edit' } }),
    ]);
    expect(await h.sql(`SELECT note, count(*)::int AS n FROM clinic_visit WHERE id >= 50000 GROUP BY note ORDER BY note`)).toEqual([
      { note: 'desk edit', n: 599 },
      { note: 'web edit', n: 1 },
    ]);
    const replay = await upload('conflict', edits, base);
    expect(h.json<UploadBody>(replay)).toEqual({ ...body, replayed: true });
  });
});
