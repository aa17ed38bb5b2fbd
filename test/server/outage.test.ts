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
