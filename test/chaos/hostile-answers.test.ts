/**
 * Reliability part 6 (docs/reliability.md): hostile answers to the client. A fake server stands
 * between epetsync and the real `epetsync serve`: discovery, login and server info are forwarded
 * untouched, and chosen answers of the download route are tampered with — oversized and endless
 * bodies, truncated gzip, malformed rows, unknown and injected table and column names, cursors
 * that go backwards, repeat or are not cursors, rows twice, snapshots without their end line.
 *
 * Each answer goes through the whole sync path on a real desktop SQLite file: the built binary
 * (`epetsync monitor --once`, as a scheduled task runs it) and the library (`SyncEngine` over
 * `RemoteDatabaseClient`). Each must be refused with a ProtocolError (the CLI: exit 6, a message
 * naming what was wrong, no secret), and the desktop file must not change:
 * - library, feed: the file and its -wal are hashed byte for byte (the WAL is checkpointed and
 *   truncated first, so any committed or spilled frame would show);
 * - CLI and snapshot re-pull: every start installs the capture triggers again (identical SQL, but
 *   the rewrite bumps SQLite's schema cookie and appends WAL frames), so the logical content is
 *   compared instead: sqlite_master and every row of every table, epetsync's own included.
 * The refused rows are not lost: an honest cycle afterwards brings them, and both sides are then
 * compared row by row.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteDatabaseClient, type ChangePage, type FeedChange } from '../../src/client/index.js';
import { quoteIdent } from '../../src/db/sql.js';
import { ProtocolError } from '../../src/errors.js';
import { SyncEngine } from '../../src/sync/engine.js';
import { startFakeServer, sendJson, type FakeServer } from '../helpers/fake-server.js';
import { PG_SCHEMA, SQLITE_SCHEMA } from '../sync/fixture.js';
import { CHAOS_USER, CLINIC_BUSINESS_KEYS, compareSides, readSides, startChaosBed, type ChaosBed } from './bed.js';
import { CHAOS_SEED, prng, recordFigures, registerSecret, scaled, tally, type HostileTally } from './kit.js';

const SEED = CHAOS_SEED + 6;
const started = Date.now();
/** The client's response limit in this part (remote_database.max_response_bytes), small so oversized answers stay cheap. */
const LIMIT = 1_000_000;

/** A table with the column types the small clinic lacks: bytea and date, beside a varchar(40). */
const DOC_PG = `CREATE TABLE clinic_document (id bigserial PRIMARY KEY, pet_id bigint NOT NULL, title varchar(40) NOT NULL, scan bytea, taken_on date, updated_at timestamptz NOT NULL DEFAULT now())`;
const DOC_SQLITE = `CREATE TABLE "clinic_document" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "pet_id" bigint NOT NULL, "title" varchar(40) NOT NULL, "scan" BLOB NULL, "taken_on" date NULL, "updated_at" datetime NOT NULL)`;
const TABLES = ['clinic_owner', 'clinic_pet', 'clinic_vaccination', 'clinic_species', 'clinic_document'];

type Json = Record<string, unknown>;
/** Rewrites a real feed page (and the cursor it was read from) into the hostile answer, or answers by itself (returns true). */
type FeedTamper = (page: ChangePage & Json, since: string, res: ServerResponse) => (ChangePage & Json) | true;
/** Rewrites the lines of a real snapshot stream, or answers by itself (returns true). */
type SnapshotTamper = (lines: Json[], res: ServerResponse) => Json[] | true;

let bed: ChaosBed;
let fake: FakeServer;
let feedTamper: FeedTamper | undefined;
/** Rewrites the real server's answer to an upload (which the real server did apply). */
let uploadTamper: ((answer: Json) => Json) | undefined;
let snapshotTamper: SnapshotTamper | undefined;
let pendingRows = 0;
let bytesStreamed = 0;
let webWritten = 0;
/** Lost and duplicated rows found by the row-by-row comparisons after the honest cycles. */
const found = { lost: 0, duplicated: 0, comparisons: 0 };
/** Refused answers after which a desktop file was not as before (must stay 0). */
let changedFiles = 0;
const hostile: Record<string, HostileTally> = {};
const secrets: string[] = [];

function count(kind: string, answer: string): void {
  hostile[kind] ??= { tried: 0, answers: {} };
  tally(hostile[kind], answer);
}

/** Fetches the real server's answer to the same request (same token, node and accept headers), decompressed. */
async function fetchReal(req: IncomingMessage): Promise<Response> {
  const headers: Record<string, string> = {};
  for (const name of ['authorization', 'x-epetsync-node', 'accept']) {
    const value = req.headers[name];
    if (typeof value === 'string') headers[name] = value;
  }
  return fetch(new URL(req.url ?? '/', bed.server().url), { headers });
}

