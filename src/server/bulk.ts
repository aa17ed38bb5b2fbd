import { HttpError } from './http-error.js';
import { quoteIdent, type SqlDatabase, type SqlExecutor } from './sql.js';
import { castParam, type ColumnInfo, type SyncSchema, type TableInfo } from './schema.js';
import { advanceSequence, databaseRefusal } from './upload.js';
import { fromWire } from './values.js';
import { splitLines } from '../ndjson.js';

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

/**
 * Reads an NDJSON bulk body as it arrives: the header line is checked before anything touches the
 * database, then every row line is parsed and checked (JSON, arity, wire values, NULL keys) just
 * before it goes into COPY, so the body is never held in memory. A bad line ends the stream with
 * an error naming it; the caller's transaction then rolls back whatever went before it.
 */
export class BulkBody {
  /** Rows read so far. */
  rows = 0;
  /** The primary-key values of the last row, exactly as sent. */
  lastKey: unknown[] | null = null;
  /** The first error the body stream met (a bad line, a body over its limit). */
  failure: unknown = null;
  /** Body line number (1-based) of each row, to name the line PostgreSQL's COPY refuses. */
  private readonly lineOfRow: number[] = [];

  private constructor(
    readonly table: TableInfo,
    /** The columns written, in body order (generated columns are read and checked but not written). */
    readonly columns: string[],
    private readonly names: string[],
    private readonly kinds: ColumnInfo['kind'][],
    private readonly pkIndex: number[],
    private readonly written: number[] | null,
    private readonly lines: AsyncIterator<[string, number]>,
  ) {}

  /** Reads and checks the header line; throws a 4xx naming the problem before any row is read. */
  static async open(schema: SyncSchema, tableName: string, body: string | AsyncIterable<Buffer | string>): Promise<BulkBody> {
    const table = requireTable(schema, tableName);
    const lines = bodyLines(body)[Symbol.asyncIterator]();
    const first = await lines.next();
    if (first.done) throw new HttpError('BAD_REQUEST', 'the bulk body is empty: the first line must be {"columns":[...]}', { line: 1, problems: [{ path: 'line 1', message: 'is missing: the header line names the columns' }] });
    const [text, lineNo] = first.value;
    let header: unknown;
    try {
      header = JSON.parse(text);
    } catch {
      throw new HttpError('INVALID_JSON', `line ${lineNo} is not valid JSON`, { line: lineNo });
    }
    const columns = (header as { columns?: unknown } | null)?.columns;
    if (!Array.isArray(columns) || columns.length === 0 || !columns.every((c) => typeof c === 'string')) {
      throw new HttpError('BAD_REQUEST', `line ${lineNo} must be {"columns":["col", ...]}`, { line: lineNo, problems: [{ path: `line ${lineNo}/columns`, message: 'must be a non-empty array of column names' }] });
    }
    const names = columns as string[];
    const seen = new Set<string>();
    for (const name of names) {
      if (!table.columnsByName.has(name)) throw new HttpError('UNKNOWN_COLUMN', `table "${table.name}" has no column "${name.slice(0, 100)}"`, { table: table.name, column: name.slice(0, 128), line: lineNo });
      if (seen.has(name)) throw new HttpError('BAD_REQUEST', `column "${name}" is named twice`, { line: lineNo, problems: [{ path: `line ${lineNo}`, message: `names column "${name}" twice` }] });
      seen.add(name);
    }
    const pkIndex = table.primaryKey.map((name) => {
      const i = names.indexOf(name);
      if (i === -1) throw new HttpError('MISSING_PRIMARY_KEY', `the columns of the bulk load lack primary-key column "${name}" of "${table.name}"`, { table: table.name, column: name, line: lineNo });
      return i;
    });
    const cols = names.map((n) => table.columnsByName.get(n)!);
    // Generated columns are computed by PostgreSQL: their values are read (and checked) but not written.
    const written = cols.map((c, k) => (c.generated ? -1 : k)).filter((k) => k >= 0);
    return new BulkBody(table, written.map((k) => names[k]!), names, cols.map((c) => c.kind), pkIndex, written.length === cols.length ? null : written, lines);
  }

  /** Yields the rows still to come as parameter text (written columns only), checking each line. */
  async *params(): AsyncGenerator<Array<string | null>> {
    const width = this.names.length;
    try {
      for (;;) {
        const next = await this.lines.next();
        if (next.done) return;
        const [text, lineNo] = next.value;
        let value: unknown;
        try {
          value = JSON.parse(text);
        } catch {
          throw new HttpError('INVALID_JSON', `line ${lineNo} is not valid JSON`, { line: lineNo });
        }
        if (!Array.isArray(value) || value.length !== width) {
          throw new HttpError('BAD_REQUEST', `line ${lineNo} must be an array of ${width} values`, { line: lineNo, problems: [{ path: `line ${lineNo}`, message: `must be an array of ${width} values` }] });
        }
        const row = new Array<string | null>(width);
        for (let k = 0; k < width; k += 1) {
          const d = fromWire(this.kinds[k]!, value[k]);
          if (!d.ok) {
            const column = this.names[k]!;
            throw new HttpError('INVALID_VALUE', `${this.table.name}.${column} (line ${lineNo}): ${d.reason}`, { table: this.table.name, column, line: lineNo });
          }
          row[k] = d.param;
        }
        const key = new Array<unknown>(this.pkIndex.length);
        for (let j = 0; j < this.pkIndex.length; j += 1) {
          const k = this.pkIndex[j]!;
          if (row[k] === null) throw new HttpError('MISSING_PRIMARY_KEY', `line ${lineNo}: primary-key column "${this.names[k]}" is null`, { table: this.table.name, column: this.names[k], line: lineNo });
          key[j] = value[k] as unknown;
        }
        this.rows += 1;
        this.lastKey = key;
        this.lineOfRow.push(lineNo);
        yield this.written ? this.written.map((k) => row[k]!) : row;
      }
    } catch (error) {
      this.failure ??= error;
      throw error;
    }
  }

