import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSyncServer, type SyncServer } from '../../src/server/index.js';
import { createTestDatabase, pgQuery, type TestDatabase } from '../helpers/pg.js';
import { createSyncAccount } from '../helpers/server.js';
import { FIXTURE_SQL } from './fixture.js';

/** A TCP relay in front of the real PostgreSQL that the test can cut and restore, like a network outage. */
class Relay {
  private server: Server | undefined;
  private sockets = new Set<Socket>();
  port = 0;
  constructor(private readonly target: { host: string; port: number }) {}

  async open(): Promise<void> {
    this.server = createServer((client) => {
      const upstream = createConnection(this.target);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => this.server!.listen(this.port, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  async cut(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }
}

describe('PostgreSQL outage', () => {
  let db: TestDatabase;
  let relay: Relay;
  let server: SyncServer;
  let token: string;
  beforeAll(async () => {
    db = await createTestDatabase('eps_outage');
    for (const sql of FIXTURE_SQL) await pgQuery(db.url, sql);
    await createSyncAccount(db.url, 'sync', 'pw');
    const url = new URL(db.url);
    relay = new Relay({ host: url.hostname, port: Number(url.port || 5432) });
    await relay.open();
    url.port = String(relay.port);
    server = await startSyncServer({ databaseUrl: url.toString(), port: 0 });
    token = (await server.app.inject({ method: 'POST', url: '/api/auth/token/', payload: { username: 'sync', password: 'pw' } })).json<{ token: string }>().token;
  });
  afterAll(async () => {
    await server?.close();
    await relay?.cut();
    await db?.drop();
  });

  it('answers 503 DATABASE_UNAVAILABLE with Retry-After while PostgreSQL is away, and recovers when it is back', async () => {
    const auth = { authorization: `Bearer ${token}` };
    expect((await server.app.inject({ method: 'GET', url: '/api/database/sync/', headers: auth })).statusCode).toBe(200);
    await relay.cut();
    const ready = await server.app.inject({ method: 'GET', url: '/readyz' });
    expect(ready.statusCode).toBe(503);
    expect(ready.json()).toEqual({ status: 'unavailable' });
    expect(ready.headers['retry-after']).toBe('5');
    const feed = await server.app.inject({ method: 'GET', url: '/api/database/download/?since=c1.0.0', headers: auth });
    expect(feed.statusCode).toBe(503);
    expect(feed.json<{ error: { code: string } }>().error.code).toBe('DATABASE_UNAVAILABLE');
    expect(feed.headers['retry-after']).toBe('5');
    expect((await server.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);

    await relay.open();
    const back = await server.app.inject({ method: 'GET', url: '/readyz' });
    expect(back.statusCode).toBe(200);
    expect((await server.app.inject({ method: 'GET', url: '/api/database/download/?since=c1.0.0', headers: auth })).statusCode).toBe(200);
  });
});

describe('the LISTEN connection', () => {
  let db: TestDatabase;
  let server: SyncServer;
  const uncaught: unknown[] = [];
  const onUncaught = (error: unknown): void => {
    uncaught.push(error);
  };
  beforeAll(async () => {
    db = await createTestDatabase('eps_listen');
    for (const sql of FIXTURE_SQL) await pgQuery(db.url, sql);
    server = await startSyncServer({ databaseUrl: db.url, port: 0 });
    process.on('uncaughtException', onUncaught);
  });
  afterAll(async () => {
    process.off('uncaughtException', onUncaught);
    await server?.close();
    await db?.drop();
  });

  const listener = async (): Promise<number | undefined> =>
    (await pgQuery<{ pid: number }>(db.url, `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'epetsync-serve' AND query ILIKE 'LISTEN%'`))[0]?.pid;

  it('listens again on a fresh connection when an administrator terminates it, without crashing the server', async () => {
    for (let round = 0; round < 3; round += 1) {
      let pid: number | undefined;
      for (let i = 0; i < 100 && pid === undefined; i += 1) {
        pid = await listener();
        if (pid === undefined) await new Promise((r) => setTimeout(r, 50));
      }
      expect(pid, `round ${round}: no LISTEN connection`).toBeDefined();
      await pgQuery(db.url, 'SELECT pg_terminate_backend($1::int)', [pid]);
      let next: number | undefined;
      for (let i = 0; i < 100 && (next === undefined || next === pid); i += 1) {
        await new Promise((r) => setTimeout(r, 50));
        next = await listener();
      }
      expect(next, `round ${round}: the server did not LISTEN again`).toBeDefined();
      expect(next).not.toBe(pid);
    }
    expect(uncaught).toEqual([]);
  });

  it('does not crash the server when its database is dropped under it (the connection fails again while listening anew)', async () => {
    await pgQuery(db.url.replace(/\/[^/]+$/, '/postgres'), `DROP DATABASE IF EXISTS "${db.name}" WITH (FORCE)`);
    // Several reconnect attempts fail (the database is gone) before the server is closed.
    await new Promise((r) => setTimeout(r, 3000));
    expect(uncaught).toEqual([]);
  });
});