/** Streams `head` and then `chunk` over and over until the client hangs up (an endless body). */
function endless(res: ServerResponse, contentType: string, head: string, chunk: string): true {
  res.writeHead(200, { 'content-type': contentType });
  res.write(head);
  const pump = (): void => {
    while (!res.destroyed && !res.writableEnded) {
      bytesStreamed += chunk.length;
      if (!res.write(chunk)) {
        res.once('drain', pump);
        return;
      }
    }
  };
  res.on('error', () => {});
  pump();
  return true;
}

/** Sends `body` gzip-compressed but cut in half, as a complete HTTP answer (the length header matches what is sent). */
function truncatedGzip(res: ServerResponse, contentType: string, body: string): true {
  const gz = gzipSync(body);
  const cut = gz.subarray(0, Math.floor(gz.length / 2));
  res.writeHead(200, { 'content-type': contentType, 'content-encoding': 'gzip', 'content-length': cut.length });
  res.end(cut);
  return true;
}

async function handler(req: IncomingMessage, res: ServerResponse, body: Buffer): Promise<boolean> {
  const url = new URL(req.url ?? '/', 'http://fake');
  const tamperUpload = uploadTamper;
  if (url.pathname === '/api/database/upload/' && tamperUpload) {
    const headers: Record<string, string> = {};
    for (const name of ['authorization', 'x-epetsync-node', 'content-type', 'content-encoding']) {
      const value = req.headers[name];
      if (typeof value === 'string') headers[name] = value;
    }
    const real = await fetch(new URL(req.url ?? '/', bed.server().url), { method: 'POST', headers, body });
    return sendJson(res, real.status, real.status === 200 ? tamperUpload((await real.json()) as Json) : await real.json());
  }
  if (url.pathname !== '/api/database/download/') return false;
  const since = url.searchParams.get('since');
  const tamperFeed = feedTamper;
  const tamperSnapshot = snapshotTamper;
  if (since !== null ? !tamperFeed : !tamperSnapshot) return false;
  const real = await fetchReal(req);
  if (real.status !== 200) return sendJson(res, real.status, await real.json());
  if (since !== null) {
    const page = (await real.json()) as ChangePage & Json;
    const answer = tamperFeed!(page, since, res);
    return answer === true ? true : sendJson(res, 200, answer);
  }
  const lines = (await real.text()).split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l) as Json);
  const answer = tamperSnapshot!(lines, res);
  if (answer === true) return true;
  const text = `${answer.map((l) => JSON.stringify(l)).join('\n')}\n`;
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'content-length': Buffer.byteLength(text) });
  res.end(text);
  return true;
}

/** Returns a cursor just before `since` (the feed going backwards). */
function before(since: string): string {
  const [, txid, seq] = /^c1\.(\d+)\.(\d+)$/.exec(since)!;
  return BigInt(seq!) > 0n ? `c1.${txid}.${BigInt(seq!) - 1n}` : `c1.${BigInt(txid!) - 1n}.${seq}`;
}

/** Returns the first upsert of `table` in a page (the seeded pending rows guarantee one). */
function upsertOf(page: ChangePage, table: string): FeedChange & { values: Json } {
  const change = page.changes.find((c) => c.table === table && c.op === 'upsert');
  if (!change) throw new Error(`the real feed page holds no upsert of ${table}: ${JSON.stringify(page).slice(0, 300)}`);
  return change as FeedChange & { values: Json };
}

/** Describes one hand-written hostile feed answer and what the refusal must say. */
interface FeedCase {
  kind: string;
  tamper: FeedTamper;
  code: 'EPS_PROTOCOL_MALFORMED' | 'EPS_PROTOCOL_TOO_LARGE';
  message: RegExp;
  /** Also run through the CLI in the short version (every case runs through the CLI in the long one). */
  short?: boolean;
}

