import { formatCursor, headCursor } from './cursor.js';
import { encodeRow } from './feed.js';
import { quoteIdent, type SqlExecutor } from './sql.js';
import { castParam, selectList, type TableInfo } from './schema.js';

/** Chooses what a snapshot streams. */
export interface SnapshotQuery {
  tables: TableInfo[];
  /** Resume: skip tables before this one and its rows up to `after` (key text in primary-key order). */
  afterTable?: TableInfo | undefined;
  after?: Array<string | null> | undefined;
  /** Rows per keyset page. */
  pageSize?: number;
  signal?: AbortSignal | undefined;
  /** Runs after the last row, before the end line (records the node's pull state). */
  onComplete?: ((cursor: string) => Promise<void>) | undefined;
}

/**
 * Streams a snapshot as NDJSON lines: begin, then per table its rows in primary-key order read
 * with keyset pagination (never OFFSET), then end. The cursor is the feed head taken before the
 * first row is read, so pulling the feed from it replays whatever changed meanwhile.
 */
export async function* streamSnapshot(db: SqlExecutor, query: SnapshotQuery): AsyncGenerator<string> {
  const cursor = formatCursor(await headCursor(db));
  yield line({ type: 'begin', mode: 'snapshot', cursor });
  const pageSize = query.pageSize ?? 1000;
  let start = 0;
  if (query.afterTable) start = Math.max(0, query.tables.indexOf(query.afterTable));
  let totalRows = 0;
  let tables = 0;
  for (let i = start; i < query.tables.length; i += 1) {
    const table = query.tables[i]!;
    tables += 1;
    yield line({ type: 'table', table: table.name, columns: table.columns.map((c) => c.name), primary_key: table.primaryKey });
    let after = i === start && query.afterTable === table ? query.after : undefined;
    let rows = 0;
    for (;;) {
      if (query.signal?.aborted) return;
      const page = await readPage(db, table, after, pageSize);
      let chunk = '';
      for (const r of page) {
        const values = encodeRow(table, r);
        chunk += line({ type: 'row', values: table.columns.map((c) => values[c.name]) });
      }
      if (chunk) yield chunk;
      rows += page.length;
      if (page.length < pageSize) break;
      const last = page[page.length - 1]!;
      after = table.primaryKey.map((_, k) => last[`__k${k}`] as string | null);
    }
    totalRows += rows;
    yield line({ type: 'table_end', table: table.name, rows });
  }
  await query.onComplete?.(cursor);
  yield line({ type: 'end', tables, rows: totalRows, cursor });
}

async function readPage(db: SqlExecutor, table: TableInfo, after: Array<string | null> | undefined, limit: number): Promise<Array<Record<string, unknown>>> {
  const pkCols = table.primaryKey.map((n) => table.columnsByName.get(n)!);
  const keys = pkCols.map((c, k) => `to_jsonb(t.${quoteIdent(c.name)}) #>> '{}' AS __k${k}`).join(', ');
  const order = pkCols.map((c) => `t.${quoteIdent(c.name)}`).join(', ');
  const params: unknown[] = [];
  let where = '';
  if (after) {
    const bound = pkCols.map((c, k) => {
      params.push(after[k] ?? null);
      return castParam(c, `$${params.length}`);
    });
    where = `WHERE (${order}) > (${bound.join(', ')})`;
  }
  params.push(limit);
  const { rows } = await db.query<Record<string, unknown>>(
    `SELECT ${selectList(table)}, ${keys} FROM ${table.sqlName} t ${where} ORDER BY ${order} LIMIT $${params.length}::int`,
    params,
  );
  return rows;
}

function line(value: unknown): string {
  return `${JSON.stringify(value)}\n`;
}
