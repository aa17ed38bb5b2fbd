import { createHash } from 'node:crypto';
import { checkCursorIssued, formatCursor, headCursor, parseCursor, type Cursor } from './cursor.js';
import { fetchRowsByKey } from './feed.js';
import { HttpError } from './http-error.js';
import { quoteIdent, type SqlDatabase, type SqlExecutor } from './sql.js';
import { castParam, type SyncSchema, type TableInfo } from './schema.js';
import { fromWire } from './values.js';

/** Names how the server settles a conflicting upload. */
export type ConflictPolicy = 'server-wins' | 'client-wins' | 'newest-wins';

/** Describes one change of an upload batch as it arrives (already schema-checked by the route). */
export interface UploadChange {
  table: string;
  op: 'upsert' | 'delete';
  pk: Record<string, unknown>;
  values?: Record<string, unknown> | null | undefined;
  base_cursor?: string | undefined;
}

/** Describes an upload batch as it arrives. */
export interface UploadBatch {
  batch_id: string;
  base_cursor?: string | undefined;
  changes: UploadChange[];
}

/** Describes the result of one change. */
export type ChangeResult =
  | { index: number; status: 'applied' }
  | { index: number; status: 'conflict'; resolution: 'server-wins' | 'client-wins'; conflict_id: string; server_values: Record<string, unknown> | null };

/** Describes the answer to an upload. */
export interface UploadResult {
  batch_id: string;
  replayed: boolean;
  applied: number;
  conflicts: number;
  results: ChangeResult[];
  cursor: string;
}

/** Carries the settings an upload needs from the server. */
export interface UploadOptions {
  node: string;
  policy: ConflictPolicy;
  updatedAtColumn?: string | undefined;
}

interface PreparedChange {
  index: number;
  table: TableInfo;
  op: 'upsert' | 'delete';
  /** Primary-key parameter text in primary-key order. */
  key: Array<string | null>;
  /** Columns and parameter text of an upsert. */
  columns: string[];
  params: Array<string | null>;
  values: Record<string, unknown> | null;
  base: Cursor | undefined;
}

/**
 * Applies an upload batch in one transaction: idempotent by batch id, conflicts detected against
 * the changelog after the base cursor and settled by the policy, both versions recorded.
 */
