import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyRequest, preHandlerAsyncHookHandler } from 'fastify';
import type { WireValue } from '../sync/convert.js';
import { TableChecksum } from '../sync/checksum.js';
import { parsePgType } from '../sync/pg-type.js';
import { BulkBody, recordBulkCheckpoint, writeBulkRows } from './bulk.js';
import { bodyStream, discardBody } from './body.js';
import { formatCursor, headCursor } from './cursor.js';
import { HttpError } from './http-error.js';
import { encodeRow } from './feed.js';
import { toWire as wireValue } from './values.js';
import { castParam, INTERNAL_SCHEMA, selectList, type SyncSchema, type TableInfo } from './schema.js';
import { streamSnapshot } from './snapshot.js';
import { quoteIdent, type SqlDatabase, type SqlExecutor } from './sql.js';
import { advanceSequence, databaseRefusal } from './upload.js';
import { checkTableSpec, createTableSql, type TableSpec } from '../sync/migrate/schema-map.js';

/**
 * The routes `epetsync migrate` needs beyond protocol 1's bulk load (docs/protocol.md, "Migrate
 * support"): row counts, an order-independent checksum of a table computed over wire values the
 * same way the client computes it, moving sequences past the largest ids, and an all-or-nothing
 * replace (rows staged first, then swapped in one transaction). Every table and column name is
 * looked up in the introspected schema; nothing from the request reaches SQL text.
 */

/** Describes what the migrate routes need from the app. */
export interface MigrateRoutesOptions {
  db: SqlDatabase;
  schema: () => SyncSchema;
  requireSync: preHandlerAsyncHookHandler;
  /** Re-reads the sync scope, so tables just created are synced (and captured) at once. */
  refreshSchema?: (() => Promise<boolean>) | undefined;
}

const ID = '^[A-Za-z0-9._:-]{1,128}$';
const NO_QUERY = { type: 'object', properties: {}, additionalProperties: false } as const;
const TABLE_NAME = { type: 'string', minLength: 1, maxLength: 256 } as const;
const TABLES_BODY = {
  type: 'object',
  additionalProperties: false,
  properties: { tables: { type: 'array', maxItems: 10000, items: TABLE_NAME } },
} as const;
const CHECKSUM_BODY = {
  type: 'object',
  required: ['table'],
  additionalProperties: false,
  properties: { table: TABLE_NAME, columns: { type: 'array', minItems: 1, maxItems: 1600, items: { type: 'string', minLength: 1, maxLength: 256 } } },
} as const;
const ROWS_BODY = {
  type: 'object',
  required: ['table'],
  additionalProperties: false,
  properties: {
    table: TABLE_NAME,
    after: { type: 'array', maxItems: 32, items: { type: ['string', 'null'], maxLength: 65536 } },
    limit: { type: 'integer', minimum: 1, maximum: 5000 },
  },
} as const;
const STAGE_QUERY = {
  type: 'object',
  required: ['table', 'load_id'],
  additionalProperties: false,
  properties: { table: TABLE_NAME, load_id: { type: 'string', pattern: ID } },
} as const;
const REPLACE_BODY = {
  type: 'object',
  required: ['load_id', 'tables'],
  additionalProperties: false,
  properties: { load_id: { type: 'string', pattern: ID }, tables: { type: 'array', minItems: 1, maxItems: 10000, items: TABLE_NAME } },
} as const;

const NAME = { type: 'string', minLength: 1, maxLength: 63 } as const;
const NAMES = { type: 'array', minItems: 1, maxItems: 1600, items: NAME } as const;
const SCHEMA_BODY = {
  type: 'object',
  required: ['tables'],
  additionalProperties: false,
  properties: {
    tables: {
      type: 'array',
      minItems: 1,
      maxItems: 1000,
      items: {
        type: 'object',
        required: ['name', 'columns', 'primary_key', 'unique', 'foreign_keys'],
        additionalProperties: false,
        properties: {
          name: NAME,
          columns: {
            type: 'array',
            minItems: 1,
            maxItems: 1600,
            items: {
              type: 'object',
              required: ['name', 'type', 'not_null', 'default', 'identity', 'non_negative'],
              additionalProperties: false,
              properties: {
                name: NAME,
                type: { type: 'string', minLength: 1, maxLength: 64 },
                not_null: { type: 'boolean' },
                default: { type: ['string', 'null'], maxLength: 2100 },
                identity: { type: 'boolean' },
                non_negative: { type: 'boolean' },
              },
            },
          },
          primary_key: NAMES,
          unique: { type: 'array', maxItems: 1000, items: NAMES },
          foreign_keys: {
            type: 'array',
            maxItems: 1000,
            items: {
              type: 'object',
              required: ['columns', 'references', 'referenced_columns', 'on_delete'],
              additionalProperties: false,
              properties: { columns: NAMES, references: NAME, referenced_columns: NAMES, on_delete: { type: 'string', maxLength: 16 } },
            },
          },
        },
      },
    },
  },
} as const;

