/**
 * RemoteDatabaseClient against servers that misbehave in ways the real `epetsync serve` cannot be
 * made to: a legacy stub, malformed or hostile bodies, 503 with Retry-After, a missing first path.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RemoteDatabaseClient, RequestRejectedError, readState, type RemoteClientOptions } from '../../src/client/index.js';
import { AuthError, ConfigError, EndpointNotFoundError, ProtocolError, ServerError, UsageError } from '../../src/errors.js';
import { startFakeServer, sendJson, type FakeHandler, type FakeServer } from '../helpers/fake-server.js';

const TOKEN = 'eps_fake_token_0123456789';

function info(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    service: 'epetsync',
    protocol: 1,
    server_version: '0.1.0',
    db_type: 'postgresql',
    engine: 'postgres',
    server_time: '2026-11-25T10:15:00.123Z',
    head_cursor: 'c1.0.0',
    conflict_policy: 'server-wins',
    tables: [{ name: 'clinic_pet', primary_key: ['id'], columns: [{ name: 'id', type: 'bigint', nullable: false, default: null, max_length: null, identity: false }] }],
    unsynced_tables: [],
    endpoints: { sync: '/api/database/sync/', download: '/api/database/download/', upload: '/api/database/upload/', bulk: '/api/database/bulk/', token: '/api/auth/token/' },
    limits: { max_body_bytes: 67108864, max_batch_changes: 5000, max_wait_seconds: 60 },
    client: null,
    ...overrides,
  };
}

const unauthorized = (res: Parameters<FakeHandler>[1]): true => sendJson(res, 401, { error: { code: 'AUTH_REQUIRED', message: 'token needed', request_id: 'r1' } });

let dir: string;
let fake: FakeServer | undefined;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'eps-client-'));
});
afterEach(async () => {
  await fake?.close();
  fake = undefined;
  rmSync(dir, { recursive: true, force: true });
});

async function serve(handler: FakeHandler): Promise<FakeServer> {
  fake = await startFakeServer(handler);
  return fake;
}

function client(url: string, options: Partial<RemoteClientOptions> = {}): RemoteDatabaseClient {
  return new RemoteDatabaseClient({ url, nodeId: 'desk-1', token: TOKEN, stateFile: join(dir, 'state.json'), retries: { retries: 2, baseDelayMs: 20, maxDelayMs: 50 }, ...options });
}

/** Serves protocol routes under /api/database/ from `routes`, everything else 404. */
function apiHandler(routes: Record<string, FakeHandler>): FakeHandler {
  return (req, res, body) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path === '/.well-known/epetsync') {
      return sendJson(res, 200, { service: 'epetsync', protocol: 1, server_version: '0.1.0', api_base: '/api/database/', endpoints: info().endpoints });
    }
    const route = routes[path];
    if (!route) return false;
    if (req.headers.authorization !== `Bearer ${TOKEN}`) return unauthorized(res);
    return route(req, res, body);
  };
}