export async function applyUpload(db: SqlDatabase, schema: SyncSchema, batch: UploadBatch, options: UploadOptions): Promise<UploadResult> {
  const prepared = prepareBatch(schema, batch);
  const bases = new Map<string, Cursor>();
  if (batch.base_cursor !== undefined) bases.set(batch.base_cursor, parseCursor(batch.base_cursor, 'base_cursor'));
  batch.changes.forEach((c, i) => {
    if (c.base_cursor !== undefined) bases.set(c.base_cursor, parseCursor(c.base_cursor, `changes[${i}].base_cursor`));
  });
  // A base cursor from another database would silently hide every conflict.
  for (const [text, cursor] of bases) await checkCursorIssued(db, cursor, text, 'base_cursor');
  const hash = requestHash(options.node, batch);
  type Outcome = { replay: UploadResult } | { fresh: Omit<UploadResult, 'cursor'> };
  const outcome = await retryOnDeadlock(() => db.transaction(async (tx): Promise<Outcome> => {
    // Replays of one batch id racing each other wait here for the first to finish.
    await tx.query(`SELECT pg_advisory_xact_lock(hashtext('epetsync.batch'), hashtext($1::text))`, [batch.batch_id]);
    const seen = await tx.query<{ request_hash: string; response: UploadResult }>(
      `SELECT request_hash, response FROM epetsync.batches WHERE batch_id = $1::text`,
      [batch.batch_id],
    );
    if (seen.rows[0]) {
      if (seen.rows[0].request_hash !== hash) {
        throw new HttpError('BATCH_ID_REUSED', `batch_id "${batch.batch_id}" was already used for a different batch`, { batch_id: batch.batch_id });
      }
      return { replay: seen.rows[0].response };
    }
    await tx.query(`SELECT set_config('epetsync.origin', $1::text, true)`, [options.node]);
    const results: ChangeResult[] = [];
    let applied = 0;
    let conflicts = 0;
    const touched = new Set<TableInfo>();
    if (await applyBatched(tx, prepared, options.node)) {
      for (const change of prepared) {
        touched.add(change.table);
        results.push({ index: change.index, status: 'applied' });
      }
      applied = prepared.length;
    } else for (const change of prepared) {
      const conflict = change.base ? await findConflict(tx, change, change.base, options.node) : false;
      let apply = true;
      let result: ChangeResult = { index: change.index, status: 'applied' };
      if (conflict) {
        const server = (await fetchRowsByKey(tx, change.table, [keyObject(change)])).get(0) ?? null;
        const clientWins = options.policy === 'client-wins' || (options.policy === 'newest-wins' && (await clientIsNewer(tx, change, server, options.updatedAtColumn)));
        const resolution = clientWins ? 'client-wins' : 'server-wins';
        const { rows } = await tx.query<{ conflict_id: string }>(
          `INSERT INTO epetsync.conflicts (batch_id, node_id, table_name, pk, client_op, client_values, server_values, policy, resolution)
           VALUES ($1::text, $2::text, $3::text, $4::text::jsonb, $5::text, $6::text::jsonb, $7::text::jsonb, $8::text, $9::text)
           RETURNING conflict_id::text AS conflict_id`,
          [batch.batch_id, options.node, change.table.name, JSON.stringify(batch.changes[change.index]!.pk), change.op,
            change.values === null ? null : JSON.stringify(change.values), server === null ? null : JSON.stringify(server), options.policy, resolution],
        );
        apply = clientWins;
        conflicts += 1;
        result = { index: change.index, status: 'conflict', resolution, conflict_id: rows[0]!.conflict_id, server_values: server };
      }
      if (apply) {
        await applyChange(tx, change);
        if (!conflict && change.base && (await findConflict(tx, change, change.base, options.node))) throw lateConflict();
        touched.add(change.table);
        applied += 1;
      }
      results.push(result);
    }
    for (const t of touched) await advanceSequence(tx, t);
    await tx.query(
      `INSERT INTO epetsync.nodes (node_id, last_push_at) VALUES ($1::text, now())
       ON CONFLICT (node_id) DO UPDATE SET last_push_at = now()`,
      [options.node],
    );
    const response: Omit<UploadResult, 'cursor'> = { batch_id: batch.batch_id, replayed: false, applied, conflicts, results };
    await tx.query(
      `INSERT INTO epetsync.batches (batch_id, node_id, request_hash, response) VALUES ($1::text, $2::text, $3::text, $4::text::jsonb)`,
      [batch.batch_id, options.node, hash, JSON.stringify(response)],
    );
    return { fresh: response };
  })).catch((error: unknown) => {
    // Deferred foreign keys are checked at COMMIT, after every change ran (a child whose parent in the
    // batch lost a conflict to the web app's delete): the batch is refused, nothing applied, not a server fault.
    const e = error as { code?: unknown; message?: unknown; table?: unknown; constraint?: unknown };
    if (typeof e.code !== 'string' || !e.code.startsWith('23')) throw error;
    throw new HttpError('CONSTRAINT_VIOLATION', `the batch as a whole: ${String(e.message)}`, {
      sqlstate: e.code,
      ...(typeof e.table === 'string' ? { table: e.table } : {}),
      ...(typeof e.constraint === 'string' ? { constraint: e.constraint } : {}),
    });
  });
  if ('replay' in outcome) {
    const original = outcome.replay as Partial<UploadResult> & Omit<UploadResult, 'cursor'>;
    return { ...original, replayed: true, cursor: original.cursor ?? formatCursor(await headCursor(db)) };
  }
  const cursor = formatCursor(await headCursor(db));
  // Kept for replays; a crash before this line only means a replay reports the head at that time,
  // so its commit does not wait for a disk flush of its own (one per batch on a catch-up).
  await db
    .transaction(async (tx) => {
      await tx.query(`SET LOCAL synchronous_commit TO OFF`);
      await tx.query(`UPDATE epetsync.batches SET response = response || jsonb_build_object('cursor', $2::text) WHERE batch_id = $1::text`, [batch.batch_id, cursor]);
    })
    .catch(() => {});
  return { ...outcome.fresh, cursor };
}

