import { z } from 'zod';
import type { CallOptions, RemoteDatabaseClient } from './client.js';
import type { TableSpec } from '../sync/migrate/schema-map.js';
import { bulkLoadResponseSchema, type BulkLoadResponse } from './protocol.js';

/**
 * Typed calls of the migrate-support routes (docs/protocol.md, "Migrate support"), built on
 * {@link RemoteDatabaseClient.migrateRequest}. Every answer is validated before use.
 */

const countsSchema = z.object({
  head_cursor: z.string().min(1),
  tables: z.array(z.object({ table: z.string(), rows: z.number().int().nonnegative() })),
});
/** Describes the remote row counts and the feed head when they were read. */
export type RemoteCounts = z.infer<typeof countsSchema>;

const checksumSchema = z.object({
  table: z.string(),
  columns: z.array(z.string()),
  rows: z.number().int().nonnegative(),
  checksum: z.string().regex(/^[0-9a-f]{16}$/),
});
/** Describes a remote table checksum (see src/sync/checksum.ts). */
export type RemoteChecksum = z.infer<typeof checksumSchema>;

const finishSchema = z.object({
  sequences: z.array(z.object({ table: z.string(), sequence: z.string(), next_value: z.string().regex(/^-?\d+$/) })),
  head_cursor: z.string().min(1),
});
/** Describes the sequences moved past the largest ids and the feed head afterwards. */
export type FinishAnswer = z.infer<typeof finishSchema>;

const replaceSchema = z.object({
  load_id: z.string(),
  tables: z.array(z.object({ table: z.string(), rows: z.number().int().nonnegative() })),
  head_cursor: z.string().min(1),
});
/** Describes the outcome of an all-or-nothing replace. */
export type ReplaceAnswer = z.infer<typeof replaceSchema>;

/** Returns remote row counts of `tables` (all synced tables when omitted). */
export function remoteCounts(client: RemoteDatabaseClient, tables?: string[], options?: CallOptions): Promise<RemoteCounts> {
  return client.migrateRequest('counts/', countsSchema, { json: tables === undefined ? {} : { tables } }, options);
}

/** Returns the server's checksum of `table` over `columns`, computed like {@link TableChecksum} locally. */
export async function remoteChecksum(client: RemoteDatabaseClient, table: string, columns: string[], options?: CallOptions): Promise<RemoteChecksum> {
  const answer = await client.migrateRequest('checksum/', checksumSchema, { json: { table, columns } }, options);
  if (answer.table !== table) throw new TypeError(`checksum answer is for ${answer.table}, not ${table}`);
  return answer;
}

/** Moves the remote sequences of `tables` past their largest ids; returns them and the feed head. */
export function finishLoad(client: RemoteDatabaseClient, tables: string[], options?: CallOptions): Promise<FinishAnswer> {
  return client.migrateRequest('finish/', finishSchema, { json: { tables } }, options);
}

/** Streams rows into the staging copy of `table` for a later {@link replaceTables}; one request, one checkpoint (resume with bulkStatus). */
export function stageRows(
  client: RemoteDatabaseClient,
  table: string,
  rows: AsyncIterable<unknown[]> | Iterable<unknown[]>,
  options: CallOptions & { loadId: string; columns: string[] },
): Promise<BulkLoadResponse> {
  return client.migrateRequest('stage/', bulkLoadResponseSchema, { columns: options.columns, rows, query: { table, load_id: options.loadId } }, options);
}

/** Replaces the remote contents of `tables` with their staged rows in one transaction (all or nothing). */
export function replaceTables(client: RemoteDatabaseClient, loadId: string, tables: string[], options?: CallOptions): Promise<ReplaceAnswer> {
  return client.migrateRequest('replace/', replaceSchema, { json: { load_id: loadId, tables } }, options);
}

const schemaSchema = z.object({ created: z.array(z.string()), statements: z.array(z.string()) });
/** Describes the tables the server created and the statements it ran. */
export type SchemaAnswer = z.infer<typeof schemaSchema>;

/** Asks the server to create tables from structured specs (it validates them and writes the DDL itself). */
export function createTables(client: RemoteDatabaseClient, tables: TableSpec[], options?: CallOptions): Promise<SchemaAnswer> {
  return client.migrateRequest('schema/', schemaSchema, { json: { tables } }, options);
}

const rowsSchema = z.object({
  table: z.string(),
  columns: z.array(z.string()),
  rows: z.array(z.array(z.unknown())),
  next: z.array(z.string().nullable()).nullable(),
});
/** Describes one keyset page of remote rows (wire values in `columns` order; `next` is opaque). */
export type RowsPage = z.infer<typeof rowsSchema>;

/** Reads a remote table page by page in primary-key order without counting as this node's pull. */
export async function* remoteRows(client: RemoteDatabaseClient, table: string, options: CallOptions & { pageSize?: number } = {}): AsyncGenerator<RowsPage> {
  let after: Array<string | null> | null = null;
  for (;;) {
    const body: Record<string, unknown> = { table, limit: options.pageSize ?? 2000 };
    if (after) body.after = after;
    const page = await client.migrateRequest('rows/', rowsSchema, { json: body }, options);
    if (page.table !== table) throw new TypeError(`rows answer is for ${page.table}, not ${table}`);
    yield page;
    if (!page.next) return;
    after = page.next;
  }
}