/**
 * Maps PostgreSQL refusing a table definition that passed the checks (a foreign key between columns
 * of different types or to columns without a unique key, a precision over 1000) to 400 BAD_REQUEST
 * naming why; anything else (a lost connection, no permission to create) is rethrown as it is.
 */
function definitionRefusal(error: unknown): unknown {
  const e = error as { code?: unknown; message?: unknown };
  const code = typeof e.code === 'string' ? e.code : '';
  if (error instanceof HttpError || !/^(22|42)/.test(code) || code === '42501') return error;
  const message = String(e.message).slice(0, 300);
  return new HttpError('BAD_REQUEST', `PostgreSQL refused the table definition: ${message}`, { sqlstate: code, problems: [{ path: 'body/tables', message }] });
}

/** Registers the migrate-support routes under `/api/database/migrate/` (every one needs a sync token). */
export async function migrateRoutes(app: FastifyInstance, options: MigrateRoutesOptions): Promise<void> {
  const { db, requireSync } = options;
  const json = async (request: FastifyRequest): Promise<void> => {
    const given = String(request.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (given !== 'application/json') throw new HttpError('UNSUPPORTED_MEDIA_TYPE', 'This route takes application/json.', { content_type: given.slice(0, 80) });
  };

  app.post('/api/database/migrate/counts/', { schema: { querystring: NO_QUERY, body: TABLES_BODY }, preValidation: json, preHandler: requireSync }, async (request) => {
    const schema = options.schema();
    const names = (request.body as { tables?: string[] }).tables;
    const tables = names === undefined ? schema.tables : unique(names).map((n) => requireTable(schema, n));
    const head = formatCursor(await headCursor(db));
    const out: Array<{ table: string; rows: number }> = [];
    for (const t of tables) {
      const { rows } = await db.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${t.sqlName}`);
      out.push({ table: t.name, rows: Number(rows[0]!.n) });
    }
    return { head_cursor: head, tables: out };
  });

  app.post('/api/database/migrate/checksum/', { schema: { querystring: NO_QUERY, body: CHECKSUM_BODY }, preValidation: json, preHandler: requireSync }, async (request) => {
    const body = request.body as { table: string; columns?: string[] };
    const table = requireTable(options.schema(), body.table);
    const names = body.columns === undefined ? table.columns.map((c) => c.name) : unique(body.columns);
    const index = names.map((n) => {
      const i = table.columns.findIndex((c) => c.name === n);
      if (i < 0) throw new HttpError('UNKNOWN_COLUMN', `table "${table.name}" has no column "${n.slice(0, 100)}"`, { table: table.name, column: n });
      return i;
    });
    const checksum = new TableChecksum(index.map((i) => parsePgType(table.columns[i]!.type)));
    let gone = false;
    request.raw.on('close', () => {
      gone = true;
    });
    // Keyset pages straight from the database into wire values: no JSON text in between.
    const cols = index.map((i) => table.columns[i]!);
    const pkCols = table.primaryKey.map((n) => table.columnsByName.get(n)!);
    const keys = pkCols.map((c, k) => `to_jsonb(t.${quoteIdent(c.name)}) #>> '{}' AS __k${k}`).join(', ');
    const order = pkCols.map((c) => `t.${quoteIdent(c.name)}`).join(', ');
    const pageSize = 5000;
    let after: Array<string | null> | null = null;
    for (;;) {
      if (gone) throw new HttpError('BAD_REQUEST', 'the client went away', {});
      const params: unknown[] = [];
      const bound: Array<string | null> | null = after;
      const where: string = bound === null ? '' : `WHERE (${order}) > (${pkCols.map((c, k) => { params.push(bound[k] ?? null); return castParam(c, `$${params.length}`); }).join(', ')})`;
      params.push(pageSize);
      const { rows }: { rows: Array<Record<string, unknown>> } = await db.query<Record<string, unknown>>(`SELECT ${selectList(table)}, ${keys} FROM ${table.sqlName} t ${where} ORDER BY ${order} LIMIT $${params.length}::int`, params);
      for (const r of rows) checksum.add(cols.map((c) => (wireValue(c.kind, r[c.name]) ?? null) as WireValue));
      if (rows.length < pageSize) break;
      const last: Record<string, unknown> = rows[rows.length - 1]!;
      after = pkCols.map((_, k) => last[`__k${k}`] as string | null);
    }
    return { table: table.name, columns: names, rows: checksum.rows, checksum: checksum.digest() };
  });

  // A keyset page of rows for migrate's own reads (the remote copy before --force, differing keys):
  // unlike a snapshot download it is not recorded as the node's pull, so --check-only writes nothing.
  app.post('/api/database/migrate/rows/', { schema: { querystring: NO_QUERY, body: ROWS_BODY }, preValidation: json, preHandler: requireSync }, async (request) => {
    const body = request.body as { table: string; after?: Array<string | null>; limit?: number };
    const table = requireTable(options.schema(), body.table);
    const limit = body.limit ?? 1000;
    const pkCols = table.primaryKey.map((n) => table.columnsByName.get(n)!);
    if (body.after !== undefined && body.after.length !== pkCols.length) {
      throw new HttpError('BAD_REQUEST', `after must hold ${pkCols.length} key value(s) of "${table.name}"`, { problems: [{ path: 'body/after', message: 'wrong length' }] });
    }
    const keys = pkCols.map((c, k) => `to_jsonb(t.${quoteIdent(c.name)}) #>> '{}' AS __k${k}`).join(', ');
    const order = pkCols.map((c) => `t.${quoteIdent(c.name)}`).join(', ');
    const params: unknown[] = [];
    let where = '';
    if (body.after) {
      const bound = pkCols.map((c, k) => {
        params.push(body.after![k] ?? null);
        return castParam(c, `$${params.length}`);
      });
      where = `WHERE (${order}) > (${bound.join(', ')})`;
    }
    params.push(limit);
    let rows: Array<Record<string, unknown>>;
    try {
      ({ rows } = await db.query<Record<string, unknown>>(`SELECT ${selectList(table)}, ${keys} FROM ${table.sqlName} t ${where} ORDER BY ${order} LIMIT $${params.length}::int`, params));
    } catch (error) {
      throw databaseRefusal(error, { line: null });
    }
    const last = rows[rows.length - 1];
    return {
      table: table.name,
      columns: table.columns.map((c) => c.name),
      rows: rows.map((r) => {
        const values = encodeRow(table, r);
        return table.columns.map((c) => values[c.name]);
      }),
      // Opaque to the client: the key as PostgreSQL's text, handed back as `after` for the next page.
      next: rows.length === limit && last ? pkCols.map((_, k) => (last[`__k${k}`] as string | null) ?? null) : null,
    };
  });

  app.post('/api/database/migrate/finish/', { schema: { querystring: NO_QUERY, body: TABLES_BODY }, preValidation: json, preHandler: requireSync }, async (request) => {
    const schema = options.schema();
    const names = (request.body as { tables?: string[] }).tables;
    const tables = names === undefined ? schema.tables : unique(names).map((n) => requireTable(schema, n));
    const sequences = await db.transaction(async (tx) => {
      const out: Array<{ table: string; sequence: string; next_value: string }> = [];
      for (const t of tables) {
        if (!t.pkSequence) continue;
        await advanceSequence(tx, t);
        const { rows } = await tx.query<{ next_value: string }>(
          `SELECT coalesce(pg_sequence_last_value($1::text::regclass) + 1, (SELECT seqstart FROM pg_sequence WHERE seqrelid = $1::text::regclass))::text AS next_value`,
          [t.pkSequence],
        );
        out.push({ table: t.name, sequence: t.pkSequence, next_value: rows[0]!.next_value });
      }
      return out;
    });
    return { sequences, head_cursor: formatCursor(await headCursor(db)) };
  });

  app.post('/api/database/migrate/schema/', { schema: { querystring: NO_QUERY, body: SCHEMA_BODY }, preValidation: json, preHandler: requireSync }, async (request) => {
    const specs = (request.body as { tables: TableSpec[] }).tables;
    const statements: string[] = [];
    const created = await db.transaction(async (tx) => {
      const { rows } = await tx.query<{ schema: string }>(`SELECT current_schema() AS schema`);
      const target = rows[0]?.schema;
      if (!target) throw new HttpError('BAD_REQUEST', 'the database has no current schema to create tables in', { problems: [{ path: 'search_path', message: 'empty' }] });
      const requested = new Map(specs.map((t) => [t.name, t]));
      const known = (name: string): string[] | null => {
        const inRequest = requested.get(name);
        if (inRequest) return inRequest.columns.map((c) => c.name);
        return options.schema().byName.get(name)?.columns.map((c) => c.name) ?? null;
      };
      const fks: string[] = [];
      for (const spec of specs) {
        const problem = checkTableSpec(spec, known);
        if (problem) throw new HttpError('BAD_REQUEST', problem, { table: spec.name, problems: [{ path: 'body/tables', message: problem }] });
        const { rows: exists } = await tx.query<{ ok: boolean }>(
          `SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1::text AND c.relname = $2::text) AS ok`,
          [target, spec.name],
        );
        if (exists[0]?.ok) throw new HttpError('BAD_REQUEST', `table "${spec.name}" already exists`, { table: spec.name, problems: [{ path: 'body/tables', message: 'already exists' }] });
        const sql = createTableSql(spec, target);
        await tx.query(sql.create);
        statements.push(sql.create);
        fks.push(...sql.foreignKeys);
      }
      for (const fk of fks) {
        await tx.query(fk);
        statements.push(fk);
      }
      return specs.map((t) => t.name);
    }).catch((error: unknown) => {
      throw definitionRefusal(error);
    });
    request.log.info({ tables: created }, 'migrate created tables');
    await options.refreshSchema?.();
    return { created, statements };
  });

  app.post('/api/database/migrate/stage/', {
    // The body is a stream (the x-ndjson parser hands it over unread): rows go into COPY as they arrive.
    schema: { querystring: STAGE_QUERY },
    preValidation: async (request) => {
      const given = String(request.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      if (given !== 'application/x-ndjson') throw new HttpError('UNSUPPORTED_MEDIA_TYPE', 'The stage route takes application/x-ndjson.', { content_type: given.slice(0, 80) });
    },
    preHandler: requireSync,
    onResponse: async (request) => discardBody(request.body),
  }, async (request) => {
    const q = request.query as { table: string; load_id: string };
    const load = await BulkBody.open(options.schema(), q.table, bodyStream(request.body));
    const stage = stageName(q.load_id, load.table.name);
    try {
      return await db.transaction(async (tx) => {
        await tx.query(`CREATE TABLE IF NOT EXISTS ${stage} (LIKE ${load.table.sqlName} INCLUDING DEFAULTS INCLUDING GENERATED)`);
        await writeBulkRows(tx, db.kind === 'postgres', load, stage, (rows, lines) => stageRows(tx, stage, load.table, load.columns, rows, lines));
        return recordBulkCheckpoint(tx, q.load_id, load.table.name, load.rows, load.lastKey);
      });
    } catch (error) {
      await load.drain();
      throw error;
    }
  });

  app.post('/api/database/migrate/replace/', { schema: { querystring: NO_QUERY, body: REPLACE_BODY }, preValidation: json, preHandler: requireSync }, async (request) => {
    const schema = options.schema();
    const body = request.body as { load_id: string; tables: string[] };
    const wanted = new Set(unique(body.tables).map((n) => requireTable(schema, n)));
    // Foreign-key order from the introspected schema: delete children first, insert parents first.
    const tables = schema.tables.filter((t) => wanted.has(t));
    const dropStages = async (): Promise<void> => {
      await db.transaction(async (tx) => {
        for (const t of tables) await tx.query(`DROP TABLE IF EXISTS ${stageName(body.load_id, t.name)}`);
        await tx.query(`DELETE FROM epetsync.bulk_loads WHERE load_id = $1::text`, [body.load_id]);
      });
    };
    const replaced = await db.transaction(async (tx) => {
      await tx.query(`SELECT set_config('epetsync.capture', 'off', true)`);
      await tx.query('SET CONSTRAINTS ALL DEFERRED');
      for (const t of [...tables].reverse()) await tx.query(`DELETE FROM ${t.sqlName}`);
      const out: Array<{ table: string; rows: number }> = [];
      for (const t of tables) {
        const stage = stageName(body.load_id, t.name);
        const { rows: exists } = await tx.query<{ ok: boolean }>(`SELECT to_regclass($1::text) IS NOT NULL AS ok`, [stage]);
        if (!exists[0]?.ok) {
          out.push({ table: t.name, rows: 0 });
          continue;
        }
        // Generated columns are computed by PostgreSQL and cannot be written.
        const cols = t.columns.filter((c) => !c.generated).map((c) => quoteIdent(c.name)).join(', ');
        const overriding = t.columns.some((c) => c.identityAlways) ? ' OVERRIDING SYSTEM VALUE' : '';
        try {
          const r = await tx.query(`INSERT INTO ${t.sqlName} (${cols})${overriding} SELECT ${cols} FROM ${stage}`);
          out.push({ table: t.name, rows: r.rowCount });
        } catch (error) {
          throw databaseRefusal(error, { line: null, table: t.name });
        }
        await advanceSequence(tx, t);
      }
      try {
        await tx.query('SET CONSTRAINTS ALL IMMEDIATE');
      } catch (error) {
        throw databaseRefusal(error, { line: null });
      }
      for (const t of tables) await tx.query(`DROP TABLE IF EXISTS ${stageName(body.load_id, t.name)}`);
      return out;
    }).catch(async (error: unknown) => {
      // The replace rolled back: the live tables are as they were. The staged rows are of no further use
      // (the client stages afresh after fixing the cause), so they do not linger in the database.
      if (error instanceof HttpError) await dropStages().catch((cleanup: unknown) => request.log.warn({ err: cleanup }, 'could not drop the staged rows of a failed replace'));
      throw error;
    });
    request.log.info({ load_id: body.load_id, tables: replaced }, 'migrate replace committed');
    return { load_id: body.load_id, tables: replaced, head_cursor: formatCursor(await headCursor(db)) };
  });
}

function unique(names: string[]): string[] {
  return [...new Set(names)];
}

function requireTable(schema: SyncSchema, name: string): TableInfo {
  const table = schema.byName.get(name);
  if (!table) throw new HttpError('UNKNOWN_TABLE', `table "${name.slice(0, 100)}" is not synced`, { table: name });
  return table;
}

/** Returns the staging table of one table of a replace load, inside epetsync's own schema (a hash keeps it under 63 bytes). */
function stageName(loadId: string, table: string): string {
  const hash = createHash('sha256').update(`${loadId}\u0000${table}`).digest('hex').slice(0, 32);
  return `${quoteIdent(INTERNAL_SCHEMA)}.${quoteIdent(`stage_${hash}`)}`;
}

async function stageRows(tx: SqlExecutor, stage: string, table: TableInfo, columns: string[], rows: Array<Array<string | null>>, lines: number[]): Promise<void> {
  const cols = columns.map((c) => table.columnsByName.get(c)!);
  const list = cols.map((c) => quoteIdent(c.name)).join(', ');
  const perStatement = Math.max(1, Math.min(500, Math.floor(30000 / cols.length)));
  for (let start = 0; start < rows.length; start += perStatement) {
    const params: Array<string | null> = [];
    const tuples = rows.slice(start, start + perStatement).map((row) => `(${row.map((v, k) => { params.push(v); return castParam(cols[k]!, `$${params.length}`); }).join(', ')})`);
    try {
      await tx.query(`INSERT INTO ${stage} (${list}) VALUES ${tuples.join(', ')}`, params);
    } catch (error) {
      throw databaseRefusal(error, { line: lines[start] ?? null });
    }
  }
}
