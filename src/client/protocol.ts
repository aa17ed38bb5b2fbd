/**
 * Types and zod schemas for every answer of sync protocol 1 (docs/protocol.md).
 *
 * Wire objects keep the protocol's snake_case field names so that a reader can hold this file
 * next to docs/protocol.md. Every answer is parsed with these schemas before any field is used:
 * a malformed or hostile answer becomes a ProtocolError, never a crash or a wrong write.
 */
import { z } from 'zod';

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
  head_cursor: z.string().min(1),
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
  cursor: z.string().min(1),
  has_more: z.boolean(),
  head_cursor: z.string().min(1),
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
  cursor: z.string().min(1),
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
export const snapshotBeginSchema = z.object({ type: z.literal('begin'), mode: z.literal('snapshot'), cursor: z.string().min(1) });
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
  cursor: z.string().min(1),
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
