/**
 * The change feed after a large upload (src/server/feed.ts): the uploader's own changes are not fed
 * back, and pages holding nothing else are skipped in the same request instead of one by one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENGINES, startHarness, type Harness } from './fixture.js';

interface Page {
  changes: Array<{ table: string; op: string; pk: Record<string, unknown>; values: Record<string, unknown> | null }>;
  cursor: string;
  has_more: boolean;
  head_cursor: string;
}

describe.each(ENGINES)('change feed on %s', (engine) => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness(engine);
  });
  afterAll(async () => {
    await h?.close();
  });

  const feed = async (since: string, node: string, limit: number): Promise<Page> => h.json<Page>(await h.call({ method: 'GET', url: `/api/database/download/?since=${since}&limit=${limit}`, node }));
  const upload = async (batchId: string, from: number, count: number): Promise<void> => {
    const changes = Array.from({ length: count }, (_, i) => ({ table: 'clinic_visit', op: 'upsert', pk: { id: from + i }, values: { id: from + i, note: `desk ${from + i}` } }));
    const res = await h.call({ method: 'POST', url: '/api/database/upload/', node: 'desk-echo', payload: { batch_id: `${batchId}-${engine}`, changes } });
    expect(res.statusCode).toBe(200);
  };

  it('moves the uploader past its own large upload in one answer, and still stops at the first change of someone else', async () => {
    const start = h.json<{ head_cursor: string }>(await h.call({ method: 'GET', url: '/api/database/sync/' })).head_cursor;
    await upload('echo-1', 60_000, 1200);
    // 1,200 own entries at 100 per page: twelve pages with nothing for this node, one answer.
    const own = await feed(start, 'desk-echo', 100);
    expect(own).toMatchObject({ changes: [], has_more: false });
    expect(own.cursor).toBe(own.head_cursor);

    // Another node sees the same entries page by page, as they are.
    const other = await feed(start, 'desk-other', 100);
    expect(other.changes).toHaveLength(100);
    expect(other.has_more).toBe(true);

    // Own entries, then a web edit, then more own entries: the answer stops at the web edit.
    await upload('echo-2', 70_000, 450);
    await h.sql(`UPDATE clinic_visit SET note = 'web edit' WHERE id = 60005`);
    await upload('echo-3', 80_000, 300);
    const next = await feed(own.cursor, 'desk-echo', 100);
    expect(next.changes).toEqual([{ table: 'clinic_visit', op: 'upsert', pk: { id: 60005 }, values: { id: 60005, note: 'web edit' }, origin: null }]);
    expect(next.has_more).toBe(true);
    const rest = await feed(next.cursor, 'desk-echo', 100);
    expect(rest).toMatchObject({ changes: [], has_more: false });
    expect(rest.cursor).toBe(rest.head_cursor);
  });

  it('reads at most twenty pages of own changes per answer', async () => {
    const start = h.json<{ head_cursor: string }>(await h.call({ method: 'GET', url: '/api/database/sync/' })).head_cursor;
    await upload('echo-4', 90_000, 250);
    const first = await feed(start, 'desk-echo', 10);
    // 250 own entries at 10 per page: the answer stops after 200 with has_more, the next reads the rest.
    expect(first).toMatchObject({ changes: [], has_more: true });
    const second = await feed(first.cursor, 'desk-echo', 10);
    expect(second).toMatchObject({ changes: [], has_more: false });
    expect(second.cursor).toBe(second.head_cursor);
    const both = await feed(start, 'desk-other', 250);
    expect(both.changes.map((c) => c.pk.id)).toEqual(Array.from({ length: 250 }, (_, i) => 90_000 + i));
  });
});
