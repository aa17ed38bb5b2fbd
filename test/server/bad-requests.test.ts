import { gzipSync } from 'node:zlib';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildSyncApp } from '../../src/server/app.js';
import { listenForChanges, type ChangeSignal } from '../../src/server/notify.js';
import { ENGINES, fingerprint, startHarness, type Harness } from './fixture.js';

type Case = { name: string; status: number; code: string; request: InjectOptions & { node?: string; small?: boolean }; details?: Record<string, unknown> };

const upload = (body: unknown, extra: Partial<InjectOptions> & { node?: string } = {}): InjectOptions & { node?: string } => ({
  method: 'POST',
  url: '/api/database/upload/',
  node: 'desk-1',
  payload: body as InjectOptions['payload'],
  ...extra,
});
const pet = (values: Record<string, unknown>) => ({ batch_id: 'bad-1', changes: [{ table: 'clinic_pet', op: 'upsert', pk: { id: values.id ?? '1' }, values: { id: '1', ...values } }] });
const bulk = (body: string, table = 'clinic_import'): InjectOptions => ({
  method: 'POST',
  url: `/api/database/bulk/?table=${table}&load_id=bad`,
  headers: { 'content-type': 'application/x-ndjson' },
  payload: body,
});

const CASES: Case[] = [
  { name: 'unknown table in an upload', status: 400, code: 'UNKNOWN_TABLE', request: upload({ batch_id: 'b', changes: [{ table: 'clinic_pett', op: 'delete', pk: { id: 1 } }] }), details: { table: 'clinic_pett', index: 0 } },
  { name: 'SQL in a table name', status: 400, code: 'UNKNOWN_TABLE', request: upload({ batch_id: 'b', changes: [{ table: 'clinic_pet; DROP TABLE clinic_pet', op: 'delete', pk: { id: 1 } }] }) },
  { name: 'the internal schema is never synced', status: 400, code: 'UNKNOWN_TABLE', request: upload({ batch_id: 'b', changes: [{ table: 'changelog', op: 'delete', pk: { seq: 1 } }] }) },
  { name: 'a deny-listed Django table', status: 400, code: 'UNKNOWN_TABLE', request: upload({ batch_id: 'b', changes: [{ table: 'django_session', op: 'delete', pk: { session_key: 'x' } }] }) },
  { name: 'unknown column', status: 400, code: 'UNKNOWN_COLUMN', request: upload(pet({ nmae: 'Rex' })), details: { table: 'clinic_pet', column: 'nmae', index: 0 } },
  { name: 'a boolean that is not one', status: 400, code: 'INVALID_VALUE', request: upload(pet({ vaccinated: 'yes' })), details: { column: 'vaccinated' } },
  { name: 'a bigint beyond 2^53 sent as a number', status: 400, code: 'INVALID_VALUE', request: upload(pet({ big: 9007199254740993 })), details: { column: 'big' } },
  { name: 'a date that does not exist', status: 400, code: 'INVALID_VALUE', request: upload(pet({ name: 'Rex', birth: '2026-02-30' })) },
  { name: 'text longer than varchar(100)', status: 400, code: 'INVALID_VALUE', request: upload({ batch_id: 'b', changes: [{ table: 'clinic_owner', op: 'upsert', pk: { id: 1 }, values: { id: 1, name: 'x'.repeat(101) } }] }) },
  { name: 'a NUL character in text', status: 400, code: 'INVALID_VALUE', request: upload(pet({ name: 'Re\u0000x' })) },
  { name: 'bad base64 for bytea', status: 400, code: 'INVALID_VALUE', request: upload(pet({ photo: 'not base64!' })) },
  { name: 'a primary key column missing', status: 400, code: 'MISSING_PRIMARY_KEY', request: upload({ batch_id: 'b', changes: [{ table: 'clinic_tag', op: 'delete', pk: { pet_id: 1 } }] }), details: { column: 'tag' } },
  {
    name: 'a foreign-key violation in the second change rolls back the first',
    status: 409,
    code: 'CONSTRAINT_VIOLATION',
    request: upload({ batch_id: 'b', changes: [{ table: 'clinic_visit', op: 'upsert', pk: { id: 1 }, values: { id: 1, note: 'changed' } }, { table: 'clinic_pet', op: 'upsert', pk: { id: 60 }, values: { id: 60, owner_id: 424242, name: 'Orphan' } }] }),
    details: { index: 1 },
  },
  { name: 'a NOT NULL violation', status: 409, code: 'CONSTRAINT_VIOLATION', request: upload({ batch_id: 'b', changes: [{ table: 'clinic_pet', op: 'upsert', pk: { id: 61 }, values: { id: 61, name: null } }] }) },
  { name: 'a body that is not JSON', status: 400, code: 'INVALID_JSON', request: upload('{"batch_id": "b", "changes": [', { headers: { 'content-type': 'application/json' } }) },
  { name: 'no batch_id', status: 400, code: 'BAD_REQUEST', request: upload({ changes: [] }) },
  { name: 'a batch_id with spaces', status: 400, code: 'BAD_REQUEST', request: upload({ batch_id: 'a b', changes: [] }) },
  { name: 'an op that does not exist', status: 400, code: 'BAD_REQUEST', request: upload({ batch_id: 'b', changes: [{ table: 'clinic_pet', op: 'insert', pk: { id: 1 } }] }) },
  { name: 'an upsert without values', status: 400, code: 'BAD_REQUEST', request: upload({ batch_id: 'b', changes: [{ table: 'clinic_pet', op: 'upsert', pk: { id: 1 } }] }) },
  { name: 'more than 5000 changes', status: 400, code: 'BAD_REQUEST', request: upload({ batch_id: 'b', changes: Array.from({ length: 5001 }, (_, i) => ({ table: 'clinic_visit', op: 'delete', pk: { id: i } })) }) },
  { name: 'an upload without X-Epetsync-Node', status: 400, code: 'BAD_REQUEST', request: upload({ batch_id: 'b', changes: [] }, { node: undefined }) },
  { name: 'a malformed node id', status: 400, code: 'BAD_REQUEST', request: upload({ batch_id: 'b', changes: [] }, { node: 'desk 1/../x' }) },
  { name: 'an upload sent as text/plain', status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', request: upload('{"batch_id":"b","changes":[]}', { headers: { 'content-type': 'text/plain' } }) },
  { name: 'a content encoding the server does not take', status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', request: upload('{"batch_id":"b","changes":[]}', { headers: { 'content-type': 'application/json', 'content-encoding': 'br' } }) },
  { name: 'a corrupt gzip body', status: 400, code: 'BAD_REQUEST', request: upload(Buffer.from('definitely not gzip'), { headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' } }) },
  { name: 'a body over the wire limit', status: 413, code: 'BODY_TOO_LARGE', request: { ...upload(JSON.stringify({ batch_id: 'b', changes: [], pad: 'x'.repeat(70_000) }), { headers: { 'content-type': 'application/json' } }), small: true }, details: { limit: 65536 } },
  {
    name: 'a gzip bomb',
    status: 413,
    code: 'BODY_TOO_LARGE',
    request: { ...upload(gzipSync(Buffer.from(`{"batch_id":"b","changes":[],"pad":"${'0'.repeat(20_000_000)}"}`)), { headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' } }), small: true },
    details: { limit: 262144 },
  },
  { name: 'a cursor this server did not issue', status: 400, code: 'INVALID_CURSOR', request: { method: 'GET', url: '/api/database/download/?since=c2.1.2' } },
  { name: 'a cursor from the future', status: 400, code: 'INVALID_CURSOR', request: { method: 'GET', url: '/api/database/download/?since=c1.99999999999.1' } },
  { name: 'a base_cursor that is not one', status: 400, code: 'INVALID_CURSOR', request: upload({ batch_id: 'b', base_cursor: 'yesterday', changes: [{ table: 'clinic_visit', op: 'delete', pk: { id: 1 } }] }) },
  { name: 'a base_cursor from another database', status: 400, code: 'INVALID_CURSOR', request: upload({ batch_id: 'b', base_cursor: 'c1.99999999999.1', changes: [{ table: 'clinic_visit', op: 'delete', pk: { id: 1 } }] }) },
  { name: 'an unknown table in a download', status: 400, code: 'UNKNOWN_TABLE', request: { method: 'GET', url: '/api/database/download/?tables=clinic_pet,nope' }, details: { table: 'nope' } },
  { name: 'a feed limit of 0', status: 400, code: 'BAD_REQUEST', request: { method: 'GET', url: '/api/database/download/?since=c1.0.0&limit=0' } },
  { name: 'a wait over 60 seconds', status: 400, code: 'BAD_REQUEST', request: { method: 'GET', url: '/api/database/download/?since=c1.0.0&wait=61' } },
  { name: 'an unknown query parameter', status: 400, code: 'BAD_REQUEST', request: { method: 'GET', url: '/api/database/download/?sinse=c1.0.0' }, details: { problems: [{ path: 'querystring', message: 'must NOT have the unknown property "sinse"' }] } },
  { name: 'a resume key of the wrong shape', status: 400, code: 'BAD_REQUEST', request: { method: 'GET', url: `/api/database/download/?after_table=clinic_tag&after=${encodeURIComponent('[1]')}` } },
  { name: 'a bulk column that does not exist', status: 400, code: 'UNKNOWN_COLUMN', request: bulk('{"columns":["id","lable"]}\n[1,"x"]\n') },
  { name: 'a bulk line that is not JSON', status: 400, code: 'INVALID_JSON', request: bulk('{"columns":["id","label"]}\n[1,"x"]\n[2,"y"\n'), details: { line: 3 } },
  { name: 'a bulk row of the wrong length', status: 400, code: 'BAD_REQUEST', request: bulk('{"columns":["id","label"]}\n[1,"x","extra"]\n'), details: { line: 2 } },
  { name: 'a bulk load without the primary key', status: 400, code: 'MISSING_PRIMARY_KEY', request: bulk('{"columns":["label"]}\n["x"]\n') },
  { name: 'a bulk chunk repeating a key', status: 409, code: 'CONSTRAINT_VIOLATION', request: bulk('{"columns":["id","label"]}\n[100,"x"]\n[101,"y"]\n[100,"again"]\n') },
  { name: 'a bulk load sent as JSON', status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', request: { method: 'POST', url: '/api/database/bulk/?table=clinic_import&load_id=bad', payload: { columns: ['id'] } } },
  { name: 'a bulk load into an unknown table', status: 400, code: 'UNKNOWN_TABLE', request: bulk('{"columns":["id"]}\n[1]\n', 'auth_permission') },
  { name: 'no token', status: 401, code: 'AUTH_REQUIRED', request: { method: 'GET', url: '/api/database/sync/', headers: { authorization: '' } } },
  { name: 'no such route', status: 404, code: 'NOT_FOUND', request: { method: 'GET', url: '/api/database/nothing/' } },
];

describe.each(ENGINES)('bad requests on %s', (engine) => {
  let h: Harness;
  let changes: ChangeSignal;
  let small: FastifyInstance;
  beforeAll(async () => {
    h = await startHarness(engine);
    changes = await listenForChanges(h.server.db);
    small = await buildSyncApp({ db: h.server.db, schema: h.server.schema, changes, conflictPolicy: 'server-wins', syncPermission: 'staff', limits: { maxBodyBytes: 65536, maxDecompressedBytes: 262144 } });
  });
  afterAll(async () => {
    await small?.close();
    await changes?.close();
    await h?.close();
  });

  it(`has at least 15 cases`, () => {
    expect(CASES.length).toBeGreaterThanOrEqual(15);
  });

  it.each(CASES)('$name → $status $code, and nothing changes', async ({ status, code, request, details }) => {
    const before = await fingerprint(h);
    const { small: useSmall, headers, ...rest } = request;
    const res = await h.call({ ...rest, headers: { ...(headers ?? {}) }, ...(useSmall ? { app: small } : {}) });
    expect(res.statusCode, res.body).toBe(status);
    expect(res.headers['content-type']).toMatch(/application\/json/);
    const body = h.json<{ error: { code: string; message: string; request_id: string; details?: Record<string, unknown> } }>(res);
    expect(body.error.code).toBe(code);
    expect(body.error.message.length).toBeGreaterThan(5);
    expect(body.error.request_id).toBe(res.headers['x-request-id']);
    if (details) expect(body.error.details).toMatchObject(details);
    expect(await fingerprint(h)).toBe(before);
  });
});
