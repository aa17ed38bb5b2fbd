/**
 * Types and zod schemas for every answer of sync protocol 1 (docs/protocol.md).
 *
 * Wire objects keep the protocol's snake_case field names so that a reader can hold this file
 * next to docs/protocol.md. Every answer is parsed with these schemas before any field is used:
 * a malformed or hostile answer becomes a ProtocolError, never a crash or a wrong write.
 */
import { z } from 'zod';
import { ProtocolError } from '../errors.js';
import { fromWire as decodeWireValue } from '../server/values.js';
import { canonical, type WireValue } from '../sync/convert.js';
import { parsePgType, type PgType } from '../sync/pg-type.js';

/** Names the protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

/** Matches node ids and batch ids: 1–128 characters of `[A-Za-z0-9._:-]`. */
export const ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

// A JSON object key that would reach Object.prototype when copied into a plain object.
const HOSTILE_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/** Validates a JSON object of column → value whose keys cannot pollute prototypes. */
const rowObject = z
  .unknown()
  // Checked on the raw input: zod's record would silently drop the key, losing a value without a word.
  .refine((o) => o === null || typeof o !== 'object' || Object.keys(o).every((k) => !HOSTILE_KEYS.has(k)), {
    message: 'object key __proto__/constructor/prototype is not allowed',
  })
  .pipe(z.record(z.string(), z.unknown()));

/** Matches a protocol 1 cursor, `c1.<txid>.<seq>` (src/server/cursor.ts); txid and seq order the feed. */
export const CURSOR_PATTERN = /^c1\.(\d{1,20})\.(\d{1,19})$/;

/** Validates a cursor: anything else the server sends as one would be stored and sent back verbatim. */
const cursor = z.string().regex(CURSOR_PATTERN, 'is not a protocol 1 cursor (c1.<txid>.<seq>)');