/**
 * Applies a batch with one statement per run of consecutive changes to the same table with the
 * same operation and columns, instead of one statement (and one conflict query) per change: a
 * large backlog is otherwise bound by round trips. Taken only when it gives exactly what the
 * change-by-change path gives: every row appears once in the batch and no change conflicts (one
 * query per table and base cursor finds out). Otherwise, or when PostgreSQL refuses a statement
 * (the change-by-change path then names the refused change's index), everything it did is rolled
 * back to a savepoint and it returns false.
 */
async function applyBatched(tx: SqlExecutor, prepared: PreparedChange[], node: string): Promise<boolean> {
  if (prepared.length < 2) return false;
  const keys = new Set<string>();
  for (const change of prepared) {
    const key = `${change.table.name}\u0000${change.key.join('\u0000')}`;
    if (keys.has(key)) return false;
    keys.add(key);
  }
  const checks = new Map<string, { table: TableInfo; base: Cursor; changes: PreparedChange[] }>();
  for (const change of prepared) {
    if (!change.base) continue;
    const id = `${change.table.name}\u0000${change.base.txid}.${change.base.seq}`;
    const group = checks.get(id) ?? { table: change.table, base: change.base, changes: [] };
    group.changes.push(change);
    checks.set(id, group);
  }
  for (const group of checks.values()) {
    if (await anyConflict(tx, group.table, group.base, group.changes, node)) return false;
  }
  await tx.query('SAVEPOINT epetsync_batched');
  try {
    for (let start = 0; start < prepared.length; ) {
      const first = prepared[start]!;
      const shape = `${first.columns.join('\u0000')}`;
      let end = start + 1;
      while (end < prepared.length && prepared[end]!.table === first.table && prepared[end]!.op === first.op && prepared[end]!.columns.join('\u0000') === shape) end += 1;
      const run = prepared.slice(start, end);
      if (first.op === 'delete') await deleteRun(tx, first.table, run);
      else await upsertRun(tx, first.table, run);
      start = end;
    }
  } catch (error) {
    await tx.query('ROLLBACK TO SAVEPOINT epetsync_batched');
    // A deadlock victim is retried whole; any other refusal is found and named change by change.
    const code = (error as { code?: unknown }).code;
    if (code === '40P01' || code === '40001') throw error;
    return false;
  }
  for (const group of checks.values()) {
    if (await anyConflict(tx, group.table, group.base, group.changes, node)) throw lateConflict();
  }
  await tx.query('RELEASE SAVEPOINT epetsync_batched');
  return true;
}

/**
 * Returns the error that runs an upload transaction again: a web app write still uncommitted
 * when the conflicts were looked for is invisible to that look, and the upsert then waited for
 * the row and overwrote it once it committed (a desktop insert silently replacing the web app's
 * new row with the same id). Looked for again after the apply, it shows; run again, the batch
 * sees it from the start and settles it as a conflict or id collision.
 */
function lateConflict(): Error {
  return Object.assign(new Error('a conflicting write committed while the batch was applied'), { code: '40001' });
}

/** Returns `unnest(...) WITH ORDINALITY AS k(c0, c1, …, n)` over one text[] parameter per column, from `$first`. */
function unnestColumns(count: number, first: number): string {
  const arrays = Array.from({ length: count }, (_, i) => `$${first + i}::text[]`).join(', ');
  const names = Array.from({ length: count }, (_, i) => `c${i}`).join(', ');
  return `unnest(${arrays}) WITH ORDINALITY AS k(${names}, n)`;
}

/** Returns the key columns of a run as one text[] per primary-key column. */
function keyArrays(table: TableInfo, run: PreparedChange[]): Array<Array<string | null>> {
  return table.primaryKey.map((_, k) => run.map((c) => c.key[k] ?? null));
}

