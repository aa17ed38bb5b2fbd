/**
 * RemoteDatabaseClient against the real sync server (startSyncServer) over real PostgreSQL, with
 * the TCP fault proxy in between for refused connections, resets mid-body and slow headers.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { RemoteDatabaseClient, readState, writeState, type RemoteClientOptions, type SnapshotEvent } from '../../src/client/index.js';
import { AuthError, ConnectionError } from '../../src/errors.js';
import { createLogger } from '../../src/logger.js';
import { redactText } from '../../src/redact.js';
import { createAccount } from '../../src/server/auth/index.js';
import { startSyncServer, type SyncServer } from '../../src/server/index.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { createTestDatabase, pgQuery, type TestDatabase } from '../helpers/pg.js';

const USER = 'drsmith';
const PASSWORD = 'Vet-Pa55word-for-tests';
const OWNERS = 3000;
const FAST_RETRY = { retries: 3, baseDelayMs: 50, maxDelayMs: 200 };

let db: TestDatabase;
let server: SyncServer;
let proxy: FaultProxy;
let dir: string;
let stateFile: string;

beforeAll(async () => {
  db = await createTestDatabase('epsclient');
  await pgQuery(db.url, `CREATE TABLE clinic_owner (id bigserial PRIMARY KEY, name text NOT NULL, email text)`);
  await pgQuery(db.url, `CREATE TABLE clinic_pet (id bigserial PRIMARY KEY, owner_id bigint NOT NULL REFERENCES clinic_owner(id), name varchar(100) NOT NULL)`);
  await pgQuery(db.url, `CREATE TABLE clinic_visit (id bigint PRIMARY KEY, pet_name text NOT NULL, notes text)`);
  await pgQuery(db.url, `INSERT INTO clinic_owner (name, email) SELECT 'Owner ' || g || ' Ménard 🐾', CASE WHEN g % 3 = 0 THEN NULL ELSE 'o' || g || '@example.org' END FROM generate_series(1, ${OWNERS}) g`);
  await pgQuery(db.url, `INSERT INTO clinic_pet (owner_id, name) VALUES (1, 'Rex'), (2, 'Tom')`);
  server = await startSyncServer({ databaseUrl: db.url, port: 0 });
  await createAccount(server.db, USER, PASSWORD);
  proxy = await startFaultProxy(server.port);
}, 60_000);

afterAll(async () => {
  await proxy?.close();
  await server?.close();
  await db?.drop();
});

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'eps-client-int-'));
  stateFile = join(dir, '.epetsync', 'state.json');
  proxy.clear();
  return () => rmSync(dir, { recursive: true, force: true });
});

function client(options: Partial<RemoteClientOptions> = {}): RemoteDatabaseClient {
  return new RemoteDatabaseClient({ url: server.url, username: USER, password: PASSWORD, nodeId: 'desk-1', stateFile, retries: FAST_RETRY, ...options });
}

async function collect(iterable: AsyncIterable<SnapshotEvent>): Promise<SnapshotEvent[]> {
  const out: SnapshotEvent[] = [];
  for await (const e of iterable) out.push(e);
  return out;
}

async function caught(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => new Error('expected a failure'),
    (e: unknown) => e,
  );
}

describe('RemoteDatabaseClient against the real server', () => {
  it('discovers the API from the discovery document and caches it with the server identity', async () => {
    const c = client();
    const found = await c.discover();
    expect(found.source).toBe('discovery');
    expect(found.base).toBe(`${server.url}/api/database/`);
    expect(found.serverIdentity).toEqual({ service: 'epetsync', protocol: 1, serverVersion: expect.any(String) });
    expect(readState(stateFile).endpoint?.endpoints.sync).toBe('/api/database/sync/');
    await c.close();
  });

  it('obtains a token with username and password, caches it 0600 and reuses it', async () => {
    const c = client();
    const first = await c.authenticate();
    expect(first.source).toBe('login');
    expect(Date.parse(first.expiresAt!)).toBeGreaterThan(Date.now() + 3600_000);
    const saved = readState(stateFile).token!;
    expect(saved.username).toBe(USER);
    expect(statSync(stateFile).mode & 0o777).toBe(0o600);
    expect(redactText(`token=${saved.value}`)).toBe('token=[REDACTED]');
    await c.close();
    const again = client();
    expect((await again.authenticate()).source).toBe('cache');
    await again.info();
    await again.close();
  });

  it('shares one discovery and one login between concurrent calls', async () => {
    const tokensBefore = await pgQuery<{ n: number }>(db.url, 'SELECT count(*)::int AS n FROM epetsync.tokens');
    const c = client({ nodeId: 'desk-many' });
    const answers = await Promise.all([c.info(), c.info(), c.changesSince('c1.0.0', { limit: 1 }), c.info()]);
    expect(answers).toHaveLength(4);
    const tokensAfter = await pgQuery<{ n: number }>(db.url, 'SELECT count(*)::int AS n FROM epetsync.tokens');
    expect(tokensAfter[0]!.n - tokensBefore[0]!.n).toBe(1);
    await c.close();
  });

  it('returns validated server info with the synced tables and this node', async () => {
    const c = client({ nodeId: 'desk-info' });
    await c.changesSince('c1.0.0', { limit: 1 });
    const info = await c.info();
    expect(info.protocol).toBe(1);
    expect(info.tables.map((t) => t.name)).toEqual(expect.arrayContaining(['clinic_owner', 'clinic_pet', 'clinic_visit']));
    expect(info.tables.findIndex((t) => t.name === 'clinic_owner')).toBeLessThan(info.tables.findIndex((t) => t.name === 'clinic_pet'));
    expect(info.client?.node_id).toBe('desk-info');
    await c.close();
  });

  it('streams a snapshot: begin cursor, table headers, every row once, end', async () => {
    const c = client();
    const events = await collect(c.snapshot(['clinic_owner', 'clinic_pet']));
    expect(events[0]).toMatchObject({ type: 'begin', cursor: expect.any(String) });
    expect(events[1]).toEqual({ type: 'table', table: 'clinic_owner', columns: ['id', 'name', 'email'], primaryKey: ['id'] });
    const ownerRows = events.filter((e) => e.type === 'row' && e.table === 'clinic_owner');
    expect(ownerRows).toHaveLength(OWNERS);
    expect(ownerRows[0]).toEqual({ type: 'row', table: 'clinic_owner', values: ['1', 'Owner 1 Ménard 🐾', 'o1@example.org'] });
    expect(events.at(-1)).toEqual({ type: 'end', tables: 2, rows: OWNERS + 2, cursor: (events[0] as { cursor: string }).cursor });
    await c.close();
  });

  it('reports a snapshot of a table the server does not sync', async () => {
    const c = client();
    const error = await caught(collect(c.snapshot(['clinic_nope'])));
    expect(error).toMatchObject({ code: 'EPS_REQUEST_REJECTED', status: 400, wireCode: 'UNKNOWN_TABLE', details: { table: 'clinic_nope' } });
    await c.close();
  });

  it('uploads a batch, replays it idempotently, and keeps it out of its own feed', async () => {
    const c = client({ nodeId: 'desk-up' });
    const head = (await c.info()).head_cursor;
    const batch = {
      batch_id: 'desk-up:00000001',
      base_cursor: head,
      changes: [{ table: 'clinic_pet', op: 'upsert' as const, pk: { id: '100' }, values: { id: '100', owner_id: '1', name: 'Uploaded' } }],
    };
    const answer = await c.upload(batch);
    expect(answer).toMatchObject({ batch_id: 'desk-up:00000001', replayed: false, applied: 1, conflicts: 0, results: [{ index: 0, status: 'applied' }] });
    expect(await c.upload(batch)).toMatchObject({ replayed: true, applied: 1 });
    expect(await pgQuery(db.url, 'SELECT name FROM clinic_pet WHERE id = 100')).toEqual([{ name: 'Uploaded' }]);
    const own = await c.changesSince(head);
    expect(own.changes.filter((ch) => ch.table === 'clinic_pet')).toEqual([]);
    const other = client({ nodeId: 'desk-other' });
    const seen = await other.changesSince(head);
    expect(seen.changes).toContainEqual({ table: 'clinic_pet', op: 'upsert', pk: { id: '100' }, values: { id: '100', owner_id: '1', name: 'Uploaded' }, origin: 'desk-up' });
    await c.close();
    await other.close();
  });

  it('gzips a large upload batch', async () => {
    const c = client({ nodeId: 'desk-big' });
    const changes = Array.from({ length: 400 }, (_, i) => ({
      table: 'clinic_owner',
      op: 'upsert' as const,
      pk: { id: String(60_000 + i) },
      values: { id: String(60_000 + i), name: `Batch owner ${i} — ${'x'.repeat(40)}`, email: null },
    }));
    const answer = await c.upload({ batch_id: 'desk-big:00000001', changes });
    expect(answer).toMatchObject({ applied: 400, conflicts: 0 });
    expect(await pgQuery(db.url, 'SELECT count(*)::int AS n FROM clinic_owner WHERE id >= 60000 AND id < 60400')).toEqual([{ n: 400 }]);
    await c.close();
  });

  it('carries the change index of a rejected upload', async () => {
    const c = client();
    const error = await caught(
      c.upload({
        batch_id: 'desk-1:bad',
        changes: [
          { table: 'clinic_pet', op: 'upsert', pk: { id: '200' }, values: { id: '200', owner_id: '1', name: 'Ok' } },
          { table: 'clinic_pet', op: 'upsert', pk: { id: '201' }, values: { id: '201', owner_id: '999999', name: 'Orphan' } },
        ],
      }),
    );
    expect(error).toMatchObject({ code: 'EPS_REQUEST_REJECTED', status: 409, wireCode: 'CONSTRAINT_VIOLATION', details: { index: 1 } });
    expect(await pgQuery(db.url, 'SELECT id FROM clinic_pet WHERE id IN (200, 201)')).toEqual([]);
    await c.close();
  });

  it('wakes a long poll within a second of a commit', async () => {
    const c = client({ nodeId: 'desk-poll' });
    // Drain what earlier tests wrote, so the poll starts with nothing ready.
    let head = (await c.info()).head_cursor;
    for (let page = await c.changesSince(head, { limit: 5000 }); ; page = await c.changesSince(head, { limit: 5000 })) {
      head = page.cursor;
      if (!page.has_more) break;
    }
    const started = Date.now();
    const poll = c.changesSince(head, { wait: 20, tables: ['clinic_owner'] });
    await new Promise((r) => setTimeout(r, 400));
    await pgQuery(db.url, `INSERT INTO clinic_owner (name) VALUES ('Woken')`);
    const page = await poll;
    const elapsed = Date.now() - started;
    expect(page.changes.map((ch) => ch.values?.name)).toEqual(['Woken']);
    expect(elapsed).toBeLessThan(5000);
    await c.close();
  });

  it('stops a long poll at once when its signal aborts', async () => {
    const c = client({ nodeId: 'desk-stop' });
    const head = (await c.info()).head_cursor;
    const controller = new AbortController();
    const started = Date.now();
    const poll = caught(c.changesSince(head, { wait: 30, tables: ['clinic_visit'], signal: controller.signal }));
    setTimeout(() => controller.abort(), 200);
    expect(await poll).toMatchObject({ code: 'EPS_INTERRUPTED', exitCode: 130 });
    expect(Date.now() - started).toBeLessThan(3000);
    await c.close();
  });

  it('bulk-loads rows streamed from an async iterable and reports where the load stands', async () => {
    const c = client();
    async function* rows(from: number, to: number): AsyncGenerator<unknown[]> {
      for (let i = from; i <= to; i++) yield [String(i), `Pet ${i}`, i % 2 === 0 ? null : 'vaccinated ✓'];
    }
    const first = await c.bulkLoad('clinic_visit', rows(1, 20_000), { loadId: 'load-1', columns: ['id', 'pet_name', 'notes'] });
    expect(first).toEqual({ table: 'clinic_visit', load_id: 'load-1', rows: 20_000, total_rows: 20_000, last_key: ['20000'] });
    const second = await c.bulkLoad('clinic_visit', rows(20_001, 20_010), { loadId: 'load-1', columns: ['id', 'pet_name', 'notes'] });
    expect(second).toMatchObject({ rows: 10, total_rows: 20_010, last_key: ['20010'] });
    expect(await c.bulkStatus('clinic_visit', 'load-1')).toEqual({ table: 'clinic_visit', load_id: 'load-1', total_rows: 20_010, last_key: ['20010'] });
    expect(await c.bulkStatus('clinic_visit', 'unknown-load')).toMatchObject({ total_rows: 0, last_key: null });
    expect(await pgQuery(db.url, 'SELECT count(*)::int AS n FROM clinic_visit')).toEqual([{ n: 20_010 }]);
    await c.close();
  });

  it('reports a bulk load the server refuses, naming the line, and loads nothing', async () => {
    const c = client();
    const unknown = await caught(c.bulkLoad('clinic_nope', [['1']], { loadId: 'load-x', columns: ['id'] }));
    expect(unknown).toMatchObject({ code: 'EPS_REQUEST_REJECTED', status: 400, wireCode: 'UNKNOWN_TABLE' });
    const bad = await caught(c.bulkLoad('clinic_visit', [['900001', 'Ok', null], ['not-a-number', 'Bad', null]], { loadId: 'load-bad', columns: ['id', 'pet_name', 'notes'] }));
    expect(bad).toMatchObject({ code: 'EPS_REQUEST_REJECTED', wireCode: 'INVALID_VALUE', details: { line: 3 } });
    expect(await pgQuery(db.url, 'SELECT id FROM clinic_visit WHERE id = 900001')).toEqual([]);
    await c.close();
  });

  it('ends a bulk load with the row source\'s own error when reading rows fails', async () => {
    const c = client();
    async function* failing(): AsyncGenerator<unknown[]> {
      yield ['910001', 'Ok', null];
      throw new Error('local database went away');
    }
    const error = await caught(c.bulkLoad('clinic_visit', failing(), { loadId: 'load-fail', columns: ['id', 'pet_name', 'notes'] }));
    expect((error as Error).message).toBe('local database went away');
    expect(await pgQuery(db.url, 'SELECT id FROM clinic_visit WHERE id = 910001')).toEqual([]);
    await c.close();
  });

  it('re-discovers once when a cached endpoint answers 404', async () => {
    writeState(stateFile, {
      other: { kept: true },
      endpoint: {
        url: new URL(server.url).href,
        base: `${server.url}/old/api/database/`,
        endpoints: { sync: '/old/api/database/sync/', download: '/old/api/database/download/', upload: '/old/api/database/upload/' },
        serverIdentity: null,
        discoveredAt: '2026-01-01T00:00:00Z',
      },
    });
    const c = client();
    expect((await c.info()).protocol).toBe(1);
    const state = readState(stateFile);
    expect(state.endpoint?.base).toBe(`${server.url}/api/database/`);
    expect(state.other).toEqual({ kept: true });
    await c.close();
  });
});

describe('RemoteDatabaseClient auth failures against the real server', () => {
  it('never writes the password or a token to its log, even at trace level', async () => {
    const lines: string[] = [];
    const logger = createLogger({ terminal: new Writable({ write: (chunk: Buffer, _enc, done) => { lines.push(chunk.toString()); done(); } }), terminalLevel: 'trace' });
    const c = client({ nodeId: 'desk-log', logger });
    await c.info();
    const first = readState(stateFile).token!.value;
    await pgQuery(db.url, `UPDATE epetsync.tokens SET expires_at = now() - interval '1 second' WHERE username = $1`, [USER]);
    await c.info();
    const second = readState(stateFile).token!.value;
    const wrong = client({ nodeId: 'desk-log', logger, password: 'Another-Wrong-Pa55', stateFile: join(dir, 'other.json') });
    await caught(wrong.info());
    const text = lines.join('');
    expect(text).toContain('re-authenticating once');
    for (const secret of [PASSWORD, 'Another-Wrong-Pa55', first, second]) expect(text).not.toContain(secret);
    await c.close();
    await wrong.close();
  });

  it('reports wrong credentials without retrying or leaking the password', async () => {
    const c = client({ password: 'Wrong-Pa55word-xyz' });
    const error = await caught(c.info());
    expect(error).toBeInstanceOf(AuthError);
    expect(error).toMatchObject({ code: 'EPS_AUTH_FAILED', exitCode: 4, details: { status: 401, wire_code: 'INVALID_CREDENTIALS' } });
    expect((error as Error).message).toMatch(/^The server rejected the username and password/);
    expect(JSON.stringify(error)).not.toContain('Wrong-Pa55word-xyz');
    expect((error as AuthError).hint).toContain('remote_database.username');
    await c.close();
  });

  it('re-authenticates once when the token expires mid-session', async () => {
    const c = client({ nodeId: 'desk-exp' });
    await c.info();
    await pgQuery(db.url, `UPDATE epetsync.tokens SET expires_at = now() - interval '1 second' WHERE username = $1`, [USER]);
    const info = await c.info();
    expect(info.protocol).toBe(1);
    const live = await pgQuery<{ n: number }>(db.url, `SELECT count(*)::int AS n FROM epetsync.tokens WHERE username = $1 AND expires_at > now()`, [USER]);
    expect(live[0]!.n).toBeGreaterThanOrEqual(1);
    await c.close();
  });

  it('fails with EPS_AUTH_EXPIRED when an expired configured token cannot be renewed', async () => {
    const issuer = client();
    await issuer.authenticate();
    const token = readState(stateFile).token!.value;
    await pgQuery(db.url, `UPDATE epetsync.tokens SET expires_at = now() - interval '1 second' WHERE username = $1`, [USER]);
    const c = new RemoteDatabaseClient({ url: server.url, token, nodeId: 'desk-tok', retries: FAST_RETRY });
    const error = await caught(c.info());
    expect(error).toBeInstanceOf(AuthError);
    expect(error).toMatchObject({ code: 'EPS_AUTH_EXPIRED', details: { wire_code: 'TOKEN_EXPIRED' } });
    expect((error as Error).message).not.toContain(token);
    await issuer.close();
    await c.close();
  });
});

describe('RemoteDatabaseClient through the fault proxy', () => {
  function viaProxy(options: Partial<RemoteClientOptions> = {}): RemoteDatabaseClient {
    return client({ url: proxy.url, ...options });
  }

  it('reports a refused connection by name', async () => {
    await proxy.refuse();
    try {
      const error = await caught(viaProxy({ retries: 0 }).info());
      expect(error).toBeInstanceOf(ConnectionError);
      expect(error).toMatchObject({ code: 'EPS_CONNECT_REFUSED', exitCode: 3 });
      expect((error as Error).message).toBe(`The server 127.0.0.1:${proxy.port} refused the connection`);
      expect((error as ConnectionError).hint).toContain('server is running');
    } finally {
      await proxy.accept();
    }
  });

  it('retries a refused connection until the server is back', async () => {
    const c = viaProxy({ retries: { retries: 5, baseDelayMs: 200, maxDelayMs: 400 } });
    await c.discover();
    await proxy.refuse();
    setTimeout(() => void proxy.accept(), 500);
    expect((await c.info()).protocol).toBe(1);
    await c.close();
  });

  it('resumes a snapshot reset in the middle of its body, yielding every row exactly once', async () => {
    const logged: string[] = [];
    const logger = pino({ level: 'warn' }, new Writable({ write: (chunk: Buffer, _enc, done) => { logged.push(chunk.toString()); done(); } }));
    const c = viaProxy({ logger });
    await c.info();
    const connectionsBefore = proxy.connections();
    proxy.resetAfter(20_000);
    const events = await collect(c.snapshot(['clinic_owner', 'clinic_pet']));
    expect(proxy.connections()).toBeGreaterThan(connectionsBefore);
    expect(logged.join('')).toContain('snapshot interrupted');
    expect(logged.join('')).toContain('"after":true');
    const ids = events.filter((e) => e.type === 'row' && e.table === 'clinic_owner').map((e) => (e as { values: unknown[] }).values[0]);
    const expected = await pgQuery<{ n: number }>(db.url, 'SELECT count(*)::int AS n FROM clinic_owner');
    expect(ids).toHaveLength(expected[0]!.n);
    expect(new Set(ids).size).toBe(ids.length);
    expect(events.filter((e) => e.type === 'table').map((e) => (e as { table: string }).table)).toEqual(['clinic_owner', 'clinic_pet']);
    expect(events.filter((e) => e.type === 'begin')).toHaveLength(1);
    expect(events.at(-1)).toMatchObject({ type: 'end', tables: 2 });
    await c.close();
  });

  it('retries a reset before the first row of a snapshot without duplicating a table', async () => {
    const c = viaProxy();
    await c.info();
    proxy.resetAfter(600);
    const events = await collect(c.snapshot(['clinic_pet']));
    expect(events.filter((e) => e.type === 'table')).toHaveLength(1);
    const rows = events.filter((e) => e.type === 'row');
    expect(new Set(rows.map((e) => JSON.stringify(e))).size).toBe(rows.length);
    expect(events.at(-1)).toMatchObject({ type: 'end', tables: 1, rows: rows.length });
    await c.close();
  });

  it('retries an upload whose answer was cut off and gets the original result back, applied once', async () => {
    const c = viaProxy({ nodeId: 'desk-cut' });
    await c.info();
    proxy.resetAfter(40);
    const answer = await c.upload({
      batch_id: 'desk-cut:00000001',
      changes: [{ table: 'clinic_owner', op: 'upsert', pk: { id: '50000' }, values: { id: '50000', name: 'Cut Once' } }],
    });
    expect(answer).toMatchObject({ replayed: true, applied: 1, results: [{ index: 0, status: 'applied' }] });
    expect(await pgQuery(db.url, `SELECT count(*)::int AS n FROM clinic_owner WHERE name = 'Cut Once'`)).toEqual([{ n: 1 }]);
    await c.close();
  });

  it('reports a reset mid-body as EPS_CONNECT_RESET when retries are spent', async () => {
    const c = viaProxy({ retries: 0 });
    await c.discover();
    await c.authenticate();
    proxy.resetAfter(300);
    const error = await caught(c.info());
    expect(error).toBeInstanceOf(ConnectionError);
    expect(error).toMatchObject({ code: 'EPS_CONNECT_RESET' });
    expect((error as Error).message).toContain(`The connection to 127.0.0.1:${proxy.port} was closed`);
    await c.close();
  });

  it('times out slow headers, and succeeds when a retry is allowed', async () => {
    const slow = viaProxy({ retries: 0, requestTimeoutMs: 400 });
    await slow.discover();
    await slow.authenticate();
    proxy.delayNext(1500);
    const error = await caught(slow.info());
    expect(error).toMatchObject({ code: 'EPS_CONNECT_TIMEOUT' });
    expect((error as Error).message).toBe(`The server 127.0.0.1:${proxy.port} did not start answering in time (UND_ERR_HEADERS_TIMEOUT)`);
    await slow.close();

    const patient = viaProxy({ requestTimeoutMs: 400 });
    await patient.info();
    proxy.delayNext(1500);
    expect((await patient.info()).protocol).toBe(1);
    await patient.close();
  });

  it('times out a body that stalls (paused link)', async () => {
    const c = viaProxy({ retries: 0, requestTimeoutMs: 500 });
    await c.info();
    const iterator = c.snapshot(['clinic_owner']);
    await iterator.next();
    proxy.pause();
    const error = await caught(collect(iterator));
    proxy.resume();
    expect(error).toMatchObject({ code: 'EPS_CONNECT_TIMEOUT' });
    await c.close();
  });
});

describe('RemoteDatabaseClient TLS and DNS failures', () => {
  let tlsProxy: FaultProxy;
  let certDir: string;

  beforeAll(async () => {
    certDir = mkdtempSync(join(tmpdir(), 'eps-cert-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(certDir, 'key.pem'), '-out', join(certDir, 'cert.pem')], { stdio: 'ignore' });
    tlsProxy = await startFaultProxy(server.port, { tls: { key: readFileSync(join(certDir, 'key.pem'), 'utf8'), cert: readFileSync(join(certDir, 'cert.pem'), 'utf8') } });
  });
  afterAll(async () => {
    await tlsProxy?.close();
    rmSync(certDir, { recursive: true, force: true });
  });

  it('refuses a self-signed certificate, naming TLS and what to check, without retrying', async () => {
    const c = client({ url: tlsProxy.url });
    const before = tlsProxy.connections();
    const error = await caught(c.info());
    expect(error).toBeInstanceOf(ConnectionError);
    expect(error).toMatchObject({ code: 'EPS_CONNECT_TLS', exitCode: 3, details: { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' } });
    expect((error as Error).message).toMatch(/^TLS with 127\.0\.0\.1:\d+ failed: .*\(DEPTH_ZERO_SELF_SIGNED_CERT\)$/);
    expect((error as ConnectionError).hint).toContain('certificate');
    expect(tlsProxy.connections() - before).toBe(1);
    await c.close();
  });

  it('talks to a self-signed server with --insecure, warning about it', async () => {
    const warnings: string[] = [];
    const c = client({ url: tlsProxy.url, insecureTls: true, onWarning: (m) => warnings.push(m) });
    expect((await c.info()).protocol).toBe(1);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^TLS certificate verification is OFF/);
    await c.close();
  });

  it('names a host that does not resolve', async () => {
    const c = client({ url: 'https://no-such-host.invalid' });
    const error = await caught(c.info());
    expect(error).toMatchObject({ code: 'EPS_CONNECT_DNS', message: expect.stringMatching(/^Cannot resolve the server host name no-such-host\.invalid \((ENOTFOUND|EAI_AGAIN)\)$/) });
    await c.close();
  });
});