const path = z.string().min(1).max(2048).regex(/^\//, 'must be an absolute path starting with /');

/** Validates the endpoint map of discovery and server info. */
export const endpointsSchema = z.object({
  sync: path,
  download: path,
  upload: path,
  bulk: path.optional(),
  token: path.optional(),
});
/** Maps each API route to its absolute path on the server. */
export type Endpoints = z.infer<typeof endpointsSchema>;

/** Validates `GET /.well-known/epetsync`. */
export const discoverySchema = z.object({
  service: z.literal('epetsync'),
  protocol: z.number().int(),
  server_version: z.string().max(200),
  api_base: path.optional(),
  endpoints: endpointsSchema,
});
/** Describes the discovery document. */
export type DiscoveryDocument = z.infer<typeof discoverySchema>;

/** Validates one column of a synced table in server info. */
export const columnInfoSchema = z.object({
  name: z.string().min(1),
  type: z.string().min(1),
  nullable: z.boolean(),
  default: z.string().nullable().optional(),
  max_length: z.number().int().nullable().optional(),
  identity: z.boolean().optional(),
});
/** Describes one column of a synced table. */
export type ColumnInfo = z.infer<typeof columnInfoSchema>;

/** Validates one synced table in server info. */
export const tableInfoSchema = z
  .object({
    name: z.string().min(1),
    primary_key: z.array(z.string().min(1)).min(1),
    columns: z.array(columnInfoSchema).min(1),
  })
  .refine((t) => t.primary_key.every((k) => t.columns.some((c) => c.name === k)), { message: 'primary_key names a column the table does not list' });
/** Describes one synced table: its columns and primary key. */
export type TableInfo = z.infer<typeof tableInfoSchema>;

/** Validates `GET /api/database/sync/`. */
export const serverInfoSchema = z.object({
  service: z.literal('epetsync'),
  protocol: z.number().int(),
  server_version: z.string().max(200),
  db_type: z.string(),
  engine: z.string(),
  server_time: z.string(),
  head_cursor: cursor,
  conflict_policy: z.enum(['server-wins', 'client-wins', 'newest-wins']),
  tables: z.array(tableInfoSchema),
  unsynced_tables: z.array(z.object({ name: z.string(), reason: z.string() })).default([]),
  endpoints: endpointsSchema.optional(),
  limits: z
    .object({
      max_body_bytes: z.number().int().positive().optional(),
      max_batch_changes: z.number().int().positive().optional(),
      max_wait_seconds: z.number().int().nonnegative().optional(),
    })
    .optional(),
  client: z
    .object({
      node_id: z.string(),
      last_push_at: z.string().nullable().optional(),
      last_pull_at: z.string().nullable().optional(),
      last_pull_cursor: z.string().nullable().optional(),
    })
    .nullable()
    .optional(),
});
/** Describes the server: identity, protocol, head cursor, synced tables, limits and this node's sync state. */
export type ServerInfo = z.infer<typeof serverInfoSchema>;

/** Validates `POST /api/auth/token/`. */
export const tokenResponseSchema = z.object({
  token: z.string().min(8).max(4096),
  token_type: z.string().optional(),
  expires_at: z.iso.datetime({ offset: true }).nullable().optional(),
  expires_in: z.number().nonnegative().nullable().optional(),
  username: z.string().optional(),
});
/** Describes a freshly issued token. */
export type TokenResponse = z.infer<typeof tokenResponseSchema>;

/** Validates one change of the feed. */
export const feedChangeSchema = z
  .object({
    table: z.string().min(1),
    op: z.enum(['upsert', 'delete']),
    pk: rowObject,
    values: rowObject.nullable(),
    origin: z.string().nullable().optional(),
  })
  .refine((c) => (c.op === 'upsert' ? c.values !== null : c.values === null), { message: 'upsert needs values and delete has values null' });
/** Describes one change read from the feed: the row's current values, or a delete. */
export type FeedChange = z.infer<typeof feedChangeSchema>;

/** Validates a change-feed page. */
export const changePageSchema = z.object({
  changes: z.array(feedChangeSchema),
  cursor,
  has_more: z.boolean(),
  head_cursor: cursor,
});
/** Describes one page of the change feed. */
export type ChangePage = z.infer<typeof changePageSchema>;

/** Describes one change sent in an upload batch. */
export interface UploadChange {
  table: string;
  op: 'upsert' | 'delete';
  pk: Record<string, unknown>;
  values?: Record<string, unknown>;
  /** The cursor of the client's last pull for this change alone. */
  base_cursor?: string;
}

/** Describes an upload batch: applied in one transaction, idempotent by `batch_id`. */
export interface UploadBatch {
  batch_id: string;
  base_cursor?: string;
  changes: UploadChange[];
}

/** Validates one per-change result of an upload. */
export const uploadResultSchema = z.union([
  z.object({ index: z.number().int().nonnegative(), status: z.literal('applied') }),
  z.object({
    index: z.number().int().nonnegative(),
    status: z.literal('conflict'),
    resolution: z.enum(['server-wins', 'client-wins']),
    conflict_id: z.string().nullable().optional(),
    server_values: rowObject.nullable().optional(),
  }),
]);
/** Describes what happened to one change of an upload. */
export type UploadResult = z.infer<typeof uploadResultSchema>;

/** Validates the answer to an upload. */
export const uploadResponseSchema = z.object({
  batch_id: z.string(),
  replayed: z.boolean(),
  applied: z.number().int().nonnegative(),
  conflicts: z.number().int().nonnegative(),
  results: z.array(uploadResultSchema),
  cursor,
});
/** Describes the answer to an upload. */
export type UploadResponse = z.infer<typeof uploadResponseSchema>;

/** Validates the answer to a bulk-load request. */
export const bulkLoadResponseSchema = z.object({
  table: z.string(),
  load_id: z.string(),
  rows: z.number().int().nonnegative(),
  total_rows: z.number().int().nonnegative(),
  last_key: z.array(z.unknown()).nullable(),
});
/** Describes the answer to one bulk-load request. */
export type BulkLoadResponse = z.infer<typeof bulkLoadResponseSchema>;

/** Validates `GET /api/database/bulk/?table&load_id`. */
export const bulkStatusSchema = z.object({
  table: z.string(),
  load_id: z.string(),
  total_rows: z.number().int().nonnegative(),
  last_key: z.array(z.unknown()).nullable(),
});
/** Describes where a bulk load stands: rows loaded so far and the last primary key. */
export type BulkStatus = z.infer<typeof bulkStatusSchema>;

/** Validates the error body `{"error":{code,message,request_id,details}}`. */
export const wireErrorSchema = z.object({
  error: z.object({
    code: z.string().max(100),
    message: z.string().max(10_000).optional(),
    request_id: z.string().max(200).optional(),
    details: z.record(z.string(), z.unknown()).optional(),
  }),
});
/** Describes a wire error answer. */
export type WireError = z.infer<typeof wireErrorSchema>['error'];

/** Validates the `begin` line of a snapshot stream. */
export const snapshotBeginSchema = z.object({ type: z.literal('begin'), mode: z.literal('snapshot'), cursor });
/** Validates a `table` line of a snapshot stream. */
export const snapshotTableSchema = z
  .object({
    type: z.literal('table'),
    table: z.string().min(1),
    columns: z.array(z.string().min(1)).min(1),
    primary_key: z.array(z.string().min(1)).min(1),
  })
  .refine((t) => new Set(t.columns).size === t.columns.length, { message: 'columns repeat a name' })
  .refine((t) => t.primary_key.every((k) => t.columns.includes(k)), { message: 'primary_key names a column not in columns' });
/** Validates a `table_end` line of a snapshot stream. */
export const snapshotTableEndSchema = z.object({ type: z.literal('table_end'), table: z.string(), rows: z.number().int().nonnegative() });
/** Validates the `end` line of a snapshot stream. */
export const snapshotEndSchema = z.object({
  type: z.literal('end'),
  tables: z.number().int().nonnegative(),
  rows: z.number().int().nonnegative(),
  cursor,
});

/** Describes one event of a snapshot: the begin cursor, a table header, a row, a table's end, the end. */
export type SnapshotEvent =
  | { type: 'begin'; cursor: string }
  | { type: 'table'; table: string; columns: string[]; primaryKey: string[] }
  | { type: 'row'; table: string; values: unknown[] }
  | { type: 'table_end'; table: string; rows: number }
  | { type: 'end'; tables: number; rows: number; cursor: string };

/** Returns true when a JSON answer looks like the legacy Django stub (`sync_method`, no `protocol`). */
export function isLegacyStub(body: unknown): boolean {
  return body !== null && typeof body === 'object' && !Array.isArray(body) && 'sync_method' in body && !('protocol' in body);
}

/** Returns a short description of zod issues, naming the path of each (for ProtocolError messages). */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${i.path.length > 0 ? i.path.map(String).join('.') : 'body'}: ${i.message}`)
    .join('; ');
}

// ---------------------------------------------------------------- checks against server info

/** Compares two protocol 1 cursors by feed position (transaction id, then sequence); null when either is not one. */
export function compareCursors(a: string, b: string): number | null {
  const x = CURSOR_PATTERN.exec(a);
  const y = CURSOR_PATTERN.exec(b);
  if (!x || !y) return null;
  const byTxid = BigInt(x[1]!) - BigInt(y[1]!);
  const diff = byTxid !== 0n ? byTxid : BigInt(x[2]!) - BigInt(y[2]!);
  return diff === 0n ? 0 : diff < 0n ? -1 : 1;
}

const HOSTILE_HINT =
  'Nothing from this answer was applied. Check that client and server run compatible epetsync versions and that no proxy rewrites answers, then sync again.';

function refused(message: string, details: Record<string, unknown>): ProtocolError {
  return new ProtocolError('EPS_PROTOCOL_MALFORMED', message, { hint: HOSTILE_HINT, details });
}

/** Quotes a name from the network for a message, cut short: a hostile server chooses it. */
function shown(name: string): string {
  return JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}…` : name);
}