const FEED_CASES: FeedCase[] = [
  {
    kind: 'oversized JSON page',
    short: true,
    tamper: (page) => ({ ...page, padding: 'x'.repeat(LIMIT + 1000) }),
    code: 'EPS_PROTOCOL_TOO_LARGE',
    message: /^The server sent an answer larger than the 1000000-byte limit$/,
  },
  {
    kind: 'endless JSON page',
    tamper: (page, _since, res) => endless(res, 'application/json', '{"changes":[', `${JSON.stringify(upsertOf(page, 'clinic_pet'))},`.repeat(64)),
    code: 'EPS_PROTOCOL_TOO_LARGE',
    message: /^The server sent an answer larger than the 1000000-byte limit$/,
  },
  {
    kind: 'truncated gzip',
    short: true,
    tamper: (page, _since, res) => truncatedGzip(res, 'application/json', JSON.stringify(page)),
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^The server sent a gzip body that ends before the compressed data does \(truncated\)$/,
  },
  {
    kind: 'wrong arity (pk with an extra column)',
    tamper: (page) => {
      const c = upsertOf(page, 'clinic_pet');
      c.pk = { ...c.pk, owner_id: c.values.owner_id };
      return page;
    },
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^Change \d+ of the feed page keys a row of clinic_pet by "id", "owner_id", not by its primary key id$/,
  },
  {
    kind: 'upsert without its key column',
    tamper: (page) => {
      delete upsertOf(page, 'clinic_pet').values.id;
      return page;
    },
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^Change \d+ of the feed page upserts a row of clinic_pet without its primary-key column id$/,
  },
  {
    kind: 'wrong type for the column',
    short: true,
    tamper: (page) => {
      upsertOf(page, 'clinic_pet').values.neutered = 'yes';
      return page;
    },
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^Change \d+ of the feed page has a value for clinic_pet\.neutered that expected true or false, got "yes"$/,
  },
  {
    kind: 'bigint that is not digits',
    tamper: (page) => {
      upsertOf(page, 'clinic_pet').values.owner_id = '1 OR 1=1';
      return page;
    },
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^Change \d+ of the feed page has a value for clinic_pet\.owner_id that expected a bigint as a string of digits/,
  },
  {
    kind: 'invalid date',
    tamper: (page) => {
      upsertOf(page, 'clinic_document').values.taken_on = '2026-02-30';
      return page;
    },
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^Change \d+ of the feed page has a value for clinic_document\.taken_on that "2026-02-30" is not a date in the calendar$/,
  },
  {
    kind: 'invalid timestamp',
    tamper: (page) => {
      upsertOf(page, 'clinic_pet').values.updated_at = '2026-11-25T25:61:00Z';
      return page;
    },
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^Change \d+ of the feed page has a value for clinic_pet\.updated_at that "2026-11-25T25:61:00Z" is not a time of day$/,
  },
  {
    kind: 'bytea that is not base64',
    tamper: (page) => {
      upsertOf(page, 'clinic_document').values.scan = 'not base64 at all!';
      return page;
    },
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^Change \d+ of the feed page has a value for clinic_document\.scan that expected base64 text, got "not base64 at all!"$/,
  },
  {
    kind: 'huge string',
    tamper: (page) => {
      upsertOf(page, 'clinic_pet').values.name = 'ñ'.repeat(300_000);
      return page;
    },
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^Change \d+ of the feed page has a value for clinic_pet\.name that is 300000 characters long, more than character varying\(100\) holds$/,
  },
  {
    kind: 'null in a NOT NULL column',
    tamper: (page) => {
      upsertOf(page, 'clinic_document').values.title = null;
      return page;
    },
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^Change \d+ of the feed page has a value for clinic_document\.title that is null, but the column is NOT NULL$/,
  },
  {
    kind: 'table that does not exist',
    short: true,
    tamper: (page) => {
      upsertOf(page, 'clinic_pet').table = 'clinic_ghost';
      return page;
    },
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^Change \d+ of the feed page names table "clinic_ghost", which the server does not list as synced$/,
  },
  {
    kind: 'column that does not exist',
    tamper: (page) => {
      upsertOf(page, 'clinic_pet').values.microchip = '900000000000001';
      return page;
    },
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^Change \d+ of the feed page has a value for column "microchip", which clinic_pet does not have on the server$/,
  },
  {
    kind: 'injected table name',
    tamper: (page) => {
      upsertOf(page, 'clinic_pet').table = 'clinic_pet"; DROP TABLE clinic_owner; --';
      return page;
    },
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^Change \d+ of the feed page names table "clinic_pet\\"; DROP TABLE clinic_owner; --", which the server does not list as synced$/,
  },
  {
    kind: 'injected column name',
    short: true,
    tamper: (page) => {
      upsertOf(page, 'clinic_pet').values[`name" = 'x'; DROP TABLE clinic_pet; --`] = 'x';
      return page;
    },
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^Change \d+ of the feed page has a value for column "name\\" = 'x'; DROP TABLE clinic_pet; --", which clinic_pet does not have on the server$/,
  },
  {
    kind: 'change claiming another table',
    tamper: (page) => {
      upsertOf(page, 'clinic_pet').table = 'clinic_owner';
      return page;
    },
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^Change \d+ of the feed page has a value for column "owner_id", which clinic_owner does not have on the server$/,
  },
  {
    kind: 'values disagreeing with pk',
    tamper: (page) => {
      const c = upsertOf(page, 'clinic_pet');
      c.values.id = String(BigInt(c.pk.id as string) + 1000n);
      return page;
    },
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^Change \d+ of the feed page upserts a row of clinic_pet whose values\.id differs from pk\.id$/,
  },
  {
    kind: 'row twice in a page',
    tamper: (page) => ({ ...page, changes: [...page.changes, structuredClone(upsertOf(page, 'clinic_pet'))] }),
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^Change \d+ of the feed page repeats the row clinic_pet \{"id":"\d+"\}: a page carries each row once$/,
  },
  {
    kind: 'cursor going backwards',
    short: true,
    tamper: (page, since) => ({ ...page, cursor: before(since) }),
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^The feed page's cursor c1\.\d+\.\d+ is behind c1\.\d+\.\d+, the cursor it was read from: the feed went backwards$/,
  },
  {
    kind: 'cursor repeating',
    tamper: (page, since) => ({ ...page, cursor: since }),
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^The feed page carries \d+ change\(s\) but its cursor does not move past c1\.\d+\.\d+$/,
  },
  {
    kind: 'cursor repeating with has_more',
    tamper: (page, since) => ({ ...page, changes: [], cursor: since, has_more: true }),
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^The feed page says more changes are ready but its cursor does not move past c1\.\d+\.\d+$/,
  },
  {
    kind: 'malformed cursor',
    tamper: (page) => ({ ...page, cursor: "c1.9'; DROP TABLE _epetsync_meta; --" }),
    code: 'EPS_PROTOCOL_MALFORMED',
    message: /^The server's change feed page does not match the protocol \(cursor: is not a protocol 1 cursor \(c1\.<txid>\.<seq>\)\)$/,
  },
];

