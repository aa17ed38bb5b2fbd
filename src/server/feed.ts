import { HORIZON_SQL, formatCursor, headCursor, type Cursor } from './cursor.js';
import { quoteIdent, type SqlExecutor } from './sql.js';
import { selectList, type SyncSchema, type TableInfo } from './schema.js';
import { textToWire, toWire } from './values.js';

/** Describes one change as the feed sends it: the row's current values, or a delete tombstone. */
export interface FeedChange {
  table: string;
  op: 'upsert' | 'delete';
  pk: Record<string, unknown>;
  values: Record<string, unknown> | null;
  origin: string | null;
}

/** Describes one page of the change feed. */
export interface FeedPage {
  changes: FeedChange[];
  cursor: string;
  has_more: boolean;
  head_cursor: string;
  /** Changelog entries the page covered (before dedupe and the no-echo filter). */
  entries: number;
}

/** Chooses what a feed page reads. */
export interface FeedQuery {
  since: Cursor;
  limit: number;
  /** Only these tables (already validated); undefined for all synced tables. */
  tables?: string[] | undefined;
  /** The requesting node: its own uploads are left out (no echo). */
  node?: string | undefined;
}

interface LogRow {
  txid: string;
  seq: string;
  table_name: string;
  pk: Record<string, string | null>;
  origin: string | null;
}

/**
 * Pages of nothing but the requester's own uploads read on in one request at most: after a client
 * pushed a large backlog, the feed would otherwise hand its own echo back page by empty page.
 */
const OWN_ECHO_PAGES = 20;

/**
 * Reads one page of the change feed below the safe horizon, with each row's current values. A page
 * holding only the requester's own uploads is skipped over (up to {@link OWN_ECHO_PAGES} pages), its
 * cursor moving past them, so the answer carries changes for the requester when there are any.
 */
export async function readFeed(db: SqlExecutor, schema: SyncSchema, query: FeedQuery): Promise<FeedPage> {
  let since = query.since;
  let entries = 0;
  for (let pages = 1; ; pages += 1) {
    const page = await readPage(db, schema, { ...query, since });
    entries += page.entries;
    if (page.changes.length > 0 || !page.hasMore || pages >= OWN_ECHO_PAGES) {
      const head = await headCursor(db);
      return { changes: page.changes, cursor: formatCursor(page.cursor), has_more: page.hasMore, head_cursor: formatCursor(head), entries };
    }
    since = page.cursor;
  }
}

async function readPage(db: SqlExecutor, schema: SyncSchema, query: FeedQuery): Promise<{ changes: FeedChange[]; cursor: Cursor; hasMore: boolean; entries: number }> {
  const names = query.tables ?? schema.tables.map((t) => t.name);
  const { rows } = await db.query<LogRow>(
    `WITH h AS (SELECT ${HORIZON_SQL} AS horizon)
     SELECT c.txid::text AS txid, c.seq::text AS seq, c.table_name, c.pk, c.origin
       FROM epetsync.changelog c, h
      WHERE (c.txid, c.seq) > ($1::text::xid8, $2::text::bigint) AND c.txid < h.horizon
        AND c.table_name IN (SELECT jsonb_array_elements_text($3::text::jsonb))
      ORDER BY c.txid, c.seq
      LIMIT $4::int`,
    [query.since.txid, query.since.seq, JSON.stringify(names), query.limit + 1],
  );
  const hasMore = rows.length > query.limit;
  const page = hasMore ? rows.slice(0, query.limit) : rows;
  const last = page[page.length - 1];
  const cursor = last ? { txid: last.txid, seq: last.seq } : query.since;

  // A row changed several times in the page appears once, at its last position; it is left out
  // only when every one of those changes came from the requesting node.
  const latest = new Map<string, { index: number; entry: LogRow; foreign: boolean }>();
  page.forEach((entry, index) => {
    if (!schema.byName.has(entry.table_name)) return;
    const key = `${entry.table_name}\u0000${canonicalKey(entry.pk)}`;
    const foreign = query.node === undefined || entry.origin !== query.node;
    const before = latest.get(key);
    latest.set(key, { index, entry, foreign: foreign || (before?.foreign ?? false) });
  });
  const kept = [...latest.values()].filter((x) => x.foreign).sort((a, b) => a.index - b.index);

  const byTable = new Map<TableInfo, LogRow[]>();
  for (const { entry } of kept) {
    const t = schema.byName.get(entry.table_name)!;
    const list = byTable.get(t) ?? [];
    list.push(entry);
    byTable.set(t, list);
  }
  const current = new Map<LogRow, Record<string, unknown>>();
  for (const [table, entries] of byTable) {
    const found = await fetchRowsByKey(db, table, entries.map((e) => e.pk));
    entries.forEach((e, i) => {
      const row = found.get(i);
      if (row) current.set(e, row);
    });
  }
  const changes: FeedChange[] = kept.map(({ entry }) => {
    const table = schema.byName.get(entry.table_name)!;
    const values = current.get(entry) ?? null;
    const pk: Record<string, unknown> = {};
    for (const name of table.primaryKey) {
      pk[name] = values ? values[name] : textToWire(table.columnsByName.get(name)!.kind, entry.pk[name] ?? null);
    }
    return { table: table.name, op: values ? 'upsert' : 'delete', pk, values, origin: entry.origin };
  });
  return { changes, cursor, hasMore, entries: page.length };
}

/**
 * Fetches current rows of one table by changelog keys (`{column: text}`), returned by the key's
 * index in `keys`. Keys travel as one JSON parameter; identifiers come from the schema only.
 */
export async function fetchRowsByKey(
  db: SqlExecutor,
  table: TableInfo,
  keys: Array<Record<string, string | null>>,
): Promise<Map<number, Record<string, unknown>>> {
  const out = new Map<number, Record<string, unknown>>();
  if (keys.length === 0) return out;
  const params: unknown[] = [JSON.stringify(keys)];
  const join = table.primaryKey
    .map((name) => {
      params.push(name);
      const col = table.columnsByName.get(name)!;
      return `t.${quoteIdent(name)} = (k.v ->> $${params.length}::text)::${col.castType}`;
    })
    .join(' AND ');
  const { rows } = await db.query<Record<string, unknown> & { __n: string | number }>(
    `SELECT k.n AS __n, ${selectList(table)}
       FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS k(v, n)
       JOIN ${table.sqlName} t ON ${join}`,
    params,
  );
  for (const r of rows) out.set(Number(r.__n) - 1, encodeRow(table, r));
  return out;
}

/** Encodes a database row (read through `selectList`) as the wire `{column: value}` object. */
export function encodeRow(table: TableInfo, row: Record<string, unknown>): Record<string, unknown> {
  const values: Record<string, unknown> = {};
  for (const c of table.columns) values[c.name] = toWire(c.kind, row[c.name]);
  return values;
}

/** Returns a stable text key for a changelog primary key object. */
export function canonicalKey(pk: Record<string, unknown>): string {
  return JSON.stringify(Object.keys(pk).sort().map((k) => [k, pk[k]]));
}