describe('RemoteDatabaseClient against a hostile server', () => {
  it('identifies the legacy Django stub and says row sync is not available there', async () => {
    const server = await serve((req, res) =>
      req.url?.startsWith('/api/database/sync') ? sendJson(res, 200, { status: 'ok', sync_method: 'full', message: 'Sync endpoint' }) : false,
    );
    const error = await client(server.url).discover().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProtocolError);
    expect(error).toMatchObject({ code: 'EPS_PROTOCOL_LEGACY_STUB', exitCode: 6 });
    expect((error as Error).message).toContain('legacy Django sync stub');
    expect((error as Error).message).toContain('row sync is not available there');
  });

  it('probes past a 404 on the first discovery candidate and caches the base that worked', async () => {
    const server = await serve((req, res) => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (path === '/vet_portal/api/database/sync/') {
        if (req.headers.authorization !== `Bearer ${TOKEN}`) return unauthorized(res);
        return sendJson(res, 200, info({ endpoints: undefined }));
      }
      return false;
    });
    const c = client(server.url);
    const found = await c.discover();
    expect(found.source).toBe('probe');
    expect(found.base).toBe(`${server.url}/vet_portal/api/database/`);
    expect(server.requests.map((r) => r.path)).toEqual([
      '/.well-known/epetsync',
      '/api/database/sync/',
      '/api/database/sync',
      '/vet_portal/api/database/sync/',
    ]);
    const state = readState(join(dir, 'state.json'));
    expect(state.endpoint?.base).toBe(found.base);
    expect(state.endpoint?.serverIdentity).toEqual({ service: 'epetsync', protocol: 1, serverVersion: '0.1.0' });
    // A second client reuses the cache: no probing at all.
    const before = server.requests.length;
    const again = await client(server.url).discover();
    expect(again.source).toBe('cache');
    expect(server.requests.length).toBe(before);
    await c.close();
  });

  it('lists every URL tried when no sync API answers', async () => {
    const server = await serve(() => false);
    const error = await client(server.url).discover().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EndpointNotFoundError);
    expect(error).toMatchObject({ code: 'EPS_ENDPOINT_NOT_FOUND', exitCode: 6 });
    const tried = (error as EndpointNotFoundError).details?.tried as string[];
    expect(tried).toHaveLength(7);
    expect(tried[0]).toBe(`${server.url}/.well-known/epetsync (404)`);
    expect(tried).toContain(`${server.url}/api/v1/database/sync (404)`);
  });

  it('honours Retry-After on a 503 and then succeeds', async () => {
    let calls = 0;
    const server = await serve(
      apiHandler({
        '/api/database/sync/': (_req, res) => {
          calls += 1;
          if (calls === 1) return sendJson(res, 503, { error: { code: 'DATABASE_UNAVAILABLE', message: 'db down', request_id: 'req-503' } }, { 'retry-after': '1' });
          return sendJson(res, 200, info());
        },
      }),
    );
    const started = Date.now();
    const answer = await client(server.url).info();
    expect(answer.head_cursor).toBe('c1.0.0');
    expect(calls).toBe(2);
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
  });

  it('waits out a rate-limited login, and refuses to wait an hour', async () => {
    let logins = 0;
    let retryAfter = '1';
    const server = await serve((req, res) => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (path === '/.well-known/epetsync') return sendJson(res, 200, { service: 'epetsync', protocol: 1, server_version: '0.1.0', endpoints: info().endpoints });
      if (path === '/api/auth/token/') {
        logins += 1;
        if (logins === 1 || retryAfter === '3600') {
          return sendJson(res, 429, { error: { code: 'RATE_LIMITED', message: 'too many attempts', request_id: 'r429' } }, { 'retry-after': retryAfter });
        }
        return sendJson(res, 200, { token: TOKEN, token_type: 'Bearer', expires_at: new Date(Date.now() + 3600_000).toISOString(), expires_in: 3600, username: 'u' });
      }
      return false;
    });
    const ok = client(server.url, { token: undefined, username: 'u', password: 'p-long-enough' });
    expect(await ok.authenticate()).toMatchObject({ source: 'login' });
    expect(logins).toBe(2);
    retryAfter = '3600';
    const limited = client(server.url, { token: undefined, username: 'u', password: 'p-long-enough', stateFile: join(dir, 'other.json') });
    const started = Date.now();
    const error = await limited.authenticate().catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(error).toMatchObject({ code: 'EPS_REQUEST_REJECTED', status: 429, wireCode: 'RATE_LIMITED', details: { retry_after_ms: 3_600_000 } });
    expect((error as Error).message).toBe('The server rejected the request to /api/auth/token/ (429 RATE_LIMITED): too many attempts (the server asks to wait 3600 s)');
    expect((error as { hint: string }).hint).toContain('wait');
  });

  it('gives up on a persistent 5xx with the request id and the remedy', async () => {
    const server = await serve(
      apiHandler({ '/api/database/sync/': (_req, res) => sendJson(res, 503, { error: { code: 'DATABASE_UNAVAILABLE', message: 'db down', request_id: 'req-77' } }, { 'retry-after': '0' }) }),
    );
    const error = await client(server.url, { retries: 1 }).info().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ServerError);
    expect(error).toMatchObject({ code: 'EPS_SERVER_ERROR', details: { request_id: 'req-77', status: 503 } });
    expect((error as Error).message).toContain('request id req-77');
    expect((error as ServerError).hint).toContain('PostgreSQL');
    expect(server.requests.filter((r) => r.path === '/api/database/sync/')).toHaveLength(2);
  });

  it('turns a malformed JSON body into a ProtocolError without retrying', async () => {
    let calls = 0;
    const server = await serve(
      apiHandler({
        '/api/database/sync/': (_req, res) => {
          calls += 1;
          res.writeHead(200, { 'content-type': 'application/json', 'x-request-id': 'req-bad' });
          res.end('{"service":"epetsync","protocol":1,');
          return true;
        },
      }),
    );
    const error = await client(server.url).info().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProtocolError);
    expect(error).toMatchObject({ code: 'EPS_PROTOCOL_MALFORMED' });
    expect((error as Error).message).toBe("The server's server info is not valid JSON (request id req-bad)");
    expect(calls).toBe(1);
  });

  it('rejects an answer that does not match the schema, naming the field', async () => {
    const server = await serve(apiHandler({ '/api/database/sync/': (_req, res) => sendJson(res, 200, info({ head_cursor: 42 })) }));
    const error = await client(server.url).info().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'EPS_PROTOCOL_MALFORMED' });
    expect((error as Error).message).toContain('head_cursor');
  });

  it('refuses a server that speaks another protocol version', async () => {
    const server = await serve(apiHandler({ '/api/database/sync/': (_req, res) => sendJson(res, 200, info({ protocol: 2 })) }));
    const error = await client(server.url).info().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'EPS_PROTOCOL_VERSION', details: { server_protocol: 2, client_protocol: 1 } });
    expect((error as Error).message).toContain('speaks sync protocol 2');
  });

  it('cuts off an answer larger than maxResponseBytes', async () => {
    const server = await serve(apiHandler({ '/api/database/sync/': (_req, res) => sendJson(res, 200, info({ padding: 'x'.repeat(200_000) })) }));
    const error = await client(server.url, { maxResponseBytes: 50_000 }).info().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'EPS_PROTOCOL_TOO_LARGE', details: { limit: 50_000 } });
  });

  it('cuts off a gzip bomb at the decompressed limit', async () => {
    const bomb = gzipSync(Buffer.alloc(20 * 1024 * 1024, 32));
    const server = await serve(
      apiHandler({
        '/api/database/sync/': (_req, res) => {
          res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': bomb.length });
          res.end(bomb);
          return true;
        },
      }),
    );
    const error = await client(server.url, { maxResponseBytes: 1024 * 1024 }).info().catch((e: unknown) => e);
    expect(bomb.length).toBeLessThan(100_000);
    expect(error).toMatchObject({ code: 'EPS_PROTOCOL_TOO_LARGE', details: { limit: 1024 * 1024 } });
  });

  it('refuses a content encoding it did not ask for', async () => {
    const server = await serve(
      apiHandler({
        '/api/database/sync/': (_req, res) => {
          res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'br' });
          res.end('xx');
          return true;
        },
      }),
    );
    const error = await client(server.url).info().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'EPS_PROTOCOL_MALFORMED', message: 'The server answered with an unsupported content encoding "br"' });
  });

  it('does not follow a redirect, and says where it pointed', async () => {
    const server = await serve(
      apiHandler({
        '/api/database/sync/': (_req, res) => {
          res.writeHead(301, { location: 'https://elsewhere.example.org/api/database/sync/' });
          res.end();
          return true;
        },
      }),
    );
    const error = await client(server.url).info().catch((e: unknown) => e);
    expect(error).toMatchObject({
      code: 'EPS_PROTOCOL_MALFORMED',
      message: 'The server redirected /api/database/sync/ to https://elsewhere.example.org/api/database/sync/; epetsync does not follow redirects',
    });
    expect(server.requests.filter((r) => r.path === '/api/database/sync/')).toHaveLength(1);
  });

  it('rejects hostile keys in change values', async () => {
    const server = await serve(
      apiHandler({
        '/api/database/download/': (_req, res) => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end('{"changes":[{"table":"clinic_pet","op":"upsert","pk":{"id":"1"},"values":{"__proto__":{"admin":true},"id":"1"},"origin":null}],"cursor":"c1.1.1","has_more":false,"head_cursor":"c1.1.1"}');
          return true;
        },
      }),
    );
    const error = await client(server.url).changesSince('c1.0.0').catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'EPS_PROTOCOL_MALFORMED' });
    expect(({} as Record<string, unknown>).admin).toBeUndefined();
  });

  it('does not trust a snapshot stream that ends without its end line', async () => {
    const server = await serve(
      apiHandler({
        '/api/database/download/': (_req, res) => {
          res.writeHead(200, { 'content-type': 'application/x-ndjson' });
          res.end('{"type":"begin","mode":"snapshot","cursor":"c1.5.5"}\n{"type":"table","table":"t","columns":["id"],"primary_key":["id"]}\n{"type":"row","values":["1"]}\n');
          return true;
        },
      }),
    );
    const seen: string[] = [];
    const error = await (async () => {
      for await (const event of client(server.url).snapshot(['t'])) seen.push(event.type);
    })().catch((e: unknown) => e);
    expect(seen).toEqual(['begin', 'table', 'row']);
    expect(error).toBeInstanceOf(ProtocolError);
    expect((error as Error).message).toContain('ended without its end line');
  });

  it('rejects a snapshot row whose values do not match the columns', async () => {
    const server = await serve(
      apiHandler({
        '/api/database/download/': (_req, res) => {
          res.writeHead(200, { 'content-type': 'application/x-ndjson' });
          res.end('{"type":"begin","mode":"snapshot","cursor":"c1.5.5"}\n{"type":"table","table":"t","columns":["id","name"],"primary_key":["id"]}\n{"type":"row","values":["1"]}\n');
          return true;
        },
      }),
    );
    const error = await (async () => {
      for await (const _ of client(server.url).snapshot()) void _;
    })().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'EPS_PROTOCOL_MALFORMED', message: 'A snapshot row of t does not have its 2 values' });
  });

  it('carries the wire code and change index of a rejected upload so the change can be quarantined', async () => {
    const server = await serve(
      apiHandler({
        '/api/database/upload/': (_req, res) =>
          sendJson(res, 409, { error: { code: 'CONSTRAINT_VIOLATION', message: 'duplicate key', request_id: 'r9', details: { index: 1, table: 'clinic_pet' } } }),
      }),
    );
    const batch = { batch_id: 'desk-1:00000001', changes: [{ table: 'clinic_pet', op: 'delete' as const, pk: { id: '1' } }, { table: 'clinic_pet', op: 'delete' as const, pk: { id: '2' } }] };
    const error = await client(server.url).upload(batch).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RequestRejectedError);
    expect(error).toMatchObject({ code: 'EPS_REQUEST_REJECTED', status: 409, wireCode: 'CONSTRAINT_VIOLATION', details: { index: 1, table: 'clinic_pet', request_id: 'r9' } });
    expect(server.requests.filter((r) => r.path === '/api/database/upload/')).toHaveLength(1);
  });

  it('rejects an upload answer for another batch', async () => {
    const server = await serve(
      apiHandler({
        '/api/database/upload/': (_req, res) => sendJson(res, 200, { batch_id: 'other', replayed: false, applied: 0, conflicts: 0, results: [], cursor: 'c1.2.2' }),
      }),
    );
    const error = await client(server.url).upload({ batch_id: 'desk-1:1', changes: [] }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'EPS_PROTOCOL_MALFORMED' });
  });

  it('never connects anonymously', async () => {
    const server = await serve(apiHandler({ '/api/database/sync/': (_req, res) => sendJson(res, 200, info()) }));
    const error = await client(server.url, { token: undefined }).info().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AuthError);
    expect(error).toMatchObject({ code: 'EPS_AUTH_MISSING', exitCode: 4 });
    // Discovery needs no token; the API itself was never asked anything without one.
    expect(server.requests.map((r) => r.path)).toEqual(['/.well-known/epetsync']);
  });

  it('sends the node id on every request', async () => {
    const server = await serve(apiHandler({ '/api/database/sync/': (_req, res) => sendJson(res, 200, info()) }));
    await client(server.url).info();
    expect(server.requests.length).toBeGreaterThan(0);
    for (const r of server.requests) expect(r.headers['x-epetsync-node']).toBe('desk-1');
  });
});

