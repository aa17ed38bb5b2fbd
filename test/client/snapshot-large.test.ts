/**
 * A 200k-row snapshot streamed from the real `epetsync serve` (its own process, real PostgreSQL):
 * every row arrives, in key order, while this process's memory stays flat.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteDatabaseClient } from '../../src/client/index.js';
import { createSyncAccount, startServeProcess, type ServeProcess } from '../helpers/server.js';
import { createTestDatabase, pgQuery, type TestDatabase } from '../helpers/pg.js';

const ROWS = 200_000;
const RSS_BOUND_MB = 80;

let db: TestDatabase;
let serve: ServeProcess | undefined;
let dir: string;

beforeAll(async () => {
  db = await createTestDatabase('epsbig');
  await pgQuery(db.url, `CREATE TABLE clinic_record (id bigint PRIMARY KEY, pet_name text NOT NULL, weight numeric(6,2), seen_on date, notes text)`);
  await pgQuery(
    db.url,
    `INSERT INTO clinic_record SELECT g, 'Pet ' || g || ' 🐾', (g % 9000) / 100.0, date '2020-01-01' + (g % 2000),
            repeat(md5(g::text), 12) FROM generate_series(1, ${ROWS}) g`,
  );
  serve = await startServeProcess({ databaseUrl: db.url });
  await createSyncAccount(db.url, 'bulkvet', 'Big-Pa55word-tests');
  dir = mkdtempSync(join(tmpdir(), 'eps-big-'));
}, 120_000);

afterAll(async () => {
  await serve?.stop();
  await db?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('RemoteDatabaseClient snapshot of a large table', () => {
  it(`streams ${ROWS} rows with RSS growth under ${RSS_BOUND_MB} MB`, async () => {
    const client = new RemoteDatabaseClient({ url: serve!.url, username: 'bulkvet', password: 'Big-Pa55word-tests', nodeId: 'big-1', stateFile: join(dir, 'state.json') });
    await client.info();
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    let rows = 0;
    let previous = 0;
    let inOrder = true;
    let bytes = 0;
    for await (const event of client.snapshot(['clinic_record'])) {
      if (event.type !== 'row') continue;
      rows += 1;
      const id = Number(event.values[0]);
      if (id !== previous + 1) inOrder = false;
      previous = id;
      bytes += (event.values[4] as string).length;
      if (rows % 5000 === 0) peak = Math.max(peak, process.memoryUsage().rss);
    }
    peak = Math.max(peak, process.memoryUsage().rss);
    await client.close();
    const growthMb = (peak - baseline) / 1024 / 1024;
    expect(rows).toBe(ROWS);
    expect(inOrder).toBe(true);
    // The notes alone are ~77 MB: a client that kept the rows or buffered the body would blow through the bound.
    expect(bytes).toBe(ROWS * 384);
    expect(growthMb, `RSS grew ${growthMb.toFixed(1)} MB while streaming`).toBeLessThan(RSS_BOUND_MB);
  }, 120_000);
});
