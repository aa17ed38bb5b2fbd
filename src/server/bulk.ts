import { HttpError } from './http-error.js';
import { quoteIdent, type SqlDatabase, type SqlExecutor } from './sql.js';
import { castParam, type SyncSchema, type TableInfo } from './schema.js';
import { advanceSequence, databaseRefusal } from './upload.js';
import { fromWire } from './values.js';

/** Describes the answer to one bulk-load request. */
export interface BulkResult {
  table: string;
  load_id: string;
  rows: number;
  total_rows: number;
  last_key: unknown[] | null;
}

/** Describes where a bulk load stands: rows loaded and the last primary key acknowledged. */
export interface BulkProgress {
  table: string;
  load_id: string;
  total_rows: number;
  last_key: unknown[] | null;
}

interface ParsedLoad {
  table: TableInfo;
  columns: string[];
  rows: Array<Array<string | null>>;
  /** Body line number (1-based) of each row. */
  lines: number[];
  lastKey: unknown[] | null;
}

/** Parses and validates an NDJSON bulk body completely before anything touches the database. */
export function parseBulkBody(schema: SyncSchema, tableName: string, body: string): ParsedLoad {
  const table = requireTable(schema, tableName);
  const lines = body.split('\n');
  let header: unknown;
  let lineNo = 0;
  while (lineNo < lines.length && lines[lineNo]!.trim() === '') lineNo += 1;
  if (lineNo >= lines.length) throw new HttpError('BAD_REQUEST', 'the bulk body is empty: the first line must be {"columns":[...]}', { line: 1, problems: [{ path: 'line 1', message: 'is missing: the header line names the columns' }] });
  try {
    header = JSON.parse(lines[lineNo]!);
  } catch {
    throw new HttpError('INVALID_JSON', `line ${lineNo + 1} is not valid JSON`, { line: lineNo + 1 });
  }
  const columns = (header as { columns?: unknown } | null)?.columns;
  if (!Array.isArray(columns) || columns.length === 0 || !columns.every((c) => typeof c === 'string')) {
    throw new HttpError('BAD_REQUEST', `line ${lineNo + 1} must be {"columns":["col", ...]}`, { line: lineNo + 1, problems: [{ path: `line ${lineNo + 1}/columns`, message: 'must be a non-empty array of column names' }] });
  }
  const names = columns as string[];
  const seen = new Set<string>();
  for (const name of names) {
    if (!table.columnsByName.has(name)) throw new HttpError('UNKNOWN_COLUMN', `table "${table.name}" has no column "${name.slice(0, 100)}"`, { table: table.name, column: name.slice(0, 128), line: lineNo + 1 });
    if (seen.has(name)) throw new HttpError('BAD_REQUEST', `column "${name}" is named twice`, { line: lineNo + 1, problems: [{ path: `line ${lineNo + 1}`, message: `names column "${name}" twice` }] });
    seen.add(name);
  }
  const pkIndex = table.primaryKey.map((name) => {
    const i = names.indexOf(name);
    if (i === -1) throw new HttpError('MISSING_PRIMARY_KEY', `the columns of the bulk load lack primary-key column "${name}" of "${table.name}"`, { table: table.name, column: name, line: lineNo + 1 });
    return i;
  });
  const cols = names.map((n) => table.columnsByName.get(n)!);
  // Generated columns are computed by PostgreSQL: their values are read (and checked) but not written.
  const written = cols.map((c, k) => (c.generated ? -1 : k)).filter((k) => k >= 0);
  const rows: Array<Array<string | null>> = [];
  const rowLines: number[] = [];
  let lastKey: unknown[] | null = null;
  for (let i = lineNo + 1; i < lines.length; i += 1) {
    const text = lines[i]!;
    if (text.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new HttpError('INVALID_JSON', `line ${i + 1} is not valid JSON`, { line: i + 1 });
    }
    if (!Array.isArray(value) || value.length !== cols.length) {
      throw new HttpError('BAD_REQUEST', `line ${i + 1} must be an array of ${cols.length} values`, { line: i + 1, problems: [{ path: `line ${i + 1}`, message: `must be an array of ${cols.length} values` }] });
    }
    const row = cols.map((c, k) => {
      const d = fromWire(c.kind, value[k]);
      if (!d.ok) throw new HttpError('INVALID_VALUE', `${table.name}.${c.name} (line ${i + 1}): ${d.reason}`, { table: table.name, column: c.name, line: i + 1 });
      return d.param;
    });
    for (const k of pkIndex) {
      if (row[k] === null) throw new HttpError('MISSING_PRIMARY_KEY', `line ${i + 1}: primary-key column "${names[k]}" is null`, { table: table.name, column: names[k], line: i + 1 });
    }
    rows.push(written.length === row.length ? row : written.map((k) => row[k]!));
    rowLines.push(i + 1);
    lastKey = pkIndex.map((k) => value[k] as unknown);
  }
  return { table, columns: written.map((k) => names[k]!), rows, lines: rowLines, lastKey };
}

/**
 * Loads one bulk request in one transaction, with change capture off and the load's checkpoint
 * (total rows, last key) written in the same transaction: COPY on PostgreSQL, multi-row INSERT on PGlite.
 */