describe('RemoteDatabaseClient URL and TLS rules', () => {
  it('refuses http:// to a host that is not loopback', () => {
    expect(() => new RemoteDatabaseClient({ url: 'http://clinic.example.org', nodeId: 'n1' })).toThrow(UsageError);
    try {
      new RemoteDatabaseClient({ url: 'http://user:s3cretpass@clinic.example.org', nodeId: 'n1' });
    } catch (error) {
      expect(error).toMatchObject({ code: 'EPS_INSECURE_URL', exitCode: 2 });
      expect((error as Error).message).not.toContain('s3cretpass');
    }
  });

  it('allows http:// elsewhere only when configured, with a warning', () => {
    const warnings: string[] = [];
    new RemoteDatabaseClient({ url: 'http://10.0.0.5:8000', nodeId: 'n1', allowHttp: true, onWarning: (m) => warnings.push(m) });
    expect(warnings).toEqual(['Connecting to 10.0.0.5:8000 over plain http (allow_http is set): passwords and tokens travel in clear.']);
  });

  it('warns on every client created with insecure TLS', () => {
    const warnings: string[] = [];
    for (let i = 0; i < 2; i++) new RemoteDatabaseClient({ url: 'https://test.local', nodeId: 'n1', insecureTls: true, onWarning: (m) => warnings.push(m) });
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toContain('TLS certificate verification is OFF for test.local');
  });

  it('refuses a node id the protocol does not allow', () => {
    expect(() => new RemoteDatabaseClient({ url: 'https://x.test', nodeId: 'has space' })).toThrow(ConfigError);
  });
});