  /** Yields the rows still to come as PostgreSQL CSV, in pieces of about 64 KiB. */
  async *csv(): AsyncGenerator<string> {
    let piece = '';
    for await (const row of this.params()) {
      let line = '';
      for (let k = 0; k < row.length; k += 1) {
        const v = row[k]!;
        // Every non-NULL value is quoted, so an empty string stays distinct from NULL (an unquoted empty field).
        line += `${k === 0 ? '' : ','}${v === null ? '' : v.includes('"') ? `"${v.replaceAll('"', '""')}"` : `"${v}"`}`;
      }
      piece += `${line}\n`;
      if (piece.length >= 65536) {
        yield piece;
        piece = '';
      }
    }
    if (piece) yield piece;
  }

  /** Returns the body line of the n-th row (1-based, as COPY counts), or null. */
  lineOf(row: number): number | null {
    return this.lineOfRow[row - 1] ?? null;
  }

  /** Reads and drops the rest of the body, so an early answer never meets a client still sending. */
  async drain(): Promise<void> {
    try {
      while (!(await this.lines.next()).done) {
        // Dropped: the request already failed.
      }
    } catch {
      // The body itself failed (cut off, over its limit): nothing left to read.
    }
  }
}

/** Yields the non-blank lines of a body with their 1-based line numbers, as the body arrives (a line may span chunks). */
async function* bodyLines(body: string | AsyncIterable<Buffer | string>): AsyncGenerator<[string, number]> {
  for await (const { text, line } of splitLines(body)) if (text.trim() !== '') yield [text, line];
}

/**
 * Loads one bulk request in one transaction, with change capture off and the load's checkpoint
 * (total rows, last key) written in the same transaction: rows stream from the request body into
 * COPY as they arrive on PostgreSQL (multi-row INSERT on PGlite). A bad line or a refused row rolls
 * the whole request back.
 */
export async function applyBulkLoad(db: SqlDatabase, schema: SyncSchema, tableName: string, loadId: string, body: string | AsyncIterable<Buffer | string>): Promise<BulkResult> {
  const load = await BulkBody.open(schema, tableName, body);
  const { table } = load;
  try {
    return await db.transaction(async (tx) => {
      // Two requests of one load (a client retrying while its first attempt still runs) take turns.
      await tx.query(`SELECT pg_advisory_xact_lock(hashtext('epetsync.bulk'), hashtext($1::text))`, [`${loadId}/${table.name}`]);
      await tx.query(`SELECT set_config('epetsync.capture', 'off', true)`);
      await writeBulkRows(tx, db.kind === 'postgres', load, table.sqlName, (rows, lines) => insertRows(tx, load, rows, lines));
      if (load.rows > 0) await advanceSequence(tx, table);
      return recordBulkCheckpoint(tx, loadId, table.name, load.rows, load.lastKey);
    });
  } catch (error) {
    await load.drain();
    throw error;
  }
}

/**
 * Writes the rest of a bulk body into `target` (a quoted table name) with COPY when the engine has
 * it, else collects the rows and hands them to `insert`. A bad line surfaces as its own 4xx; a row
 * PostgreSQL refuses as `CONSTRAINT_VIOLATION` / `INVALID_VALUE` naming its body line.
 */
export async function writeBulkRows(tx: SqlExecutor, postgres: boolean, load: BulkBody, target: string, insert: (rows: Array<Array<string | null>>, lines: number[]) => Promise<void>): Promise<void> {
  if (postgres && tx.copyFrom) {
    const cols = load.columns.map((c) => quoteIdent(c)).join(', ');
    try {
      // copyFrom hands `data` to Readable.from, which pulls async iterables too: one piece at a time, with backpressure.
      await tx.copyFrom(`COPY ${target} (${cols}) FROM STDIN WITH (FORMAT csv)`, load.csv() as unknown as Iterable<string>);
    } catch (error) {
      if (load.failure) throw load.failure;
      // PostgreSQL names the failing COPY line in the error's context: "COPY t, line 3".
      const m = /line (\d+)/.exec(String((error as { where?: unknown }).where ?? ''));
      throw databaseRefusal(error, { line: m ? load.lineOf(Number(m[1])) : null });
    }
    return;
  }
  const rows: Array<Array<string | null>> = [];
  const lines: number[] = [];
  for await (const row of load.params()) {
    rows.push(row);
    lines.push(load.lineOf(load.rows)!);
  }
  if (rows.length > 0) await insert(rows, lines);
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

async function insertRows(tx: SqlExecutor, load: BulkBody, rows: Array<Array<string | null>>, lines: number[]): Promise<void> {
  const cols = load.columns.map((c) => load.table.columnsByName.get(c)!);
  const overriding = cols.some((c) => c.identityAlways) ? ' OVERRIDING SYSTEM VALUE' : '';
  const head = `INSERT INTO ${load.table.sqlName} (${cols.map((c) => quoteIdent(c.name)).join(', ')})${overriding} VALUES `;
  const perStatement = Math.max(1, Math.min(500, Math.floor(30000 / cols.length)));
  for (let start = 0; start < rows.length; start += perStatement) {
    const batch = rows.slice(start, start + perStatement);
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
          throw databaseRefusal(rowError, { line: lines[start + i] });
        }
      }
      throw databaseRefusal(error, { line: lines[start] });
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