const typeCache = new Map<string, PgType>();
function typeOf(column: ColumnInfo): PgType {
  let type = typeCache.get(column.type);
  if (!type) {
    type = parsePgType(column.type);
    if (typeCache.size < 1000) typeCache.set(column.type, type);
  }
  return type;
}

const DATE_PARTS = /^(\d{4,})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?/;
const TIME_PARTS = /^(\d{2}):(\d{2})(?::(\d{2}))?/;

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

/** Returns why a date, time or timestamp text names no real day or time of day (PostgreSQL never outputs one), or undefined. */
function calendarProblem(text: string, kind: PgType['kind']): string | undefined {
  if (kind === 'time') {
    const t = TIME_PARTS.exec(text);
    if (!t) return undefined;
    const [h, m, s] = [Number(t[1]), Number(t[2]), Number(t[3] ?? 0)];
    return (h < 24 && m < 60 && s < 60) || (h === 24 && m === 0 && s === 0) ? undefined : `${shown(text)} is not a time of day`;
  }
  const d = DATE_PARTS.exec(text);
  if (!d) return undefined; // infinity, -infinity
  const [year, month, day] = [Number(d[1]), Number(d[2]), Number(d[3])];
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return `${shown(text)} is not a date in the calendar`;
  if (d[4] !== undefined && (Number(d[4]) > 23 || Number(d[5]) > 59 || Number(d[6] ?? 0) > 59)) return `${shown(text)} is not a time of day`;
  return undefined;
}

/**
 * Returns why `value` cannot be a value of `column` as the server sends it (docs/protocol.md,
 * "Values on the wire"), or undefined when it fits: the type's JSON shape, a real calendar date,
 * text within `varchar(n)`, and no null in a NOT NULL column. PostgreSQL could not have produced
 * such a value, so an answer carrying one is refused rather than written to the desktop database.
 */
