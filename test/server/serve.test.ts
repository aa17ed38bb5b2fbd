import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, pgQuery, type TestDatabase } from '../helpers/pg.js';
import { runCli } from '../helpers/cli.js';
import { createSyncAccount, loginToken, startServeProcess } from '../helpers/server.js';
import { FIXTURE_SQL } from './fixture.js';

describe('epetsync serve (the built binary)', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase('eps_serve');
    for (const sql of FIXTURE_SQL) await pgQuery(db.url, sql);
    await createSyncAccount(db.url, 'frontdesk', 'open sesame');
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('serves PostgreSQL on an ephemeral port, syncs a round trip and stops gracefully on SIGTERM', async () => {
    const server = await startServeProcess({ databaseUrl: db.url, args: ['--conflict-policy', 'client-wins'] });
    try {
      expect(server.output().stdout).toBe(`Listening on http://127.0.0.1:${server.port}\n`);
      const token = await loginToken(server.url, 'frontdesk', 'open sesame');
      const auth = { authorization: `Bearer ${token}`, 'x-epetsync-node': 'desk-7' };
      const info = (await (await fetch(`${server.url}/api/database/sync/`, { headers: auth })).json()) as { engine: string; conflict_policy: string; head_cursor: string };
      expect(info).toMatchObject({ engine: 'postgres', conflict_policy: 'client-wins' });

      const up = await fetch(`${server.url}/api/database/upload/`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ batch_id: 'desk-7:1', changes: [{ table: 'clinic_owner', op: 'upsert', pk: { id: '70' }, values: { id: '70', name: 'From desk 7' } }] }),
      });
      expect(up.status).toBe(200);
      expect(up.headers.get('x-request-id')).toMatch(/^req-/);
      const feed = (await (await fetch(`${server.url}/api/database/download/?since=${info.head_cursor}`, { headers: { authorization: auth.authorization, 'x-epetsync-node': 'web-1' } })).json()) as { changes: Array<{ origin: string; values: { name: string } }> };
      expect(feed.changes).toEqual([expect.objectContaining({ origin: 'desk-7', values: expect.objectContaining({ name: 'From desk 7' }) })]);

      // Over real HTTP (not inject): a snapshot streams to its end line, gzip-encoded on the wire.
      const snap = await fetch(`${server.url}/api/database/download/?tables=clinic_visit`, { headers: { ...auth, 'accept-encoding': 'gzip' } });
      expect(snap.headers.get('content-encoding')).toBe('gzip');
      const lines = (await snap.text()).trim().split('\n').map((l) => JSON.parse(l) as { type: string; rows?: number });
      expect(lines.at(-1)).toMatchObject({ type: 'end', rows: 2500 });
      // ...and a long poll waits for its time when nothing changes, then wakes on a commit.
      const head2 = ((await (await fetch(`${server.url}/api/database/sync/`, { headers: auth })).json()) as { head_cursor: string }).head_cursor;
      const idleStart = Date.now();
      const idle = (await (await fetch(`${server.url}/api/database/download/?since=${head2}&wait=1.5`, { headers: auth })).json()) as { changes: unknown[] };
      expect(Date.now() - idleStart).toBeGreaterThanOrEqual(1400);
      expect(idle.changes).toEqual([]);
      const waking = fetch(`${server.url}/api/database/download/?since=${head2}&wait=20`, { headers: auth });
      await new Promise((r) => setTimeout(r, 400));
      const committedAt = Date.now();
      await pgQuery(db.url, `INSERT INTO clinic_visit (id, note) VALUES (5001, 'over http')`);
      const woke = (await (await waking).json()) as { changes: Array<{ pk: unknown }> };
      expect(Date.now() - committedAt).toBeLessThan(1000);
      expect(woke.changes.map((c) => c.pk)).toEqual([{ id: 5001 }]);

      // A long poll in flight when the signal comes is answered, not cut off.
      const polling = fetch(`${server.url}/api/database/download/?since=${info.head_cursor}&wait=30`, { headers: auth });
      await new Promise((r) => setTimeout(r, 300));
      const stoppedAt = Date.now();
      const code = await server.stop();
      expect(code).toBe(0);
      expect((await polling).status).toBe(200);
      expect(Date.now() - stoppedAt).toBeLessThan(10_000);
    } finally {
      await server.stop();
    }
  });

  it('prints the listening event as JSON with --json and runs on a throwaway embedded database', async () => {
    const server = await startServeProcess({ memory: true, args: ['--json'] });
    try {
      const first = server.output().stdout.split('\n')[0]!;
      expect(JSON.parse(first)).toEqual({ event: 'listening', url: server.url });
      const health = await fetch(`${server.url}/healthz`);
      expect(await health.json()).toEqual({ status: 'ok' });
      const denied = await fetch(`${server.url}/api/database/sync/`);
      expect(denied.status).toBe(401);
    } finally {
      expect(await server.stop()).toBe(0);
    }
    const result = JSON.parse(server.output().stdout.split('\n').slice(1).join('\n')) as { ok: boolean; result: { engine: string; stopped: boolean } };
    expect(result).toMatchObject({ ok: true, result: { engine: 'pglite', stopped: true } });
  });

  it('keeps the embedded database in .epetsync/pgdata under the working folder by default, and reopens it', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'eps-serve-'));
    try {
      const first = await startServeProcess({ memory: false, cwd });
      expect(existsSync(join(cwd, '.epetsync', 'pgdata', 'PG_VERSION'))).toBe(true);
      // PGlite has no lock of its own: a second server on the same folder is refused, not let in to corrupt it.
      const second = await runCli(['serve', '--port', '0'], { cwd, env: { DATABASE_URL: '' }, timeoutMs: 30_000 });
      expect(second.code).toBe(7);
      expect(second.stderr).toContain(`is in use by process ${first.child.pid}`);
      expect(await first.stop()).toBe(0);
      expect(existsSync(join(cwd, '.epetsync', 'pgdata', 'epetsync.pid'))).toBe(false);
      const reopened = await startServeProcess({ memory: false, cwd });
      expect((await fetch(`${reopened.url}/readyz`)).status).toBe(200);
      expect(await reopened.stop()).toBe(0);
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  });
});