/** Hashes the desktop file and its -wal byte for byte. */
function fileHash(path: string): string {
  const hash = createHash('sha256');
  hash.update(readFileSync(path));
  hash.update('\u0000wal\u0000');
  if (existsSync(`${path}-wal`)) hash.update(readFileSync(`${path}-wal`));
  return hash.digest('hex');
}

/** Hashes the logical content of a desktop file: sqlite_master and every row of every table (epetsync's own included), in rowid order. */
function logicalHash(path: string): string {
  const db = new Database(path, { readonly: true, fileMustExist: true, timeout: 10_000 });
  db.defaultSafeIntegers(true);
  try {
    const hash = createHash('sha256');
    const replacer = (_k: string, v: unknown): unknown => (typeof v === 'bigint' ? `${v}n` : v);
    const master = db.prepare(`SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name`).all() as Array<{ type: string; name: string }>;
    hash.update(JSON.stringify(master));
    for (const t of master.filter((m) => m.type === 'table')) {
      hash.update(`\u0000${t.name}\u0000`);
      for (const row of db.prepare(`SELECT * FROM ${quoteIdent(t.name)} ORDER BY rowid`).raw().iterate()) hash.update(JSON.stringify(row, replacer));
    }
    return hash.digest('hex');
  } finally {
    db.close();
  }
}

function makeDesktop(path: string): void {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.exec(SQLITE_SCHEMA);
  db.exec(DOC_SQLITE);
  db.close();
}

/** Writes rows on the web side (owners, pets, documents with bytes and dates): the feed pages the fake tampers with carry them. */
async function writeWebRows(n: number, tag: string): Promise<number> {
  for (let i = 0; i < n; i++) {
    const [owner] = await bed.sql<{ id: string }>(`INSERT INTO clinic_owner (name, email) VALUES ($1, $2) RETURNING id::text AS id`, [`Owner ${tag}${i} Ménard`, `${tag}${i}@example.org`]);
    const [pet] = await bed.sql<{ id: string }>(`INSERT INTO clinic_pet (owner_id, name, weight_kg, neutered) VALUES ($1, $2, 4.25, true) RETURNING id::text AS id`, [owner!.id, `Pet ${tag}${i} 🐾`]);
    await bed.sql(`INSERT INTO clinic_document (pet_id, title, scan, taken_on) VALUES ($1, $2, $3, '2026-02-28')`, [pet!.id, `Scan ${tag}${i}`, Buffer.from([0, 1, 2, 255, i])]);
  }
  webWritten += n * 3;
  return n * 3;
}

function libraryClient(nodeId: string): RemoteDatabaseClient {
  return new RemoteDatabaseClient({
    url: fake.url,
    username: CHAOS_USER,
    password: bed.password,
    nodeId,
    stateFile: join(bed.dir, `${nodeId}-state.json`),
    maxResponseBytes: LIMIT,
    retries: { retries: 1, baseDelayMs: 10, maxDelayMs: 20 },
  });
}

function registerClientToken(nodeId: string): void {
  const file = join(bed.dir, `${nodeId}-state.json`);
  if (!existsSync(file)) return;
  const token = (JSON.parse(readFileSync(file, 'utf8')) as { token?: { value?: string } }).token?.value;
  if (token) {
    registerSecret(token);
    secrets.push(token);
  }
}

function cliToken(): string | undefined {
  const file = join(bed.dir, '.epetsync', 'state.json');
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as { token?: { value?: string } }).token?.value : undefined;
}

beforeAll(async () => {
  bed = await startChaosBed({ name: 'hostile-answers', pgSchema: [PG_SCHEMA, DOC_PG], makeDesktop, realTime: false });
  secrets.push(bed.password);
  fake = await startFakeServer(handler, { forwardTo: bed.server().url });
  // The CLI talks to the fake, with a small response limit so oversized answers stay cheap.
  const config = JSON.parse(readFileSync(bed.config, 'utf8')) as { remote_database: Json };
  config.remote_database.url = fake.url;
  config.remote_database.max_response_bytes = LIMIT;
  writeFileSync(bed.config, `${JSON.stringify(config, null, 2)}\n`);
  // First run installs capture at the (empty) feed head; the second pulls rows the web wrote, so the stored cursor is past c1.0.0.
  expect((await bed.run('monitor-first', ['monitor', '--once'])).code).toBe(0);
  await writeWebRows(2, 'seed');
  const second = await bed.run('monitor-seed', ['monitor', '--once']);
  expect(second).toMatchObject({ code: 0, stdout: 'Synced once: pushed 0, pulled 6, conflicts 0.\n' });
  const token = cliToken();
  if (token) {
    registerSecret(token);
    secrets.push(token);
  }
}, 120_000);