async function anyConflict(tx: SqlExecutor, table: TableInfo, base: Cursor, run: PreparedChange[], node: string): Promise<boolean> {
  const key = `jsonb_build_object(${table.primaryKey
    .map((name, k) => `${quoteLiteral(name)}, to_jsonb(${castParam(table.columnsByName.get(name)!, `k.c${k}`)}) #>> '{}'`)
    .join(', ')})`;
  const { rows } = await tx.query(
    `SELECT 1 FROM ${unnestColumns(table.primaryKey.length, 5)}
      WHERE EXISTS (SELECT 1 FROM epetsync.changelog c
                     WHERE c.table_name = $1::text AND c.pk = ${key}
                       AND (c.txid, c.seq) > ($2::text::xid8, $3::text::bigint) AND c.origin IS DISTINCT FROM $4::text)
      LIMIT 1`,
    [table.name, base.txid, base.seq, node, ...keyArrays(table, run)],
  );
  return rows.length > 0;
}

async function deleteRun(tx: SqlExecutor, table: TableInfo, run: PreparedChange[]): Promise<void> {
  const where = table.primaryKey.map((name, k) => `t.${quoteIdent(name)} = ${castParam(table.columnsByName.get(name)!, `k.c${k}`)}`).join(' AND ');
  await tx.query(`DELETE FROM ${table.sqlName} t USING ${unnestColumns(table.primaryKey.length, 1)} WHERE ${where}`, keyArrays(table, run));
}

async function upsertRun(tx: SqlExecutor, table: TableInfo, run: PreparedChange[]): Promise<void> {
  const columns = run[0]!.columns;
  const cols = columns.map((c) => quoteIdent(c)).join(', ');
  const vals = columns.map((c, i) => castParam(table.columnsByName.get(c)!, `k.c${i}`)).join(', ');
  const updates = columns.filter((c) => !table.primaryKey.includes(c)).map((c) => `${quoteIdent(c)} = EXCLUDED.${quoteIdent(c)}`);
  const overriding = columns.some((c) => table.columnsByName.get(c)!.identityAlways) ? ' OVERRIDING SYSTEM VALUE' : '';
  const onConflict = updates.length > 0 ? `DO UPDATE SET ${updates.join(', ')}` : 'DO NOTHING';
  await tx.query(
    `INSERT INTO ${table.sqlName} (${cols})${overriding} SELECT ${vals} FROM ${unnestColumns(columns.length, 1)} ORDER BY k.n
     ON CONFLICT (${table.primaryKey.map((c) => quoteIdent(c)).join(', ')}) ${onConflict}`,
    columns.map((_, i) => run.map((c) => c.params[i] ?? null)),
  );
}

/**
 * Runs a whole transaction again when PostgreSQL chose it as a deadlock victim (two batches, or a
 * batch and the web app, locking the same rows in opposite order): nothing of it was applied.
 */
async function retryOnDeadlock<T>(run: () => Promise<T>, attempts = 3): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await run();
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (attempt >= attempts || (code !== '40P01' && code !== '40001')) throw error;
      await new Promise((r) => setTimeout(r, 20 * attempt + Math.floor(Math.random() * 30)));
    }
  }
}

/** Validates every change against the introspected schema before anything touches the database. */
export function prepareBatch(schema: SyncSchema, batch: UploadBatch): PreparedChange[] {
  const batchBase = batch.base_cursor === undefined ? undefined : parseCursor(batch.base_cursor, 'base_cursor');
  return batch.changes.map((change, index) => {
    const table = schema.byName.get(change.table);
    if (!table) throw new HttpError('UNKNOWN_TABLE', `table "${change.table}" is not synced (change ${index})`, { table: change.table, index });
    for (const name of Object.keys(change.pk)) {
      if (!table.columnsByName.has(name)) throw unknownColumn(table, name, index);
      if (!table.primaryKey.includes(name)) {
        throw new HttpError('BAD_REQUEST', `column "${name}" is not part of the primary key of "${table.name}" (change ${index})`, { table: table.name, column: name, index });
      }
    }
    const key = table.primaryKey.map((name) => {
      if (!(name in change.pk) || change.pk[name] === null) {
        throw new HttpError('MISSING_PRIMARY_KEY', `change ${index} on "${table.name}" lacks primary-key column "${name}"`, { table: table.name, column: name, index });
      }
      return decode(table, name, change.pk[name], index);
    });
    const base = change.base_cursor !== undefined ? parseCursor(change.base_cursor, `changes[${index}].base_cursor`) : batchBase;
    if (change.op === 'delete') return { index, table, op: 'delete' as const, key, columns: [], params: [], values: null, base };
    const values = change.values;
    if (!values) throw new HttpError('BAD_REQUEST', `change ${index} is an upsert without values`, { index, problems: [{ path: `body/changes/${index}/values`, message: 'is required for an upsert' }] });
    const columns: string[] = [];
    const params: Array<string | null> = [];
    for (const [name, value] of Object.entries(values)) {
      if (!table.columnsByName.has(name)) throw unknownColumn(table, name, index);
      if (table.columnsByName.get(name)!.generated) continue; // PostgreSQL computes it
      columns.push(name);
      params.push(decode(table, name, value, index));
    }
    table.primaryKey.forEach((name, k) => {
      const i = columns.indexOf(name);
      if (i === -1) throw new HttpError('MISSING_PRIMARY_KEY', `change ${index}: values lack primary-key column "${name}" of "${table.name}"`, { table: table.name, column: name, index });
      if (params[i] !== key[k]) {
        throw new HttpError('INVALID_VALUE', `change ${index}: values.${name} differs from pk.${name}`, { table: table.name, column: name, index });
      }
    });
    return { index, table, op: 'upsert' as const, key, columns, params, values, base };
  });
}

function decode(table: TableInfo, column: string, value: unknown, index: number): string | null {
  const col = table.columnsByName.get(column)!;
  const d = fromWire(col.kind, value);
  if (!d.ok) throw new HttpError('INVALID_VALUE', `${table.name}.${column} (change ${index}): ${d.reason}`, { table: table.name, column, index });
  return d.param;
}

function unknownColumn(table: TableInfo, column: string, index: number): HttpError {
  return new HttpError('UNKNOWN_COLUMN', `table "${table.name}" has no column "${column.slice(0, 100)}" (change ${index})`, { table: table.name, column: column.slice(0, 128), index });
}

function keyObject(change: PreparedChange): Record<string, string | null> {
  return Object.fromEntries(change.table.primaryKey.map((name, k) => [name, change.key[k] ?? null]));
}

/** SQL building the changelog's pk jsonb from bound key text, exactly as the capture trigger does. */
function changelogKeySql(table: TableInfo, firstParam: number): string {
  return `jsonb_build_object(${table.primaryKey
    .map((name, k) => `${quoteLiteral(name)}, to_jsonb(${castParam(table.columnsByName.get(name)!, `$${firstParam + k}`)}) #>> '{}'`)
    .join(', ')})`;
}

async function findConflict(tx: SqlExecutor, change: PreparedChange, base: Cursor, node: string): Promise<boolean> {
  const { rows } = await tx.query(
    `SELECT 1 FROM epetsync.changelog c
      WHERE c.table_name = $1::text AND c.pk = ${changelogKeySql(change.table, 5)}
        AND (c.txid, c.seq) > ($2::text::xid8, $3::text::bigint) AND c.origin IS DISTINCT FROM $4::text
      LIMIT 1`,
    [change.table.name, base.txid, base.seq, node, ...change.key],
  );
  return rows.length > 0;
}

async function clientIsNewer(tx: SqlExecutor, change: PreparedChange, server: Record<string, unknown> | null, column: string | undefined): Promise<boolean> {
  if (!column || server === null || change.op !== 'upsert') return false;
  const col = change.table.columnsByName.get(column);
  const i = change.columns.indexOf(column);
  if (!col || i === -1 || change.params[i] === null) return false;
  const serverValue = fromWire(col.kind, server[column]);
  if (!serverValue.ok || serverValue.param === null) return true;
  const { rows } = await tx.query<{ newer: boolean }>(
    `SELECT ${castParam(col, '$1')} > ${castParam(col, '$2')} AS newer`,
    [change.params[i], serverValue.param],
  );
  return rows[0]?.newer === true;
}

async function applyChange(tx: SqlExecutor, change: PreparedChange): Promise<void> {
  const t = change.table;
  if (change.op === 'delete') {
    const where = t.primaryKey.map((name, k) => `${quoteIdent(name)} = ${castParam(t.columnsByName.get(name)!, `$${k + 1}`)}`).join(' AND ');
    await runChange(tx, change.index, `DELETE FROM ${t.sqlName} WHERE ${where}`, change.key);
    return;
  }
  const cols = change.columns.map((c) => quoteIdent(c)).join(', ');
  const vals = change.columns.map((c, i) => castParam(t.columnsByName.get(c)!, `$${i + 1}`)).join(', ');
  const updates = change.columns.filter((c) => !t.primaryKey.includes(c)).map((c) => `${quoteIdent(c)} = EXCLUDED.${quoteIdent(c)}`);
  const overriding = change.columns.some((c) => t.columnsByName.get(c)!.identityAlways) ? ' OVERRIDING SYSTEM VALUE' : '';
  const onConflict = updates.length > 0 ? `DO UPDATE SET ${updates.join(', ')}` : 'DO NOTHING';
  await runChange(
    tx,
    change.index,
    `INSERT INTO ${t.sqlName} (${cols})${overriding} VALUES (${vals}) ON CONFLICT (${t.primaryKey.map((c) => quoteIdent(c)).join(', ')}) ${onConflict}`,
    change.params,
  );
}

async function runChange(tx: SqlExecutor, index: number, sql: string, params: unknown[]): Promise<void> {
  try {
    await tx.query(sql, params);
  } catch (error) {
    throw databaseRefusal(error, { index });
  }
}

/** Maps a PostgreSQL refusal (constraint, bad value) to its wire error; anything else is rethrown as is. */
export function databaseRefusal(error: unknown, details: Record<string, unknown>): unknown {
  const e = error as { code?: unknown; message?: unknown; column?: unknown; constraint?: unknown; table?: unknown };
  const code = typeof e.code === 'string' ? e.code : '';
  const where = 'index' in details ? `change ${String(details.index)}` : `line ${String(details.line)}`;
  const extra: Record<string, unknown> = { ...details };
  if (typeof e.table === 'string') extra.table = e.table;
  if (typeof e.column === 'string') extra.column = e.column;
  if (typeof e.constraint === 'string') extra.constraint = e.constraint;
  if (code.startsWith('23')) return new HttpError('CONSTRAINT_VIOLATION', `${where}: ${String(e.message)}`, { ...extra, sqlstate: code });
  if (code.startsWith('22')) return new HttpError('INVALID_VALUE', `${where}: ${String(e.message)}`, { ...extra, sqlstate: code });
  return error;
}

/**
 * Moves a serial/identity sequence past the largest id present, so ids that arrived explicitly
 * (uploads, bulk loads) are not handed out again to the web app's next insert.
 */
export async function advanceSequence(tx: SqlExecutor, table: TableInfo): Promise<void> {
  if (!table.pkSequence) return;
  const pk = quoteIdent(table.primaryKey[0]!);
  await tx.query(
    `SELECT setval($1::text::regclass, m.max_id)
       FROM (SELECT max(${pk})::bigint AS max_id FROM ${table.sqlName}) m
      WHERE m.max_id IS NOT NULL
        AND m.max_id >= coalesce(pg_sequence_last_value($1::text::regclass) + 1,
                                 (SELECT seqstart FROM pg_sequence WHERE seqrelid = $1::text::regclass))`,
    [table.pkSequence],
  );
}

/** Returns the hash that tells a replay (same content) from a reused batch id. */
export function requestHash(node: string, batch: UploadBatch): string {
  return createHash('sha256').update(canonicalJson({ node, base_cursor: batch.base_cursor ?? null, changes: batch.changes })).digest('hex');
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}
