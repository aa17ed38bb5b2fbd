/**
 * A 200k-row snapshot streamed from the real `epetsync serve` (its own process, real PostgreSQL):
 * every row arrives, in key order, while this process's memory stays flat.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteDatabaseClient } from '../../src/client/index.js';
import { createAccount } from '../../src/server/auth/index.js';
import { openSqlDatabase } from '../../src/server/sql.js';
import { BIN } from '../helpers/cli.js';
import { createTestDatabase, pgQuery, type TestDatabase } from '../helpers/pg.js';

const ROWS = 200_000;
const RSS_BOUND_MB = 80;

let db: TestDatabase;
let child: ChildProcess | undefined;
let url: string;
let dir: string;

/** Spawns the built binary as a user would (`epetsync serve --port 0 --json`) and reads its address. */
async function spawnServe(databaseUrl: string): Promise<{ child: ChildProcess; url: string }> {
  const proc = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--database-url', databaseUrl, '--json'], {
    env: { ...process.env, NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const address = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`serve did not start in 30 s: ${stderr}`)), 30_000);
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const match = /\{"event":"listening","url":"([^"]+)"\}/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code}: ${stderr}`));
    });
  });
  return { child: proc, url: address };
}

beforeAll(async () => {
  db = await createTestDatabase('epsbig');
  await pgQuery(db.url, `CREATE TABLE clinic_record (id bigint PRIMARY KEY, pet_name text NOT NULL, weight numeric(6,2), seen_on date, notes text)`);
  await pgQuery(
    db.url,
    `INSERT INTO clinic_record SELECT g, 'Pet ' || g || ' 🐾', (g % 9000) / 100.0, date '2020-01-01' + (g % 2000),
            repeat(md5(g::text), 12) FROM generate_series(1, ${ROWS}) g`,
  );
  ({ child, url } = await spawnServe(db.url));
  const sql = await openSqlDatabase({ databaseUrl: db.url });
  try {
    await createAccount(sql, 'bulkvet', 'Big-Pa55word-tests');
  } finally {
    await sql.close();
  }
  dir = mkdtempSync(join(tmpdir(), 'eps-big-'));
}, 120_000);

afterAll(async () => {
  if (child && child.exitCode === null) {
    const exited = new Promise((r) => child!.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }
  await db?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('RemoteDatabaseClient snapshot of a large table', () => {
  it(`streams ${ROWS} rows with RSS growth under ${RSS_BOUND_MB} MB`, async () => {
    const client = new RemoteDatabaseClient({ url, username: 'bulkvet', password: 'Big-Pa55word-tests', nodeId: 'big-1', stateFile: join(dir, 'state.json') });
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