afterAll(async () => {
  const seconds = Math.round((Date.now() - started) / 1000);
  recordFigures({
    part: 'hostile-answers',
    title: `hostile answers to the client through a tampering fake server: monitor --once and SyncEngine on real SQLite files (seed ${SEED})`,
    seconds,
    rows: found.comparisons > 0 ? { desktop_written: 0, web_written: webWritten, lost: found.lost, duplicated: found.duplicated } : undefined,
    hostile,
    checks: { 'desktop file changed by a refused answer': changedFiles, 'bytes streamed in endless answers': bytesStreamed },
  });
  await fake?.close();
  await bed?.close();
}, 120_000);

describe('hostile answers to the client', () => {
  it('the CLI (monitor --once) refuses each hostile feed page with exit 6 and the desktop database unchanged; an honest cycle then brings every row', async () => {
    pendingRows = await writeWebRows(2, 'pending');
    const baseline = logicalHash(bed.dbPath);
    const cases = FEED_CASES.filter((c) => scaled(c.short === true, true));
    for (const c of cases) {
      feedTamper = c.tamper;
      const run = await bed.run('monitor-hostile', ['monitor', '--once']);
      feedTamper = undefined;
      const hint = c.code === 'EPS_PROTOCOL_TOO_LARGE' ? /^Try: Raise remote_database\.max_response_bytes/ : /^Try: /;
      const [error, tryLine, rest] = run.output.split('\n');
      const message = (error ?? '').replace(/^Error: /, '');
      expect(run.code, `${c.kind} (seed ${SEED}): ${run.output}`).toBe(6);
      expect(error, `${c.kind}: ${run.output}`).toMatch(/^Error: /);
      expect(message, `${c.kind}: ${run.output}`).toMatch(c.message);
      expect(tryLine, c.kind).toMatch(hint);
      expect(rest, c.kind).toBe('');
      for (const s of secrets) expect(run.output.includes(s), `${c.kind}: a secret in the output`).toBe(false);
      const same = logicalHash(bed.dbPath) === baseline;
      if (!same) changedFiles += 1;
      expect(same, `${c.kind} (seed ${SEED}): the desktop database changed`).toBe(true);
      count(`feed: ${c.kind}`, `CLI exit ${run.code}`);
    }
    const honest = await bed.run('monitor-honest', ['monitor', '--once']);
    expect(honest, `seed ${SEED}`).toMatchObject({ code: 0, stdout: `Synced once: pushed 0, pulled ${pendingRows}, conflicts 0.\n` });
    const comparison = compareSides(await readSides(bed.dbPath, bed.pg.url, TABLES), CLINIC_BUSINESS_KEYS);
    found.lost += comparison.lost;
    found.duplicated += comparison.duplicated;
    found.comparisons += 1;
    expect(comparison.problems, `seed ${SEED}`).toEqual([]);
    expect(comparison.webRows).toBe(12);
  }, scaled(120_000, 400_000));

  it('SyncEngine refuses every hostile feed page with a ProtocolError, leaving the file and its WAL byte for byte as they were', async () => {
    const path = join(bed.dir, 'library.sqlite3');
    makeDesktop(path);
    const db = new Database(path, { timeout: 5000 });
    db.defaultSafeIntegers(true);
    const client = libraryClient('lib-desk');
    const engine = new SyncEngine({ db, remote: client });
    try {
      await engine.prepare();
      registerClientToken('lib-desk');
      const written = await writeWebRows(2, 'lib');
      db.pragma('wal_checkpoint(TRUNCATE)');
      const baseline = fileHash(path);
      const cursor = engine.cursor();
      const refuse = async (kind: string, tamper: FeedTamper, check?: (e: ProtocolError) => void): Promise<void> => {
        feedTamper = tamper;
        const error = await engine.runCycle().catch((e: unknown) => e);
        feedTamper = undefined;
        count(kind, error instanceof ProtocolError ? `ProtocolError ${error.code}` : `NOT REFUSED: ${String(error)}`);
        expect(error, `${kind} (seed ${SEED})`).toBeInstanceOf(ProtocolError);
        check?.(error as ProtocolError);
        const same = fileHash(path) === baseline;
        if (!same) changedFiles += 1;
        expect(same, `${kind} (seed ${SEED}): the desktop file changed`).toBe(true);
        expect(engine.cursor()).toBe(cursor);
      };
      for (const c of FEED_CASES) {
        await refuse(`feed: ${c.kind}`, c.tamper, (e) => {
          expect(e.code, c.kind).toBe(c.code);
          expect(e.message, c.kind).toMatch(c.message);
        });
      }

      // Generated: every value below breaks the documented wire encoding of its column (docs/protocol.md), so none may be applied.
      const random = prng(SEED);
      const runs = scaled(4, 200);
      const notIn = (pattern: RegExp, ...also: string[]) => (s: string): boolean => !pattern.test(s) && !also.includes(s);
      const badValues: Record<string, fc.Arbitrary<unknown>> = {
        name: fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.string()), fc.string({ minLength: 101, maxLength: 400 })),
        owner_id: fc.oneof(fc.double({ noInteger: true }), fc.boolean(), fc.constant(null), fc.string().filter(notIn(/^-?\d{1,19}$/))),
        weight_kg: fc.oneof(fc.boolean(), fc.object(), fc.string().filter(notIn(/^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/, 'NaN'))),
        neutered: fc.oneof(fc.integer(), fc.string(), fc.constant(null), fc.array(fc.boolean())),
        updated_at: fc.oneof(
          fc.integer(),
          fc.constant(null),
          fc.string().filter(notIn(/^\d{4,}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)?$/, 'infinity', '-infinity')),
          fc.record({ y: fc.integer({ min: 1000, max: 9999 }), m: fc.integer({ min: 13, max: 99 }), d: fc.integer({ min: 1, max: 28 }) }).map(({ y, m, d }) => `${y}-${m}-${String(d).padStart(2, '0')}T10:00:00Z`),
        ),
      };
      const columns = Object.keys(badValues);
      const injections = fc.constantFrom('"; DROP TABLE clinic_owner; --', "' OR '1'='1", '`x`', '\u0000', '🐾', 'clinic_pet ', '__proto__', 'sqlite_master', '_epetsync_meta');
      const foreignName = (known: string[]) => fc.oneof(fc.string({ minLength: 1, maxLength: 60, unit: 'grapheme' }), fc.tuple(fc.constantFrom(...known), injections).map(([a, b]) => `${a}${b}`)).filter((s) => !known.includes(s));
      const [, txid, seq] = /^c1\.(\d+)\.(\d+)$/.exec(cursor)!.map((x) => (/^\d+$/.test(x) ? BigInt(x) : 0n));
      const kinds: Array<{ kind: string; arbitrary: fc.Arbitrary<FeedTamper> }> = [
        {
          kind: 'generated: value breaking its column type',
          arbitrary: fc.tuple(fc.constantFrom(...columns), fc.nat()).chain(([column]) => badValues[column]!.map((value) => (page: ChangePage & Json) => {
            upsertOf(page, 'clinic_pet').values[column] = value;
            return page;
          })),
        },
        {
          kind: 'generated: unknown or injected table',
          arbitrary: foreignName(TABLES).map((name) => (page: ChangePage & Json) => {
            upsertOf(page, 'clinic_pet').table = name;
            return page;
          }),
        },
        {
          kind: 'generated: unknown or injected column',
          arbitrary: foreignName(['id', 'owner_id', 'name', 'weight_kg', 'neutered', 'updated_at']).map((name) => (page: ChangePage & Json) => {
            // An own property even for "__proto__", so it goes on the wire as a key.
            Object.defineProperty(upsertOf(page, 'clinic_pet').values, name, { value: 'x', enumerable: true, configurable: true, writable: true });
            return page;
          }),
        },
        {
          kind: 'generated: cursor behind the stored one',
          arbitrary: fc
            .oneof(
              fc.tuple(fc.bigInt({ min: 0n, max: txid! - 1n }), fc.bigInt({ min: 0n, max: 2n ** 63n - 1n })),
              fc.tuple(fc.constant(txid!), fc.bigInt({ min: 0n, max: seq! > 0n ? seq! - 1n : 0n })),
            )
            .filter(([t, s]) => t < txid! || s < seq!)
            .map(([t, s]) => (page: ChangePage & Json) => ({ ...page, cursor: `c1.${t}.${s}` })),
        },
        {
          kind: 'generated: not a cursor',
          arbitrary: fc.oneof(fc.string({ unit: 'grapheme' }), fc.tuple(fc.nat(), fc.string()).map(([n, s]) => `c1.${n}.${s}`)).filter((s) => !/^c1\.\d{1,20}\.\d{1,19}$/.test(s)).map((bad) => (page: ChangePage & Json) => ({ ...page, cursor: bad })),
        },
      ];
      for (const k of kinds) {
        await fc.assert(
          fc.asyncProperty(k.arbitrary, async (tamper) => {
            await refuse(k.kind, tamper);
          }),
          { numRuns: runs, seed: Math.floor(random() * 2 ** 31) },
        );
      }

      // Nothing refused was lost: the honest page brings every row, and its cursor is stored with them.
      const result = await engine.runCycle();
      expect(result.pulled, `seed ${SEED}`).toBe(written);
      expect(engine.cursor()).not.toBe(cursor);
      expect(Number(db.prepare(`SELECT count(*) FROM clinic_document`).pluck().get())).toBe(written / 3);

      // An upload answer is settled here too (a lost conflict writes the server's values locally):
      // hostile server values are refused before anything is settled, and the batch stays in the outbox.
      db.prepare(`INSERT INTO clinic_species (code, label) VALUES ('ferret', 'Ferret')`).run();
      const uploadCases: Array<{ kind: string; serverValues: Json; message: RegExp }> = [
        { kind: 'upload answer: server values of the wrong type', serverValues: { code: 'ferret', label: 42 }, message: /^The upload answer for change 0 has a value for clinic_species\.label that expected a string, got 42$/ },
        {
          kind: 'upload answer: server values with an injected column',
          serverValues: { code: 'ferret', label: 'x', 'label" = NULL; DROP TABLE clinic_species; --': 'x' },
          message: /^The upload answer for change 0 has a value for column "label\\" = NULL; DROP TABLE clinic_species; --", which clinic_species does not have on the server$/,
        },
        { kind: 'upload answer: server values for another row', serverValues: { code: 'weasel', label: 'Weasel' }, message: /^The upload answer for change 0 upserts a row of clinic_species whose values\.code differs from pk\.code$/ },
      ];
      for (const c of uploadCases) {
        uploadTamper = (answer) => ({ ...answer, applied: 0, conflicts: 1, results: [{ index: 0, status: 'conflict', resolution: 'server-wins', conflict_id: null, server_values: c.serverValues }] });
        const error = await engine.runCycle().catch((e: unknown) => e);
        uploadTamper = undefined;
        count(c.kind, error instanceof ProtocolError ? `ProtocolError ${error.code}` : `NOT REFUSED: ${String(error)}`);
        expect(error, `${c.kind} (seed ${SEED})`).toBeInstanceOf(ProtocolError);
        expect((error as Error).message, c.kind).toMatch(c.message);
        expect(db.prepare(`SELECT code, label FROM clinic_species`).all(), c.kind).toEqual([{ code: 'ferret', label: 'Ferret' }]);
        expect(Number(db.prepare(`SELECT count(*) FROM _epetsync_outbox`).pluck().get()), c.kind).toBe(1);
        expect(Number(db.prepare(`SELECT count(*) FROM _epetsync_conflicts`).pluck().get()), c.kind).toBe(0);
      }
      // The same batch is resent as it was; the server replays its honest answer.
      expect(await engine.runCycle()).toMatchObject({ pushed: 1, conflicts: 0, pending: 0 });
      expect(Number(db.prepare(`SELECT count(*) FROM _epetsync_outbox`).pluck().get())).toBe(0);
      expect(await bed.sql(`SELECT code, label FROM clinic_species WHERE code = 'ferret'`)).toEqual([{ code: 'ferret', label: 'Ferret' }]);
    } finally {
      db.close();
      await client.close();
    }
  }, scaled(120_000, 400_000));

  it('a snapshot re-pull (a restored database without a cursor) refuses hostile streams and applies nothing of them', async () => {
    const path = join(bed.dir, 'restored.sqlite3');
    makeDesktop(path);
    const db = new Database(path, { timeout: 5000 });
    db.defaultSafeIntegers(true);
    const client = libraryClient('restored-desk');
    try {
      // Two rows per apply chunk: a re-pull that applied rows as they came would show it at once.
      const engineFor = (): SyncEngine => new SyncEngine({ db, remote: client, batchSize: 2 });
      await engineFor().prepare();
      registerClientToken('restored-desk');
      // As a backup taken before the first sync would be: capture installed, no cursor.
      db.prepare(`DELETE FROM _epetsync_meta WHERE key = 'pull_cursor'`).run();
      const baseline = logicalHash(path);
      const rowsOf = (lines: Json[], table: string): Json[] => {
        const start = lines.findIndex((l) => l.type === 'table' && l.table === table);
        const end = lines.findIndex((l, i) => i > start && l.type === 'table_end');
        return lines.slice(start + 1, end);
      };
      /** Keeps the counts of table_end and end lines true to what is sent, so only the tampering itself is wrong. */
      const recount = (lines: Json[]): Json[] => {
        let table = 0;
        let total = 0;
        for (const l of lines) {
          if (l.type === 'table') table = 0;
          else if (l.type === 'row') {
            table += 1;
            total += 1;
          } else if (l.type === 'table_end') l.rows = table;
          else if (l.type === 'end') l.rows = total;
        }
        return lines;
      };
      const snapshotCases: Array<{ kind: string; tamper: SnapshotTamper; code?: string; message: RegExp }> = [
        { kind: 'snapshot without its end line', tamper: (lines) => lines.filter((l) => l.type !== 'end'), message: /^The snapshot stream ended without its end line/ },
        {
          kind: 'snapshot with a key twice, adjacent',
          tamper: (lines) => {
            const row = rowsOf(lines, 'clinic_pet')[0]!;
            lines.splice(lines.indexOf(row), 0, structuredClone(row));
            return recount(lines);
          },
          message: /^A snapshot row of clinic_pet repeats or goes back from the key \["\d+"\]/,
        },
        {
          kind: 'snapshot with a key twice, apart',
          tamper: (lines) => {
            const rows = rowsOf(lines, 'clinic_pet');
            lines.splice(lines.indexOf(rows[rows.length - 1]!) + 1, 0, structuredClone(rows[0]!));
            return recount(lines);
          },
          message: /^The snapshot sends the row clinic_pet \["\d+"\] twice$/,
        },
        {
          kind: 'snapshot row of the wrong arity',
          tamper: (lines) => {
            (rowsOf(lines, 'clinic_owner')[0]!.values as unknown[]).pop();
            return lines;
          },
          message: /^A snapshot row of clinic_owner does not have its 4 values$/,
        },
        {
          kind: 'snapshot row with an invalid date',
          tamper: (lines) => {
            const header = lines.find((l) => l.type === 'table' && l.table === 'clinic_document')!;
            (rowsOf(lines, 'clinic_document')[0]!.values as unknown[])[(header.columns as string[]).indexOf('taken_on')] = '2026-13-01';
            return lines;
          },
          message: /^A snapshot row of clinic_document has a value for clinic_document\.taken_on that "2026-13-01" is not a date in the calendar$/,
        },
        {
          kind: 'snapshot with an injected column',
          tamper: (lines) => {
            const header = lines.find((l) => l.type === 'table' && l.table === 'clinic_pet')!;
            (header.columns as string[])[2] = 'name"; DROP TABLE clinic_pet; --';
            return lines;
          },
          message: /^A snapshot row of clinic_pet has a value for column "name\\"; DROP TABLE clinic_pet; --", which clinic_pet does not have on the server$/,
        },
        {
          kind: 'snapshot of a table not asked for',
          tamper: (lines) => {
            for (const l of lines) if (l.table === 'clinic_species') l.table = 'auth_user';
            return lines;
          },
          message: /^The snapshot sends table "auth_user", which was not asked for$/,
        },
        {
          kind: 'snapshot with a malformed cursor',
          tamper: (lines) => {
            lines[0]!.cursor = 'c1.x.y';
            return lines;
          },
          message: /^The server's snapshot begin line does not match the protocol \(cursor: is not a protocol 1 cursor/,
        },
        {
          kind: 'snapshot line over the limit',
          tamper: (lines) => {
            (rowsOf(lines, 'clinic_owner')[0]!.values as unknown[])[1] = 'x'.repeat(LIMIT + 10);
            return lines;
          },
          code: 'EPS_PROTOCOL_TOO_LARGE',
          message: /^The server sent a stream line larger than the 1000000-byte limit$/,
        },
        {
          kind: 'snapshot with an endless line',
          tamper: (lines, res) => endless(res, 'application/x-ndjson', `${JSON.stringify(lines[0])}\n${JSON.stringify(lines[1])}\n{"type":"row","values":["1","`, 'x'.repeat(64 * 1024)),
          code: 'EPS_PROTOCOL_TOO_LARGE',
          message: /^The server sent a stream line larger than the 1000000-byte limit$/,
        },
        {
          kind: 'snapshot with truncated gzip',
          tamper: (lines, res) => truncatedGzip(res, 'application/x-ndjson', `${lines.map((l) => JSON.stringify(l)).join('\n')}\n`),
          message: /^The server sent a gzip body that ends before the compressed data does \(truncated\)$/,
        },
      ];
      for (const c of snapshotCases) {
        snapshotTamper = c.tamper;
        const error = await engineFor().prepare(undefined, { snapshotWhenNoCursor: true }).catch((e: unknown) => e);
        snapshotTamper = undefined;
        count(c.kind, error instanceof ProtocolError ? `ProtocolError ${error.code}` : `NOT REFUSED: ${String(error)}`);
        expect(error, `${c.kind} (seed ${SEED})`).toBeInstanceOf(ProtocolError);
        expect((error as ProtocolError).code, c.kind).toBe(c.code ?? 'EPS_PROTOCOL_MALFORMED');
        expect((error as Error).message, c.kind).toMatch(c.message);
        const same = logicalHash(path) === baseline;
        if (!same) changedFiles += 1;
        expect(same, `${c.kind} (seed ${SEED}): the restored database changed`).toBe(true);
      }
      // The honest snapshot then brings every row of the web side, with its cursor.
      await engineFor().prepare(undefined, { snapshotWhenNoCursor: true });
      expect(db.prepare(`SELECT value FROM _epetsync_meta WHERE key = 'pull_cursor'`).pluck().get()).toMatch(/^c1\.\d+\.\d+$/);
      const comparison = compareSides(await readSides(path, bed.pg.url, TABLES), CLINIC_BUSINESS_KEYS);
      found.lost += comparison.lost;
      found.duplicated += comparison.duplicated;
      found.comparisons += 1;
      expect(comparison.problems, `seed ${SEED}`).toEqual([]);
      expect(comparison.desktopRows).toBe(comparison.webRows);
    } finally {
      db.close();
      await client.close();
    }
  }, scaled(120_000, 400_000));
});