export async function applyBulkLoad(db: SqlDatabase, schema: SyncSchema, tableName: string, loadId: string, body: string): Promise<BulkResult> {
  const load = parseBulkBody(schema, tableName, body);
  const { table } = load;
  return db.transaction(async (tx) => {
    // Two requests of one load (a client retrying while its first attempt still runs) take turns.
    await tx.query(`SELECT pg_advisory_xact_lock(hashtext('epetsync.bulk'), hashtext($1::text))`, [`${loadId}/${table.name}`]);
    await tx.query(`SELECT set_config('epetsync.capture', 'off', true)`);
    if (load.rows.length > 0) {
      if (db.kind === 'postgres' && tx.copyFrom) await copyRows(tx, load);
      else await insertRows(tx, load);
      await advanceSequence(tx, table);
    }
    return recordBulkCheckpoint(tx, loadId, table.name, load.rows.length, load.lastKey);
  });
}

/** Returns where a bulk load stands, for resuming after a crash (0 rows and no key for an unknown load). */
export async function bulkProgress(db: SqlExecutor, schema: SyncSchema, tableName: string, loadId: string): Promise<BulkProgress> {
  const table = requireTable(schema, tableName);
  const { rows } = await db.query<{ total_rows: string; last_key: unknown[] | null }>(
    `SELECT total_rows::text AS total_rows, last_key FROM epetsync.bulk_loads WHERE load_id = $1::text AND table_name = $2::text`,
    [loadId, table.name],
  );
  return { table: table.name, load_id: loadId, total_rows: rows[0] ? Number(rows[0].total_rows) : 0, last_key: rows[0]?.last_key ?? null };
}

function requireTable(schema: SyncSchema, name: string): TableInfo {
  const table = schema.byName.get(name);
  if (!table) throw new HttpError('UNKNOWN_TABLE', `table "${name.slice(0, 100)}" is not synced`, { table: name });
  return table;
}

async function copyRows(tx: SqlExecutor, load: ParsedLoad): Promise<void> {
  const cols = load.columns.map((c) => quoteIdent(c)).join(', ');
  const csv = function* (): Generator<string> {
    let chunk = '';
    for (const row of load.rows) {
      chunk += `${row.map(csvField).join(',')}\n`;
      if (chunk.length > 65536) {
        yield chunk;
        chunk = '';
      }
    }
    if (chunk) yield chunk;
  };
  try {
    await tx.copyFrom!(`COPY ${load.table.sqlName} (${cols}) FROM STDIN WITH (FORMAT csv)`, csv());
  } catch (error) {
    // PostgreSQL names the failing COPY line in the error's context: "COPY t, line 3".
    const where = String((error as { where?: unknown }).where ?? '');
    const m = /line (\d+)/.exec(where);
    const line = m ? load.lines[Number(m[1]) - 1] : undefined;
    throw databaseRefusal(error, { line: line ?? null });
  }
}

function csvField(value: string | null): string {
  if (value === null) return '';
  return `"${value.replace(/"/g, '""')}"`;
}

async function insertRows(tx: SqlExecutor, load: ParsedLoad): Promise<void> {
  const cols = load.columns.map((c) => load.table.columnsByName.get(c)!);
  const overriding = cols.some((c) => c.identityAlways) ? ' OVERRIDING SYSTEM VALUE' : '';
  const head = `INSERT INTO ${load.table.sqlName} (${cols.map((c) => quoteIdent(c.name)).join(', ')})${overriding} VALUES `;
  const perStatement = Math.max(1, Math.min(500, Math.floor(30000 / cols.length)));
  for (let start = 0; start < load.rows.length; start += perStatement) {
    const batch = load.rows.slice(start, start + perStatement);
    const params: Array<string | null> = [];
    const tuples = batch.map((row) => `(${row.map((v, k) => { params.push(v); return castParam(cols[k]!, `$${params.length}`); }).join(', ')})`);
    await tx.query('SAVEPOINT epetsync_bulk');
    try {
      await tx.query(head + tuples.join(', '), params);
      await tx.query('RELEASE SAVEPOINT epetsync_bulk');
    } catch (error) {
      await tx.query('ROLLBACK TO SAVEPOINT epetsync_bulk');
      // Find the row at fault so the answer names its line, as COPY does.
      for (let i = 0; i < batch.length; i += 1) {
        const row = batch[i]!;
        try {
          await tx.query(head + `(${row.map((_, k) => castParam(cols[k]!, `$${k + 1}`)).join(', ')})`, row);
        } catch (rowError) {
          throw databaseRefusal(rowError, { line: load.lines[start + i] });
        }
      }
      throw databaseRefusal(error, { line: load.lines[start] });
    }
  }
}

/**
 * Records a bulk chunk's checkpoint (rows so far, last key) in the transaction that wrote its
 * rows, so a checkpoint never covers rows that were not committed, and returns the chunk's answer.
 */
export async function recordBulkCheckpoint(
  tx: SqlExecutor,
  loadId: string,
  table: string,
  rows: number,
  lastKey: unknown[] | null,
): Promise<{ table: string; load_id: string; rows: number; total_rows: number; last_key: unknown[] | null }> {
  const { rows: saved } = await tx.query<{ total_rows: string; last_key: unknown[] | null }>(
    `INSERT INTO epetsync.bulk_loads (load_id, table_name, total_rows, last_key) VALUES ($1::text, $2::text, $3::int, $4::text::jsonb)
     ON CONFLICT (load_id, table_name) DO UPDATE
       SET total_rows = epetsync.bulk_loads.total_rows + EXCLUDED.total_rows,
           last_key = coalesce(EXCLUDED.last_key, epetsync.bulk_loads.last_key), updated_at = now()
     RETURNING total_rows::text AS total_rows, last_key`,
    [loadId, table, rows, lastKey === null ? null : JSON.stringify(lastKey)],
  );
  return { table, load_id: loadId, rows, total_rows: Number(saved[0]!.total_rows), last_key: saved[0]!.last_key };
}