export function checkWireValue(value: unknown, column: ColumnInfo): string | undefined {
  if (value === null) return column.nullable ? undefined : 'is null, but the column is NOT NULL';
  const type = typeOf(column);
  const decoded = decodeWireValue(type.kind, value);
  if (!decoded.ok) return decoded.reason;
  if (typeof value !== 'string') return undefined;
  if (type.kind === 'text' && type.maxLength !== undefined && value.length > type.maxLength) {
    const characters = [...value].length;
    if (characters > type.maxLength) return `is ${characters} characters long, more than ${type.name} holds`;
  }
  if (type.kind === 'date' || type.kind === 'time' || type.kind === 'timestamp' || type.kind === 'timestamptz') return calendarProblem(value, type.kind);
  return undefined;
}

/**
 * Checks one change (a feed change, or a snapshot row put as an upsert) against the server's
 * synced tables: a table it lists, keyed by exactly its primary key, columns it has, values that
 * fit their column types, and `values` agreeing with `pk`. Throws EPS_PROTOCOL_MALFORMED naming
 * what is wrong; `details.stale_scope` is set when a newer server info could explain it (a table
 * or column added by a migration of the web app).
 */
export function checkFeedChange(change: FeedChange, tables: ReadonlyMap<string, TableInfo>, where: string): void {
  const table = tables.get(change.table);
  if (!table) throw refused(`${where} names table ${shown(change.table)}, which the server does not list as synced`, { table: change.table.slice(0, 200), stale_scope: true });
  const pkNames = Object.keys(change.pk);
  if (pkNames.length !== table.primary_key.length || !table.primary_key.every((k) => Object.hasOwn(change.pk, k))) {
    throw refused(`${where} keys a row of ${table.name} by ${pkNames.map(shown).join(', ') || 'nothing'}, not by its primary key ${table.primary_key.join(', ')}`, { table: table.name });
  }
  const columns = new Map(table.columns.map((c) => [c.name, c]));
  for (const name of table.primary_key) {
    const value = change.pk[name];
    const problem = value === null || value === undefined ? 'is null' : checkWireValue(value, columns.get(name)!);
    if (problem !== undefined) throw refused(`${where} has a primary key ${table.name}.${name} that ${problem}`, { table: table.name, column: name });
  }
  if (change.values === null) return;
  for (const [name, value] of Object.entries(change.values)) {
    const column = columns.get(name);
    if (!column) throw refused(`${where} has a value for column ${shown(name)}, which ${table.name} does not have on the server`, { table: table.name, column: name.slice(0, 200), stale_scope: true });
    const problem = checkWireValue(value, column);
    if (problem !== undefined) throw refused(`${where} has a value for ${table.name}.${name} that ${problem}`, { table: table.name, column: name });
  }
  for (const name of table.primary_key) {
    if (!Object.hasOwn(change.values, name)) throw refused(`${where} upserts a row of ${table.name} without its primary-key column ${name}`, { table: table.name, column: name });
    // Canonical forms: the same key may be spelled differently (an integer as a number or a string, a decimal's trailing zeros).
    const type = typeOf(columns.get(name)!);
    if (canonical(change.values[name] as WireValue, type) !== canonical(change.pk[name] as WireValue, type)) {
      throw refused(`${where} upserts a row of ${table.name} whose values.${name} differs from pk.${name}`, { table: table.name, column: name });
    }
  }
}

/**
 * Checks a feed page before anything of it is applied: its cursor moves forward from `since`
 * (past every change it carries; it may stay put only on an empty, final page), every change
 * passes {@link checkFeedChange}, and no row appears twice. Throws EPS_PROTOCOL_MALFORMED.
 */
export function checkChangePage(page: ChangePage, since: string, tables: ReadonlyMap<string, TableInfo>): void {
  const order = compareCursors(page.cursor, since);
  if (order !== null && order < 0) {
    throw refused(`The feed page's cursor ${page.cursor} is behind ${since}, the cursor it was read from: the feed went backwards`, { cursor: page.cursor, since });
  }
  if (order === 0 && (page.changes.length > 0 || page.has_more)) {
    const what = page.changes.length > 0 ? `carries ${page.changes.length} change(s)` : 'says more changes are ready';
    throw refused(`The feed page ${what} but its cursor does not move past ${since}`, { cursor: page.cursor, since });
  }
  const seen = new Set<string>();
  page.changes.forEach((change, i) => {
    const where = `Change ${i} of the feed page`;
    checkFeedChange(change, tables, where);
    const key = `${change.table}\u0000${JSON.stringify(tables.get(change.table)!.primary_key.map((k) => change.pk[k]))}`;
    if (seen.has(key)) throw refused(`${where} repeats the row ${change.table} ${JSON.stringify(change.pk).slice(0, 200)}: a page carries each row once`, { table: change.table, index: i });
    seen.add(key);
  });
}
