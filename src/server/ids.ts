import type { FastifyInstance } from 'fastify';
import { HttpError } from './http-error.js';
import { quoteIdent, type SqlDatabase } from './sql.js';
import type { SyncSchema } from './schema.js';

/**
 * `POST /api/database/ids/` — hands out fresh ids from a table's own sequence, all above a floor.
 * A client whose offline insert took an id the web app meanwhile gave to another row moves its
 * row to one of these (docs/sync.md, id collisions): taken from the sequence, the web app's next
 * insert can never reuse it.
 */

/** Caps the ids handed out by one request. */
export const MAX_IDS_PER_REQUEST = 1000;

const IDS_BODY = {
  type: 'object',
  additionalProperties: false,
  required: ['table', 'count'],
  properties: {
    table: { type: 'string', minLength: 1, maxLength: 256 },
    count: { type: 'integer', minimum: 1, maximum: MAX_IDS_PER_REQUEST },
    above: { type: 'string', pattern: '^[0-9]{1,19}$' },
  },
} as const;

/** Registers the ids route on the sync app (behind the same sync permission as upload). */
export function registerIdRoutes(app: FastifyInstance, options: { db: SqlDatabase; schema: () => SyncSchema }): void {
  // Read-only, for `epetsync diagnose` (ids group): each synced table's key sequence against its largest id.
  app.post('/api/database/migrate/sequences/', {
    schema: { body: { type: 'object', additionalProperties: false, properties: { tables: { type: 'array', maxItems: 1000, items: { type: 'string', minLength: 1, maxLength: 256 } } } } },
    preHandler: async (request, reply) => app.requireSync(request, reply),
  }, async (request) => {
    const names = (request.body as { tables?: string[] } | undefined)?.tables;
    const schema = options.schema();
    const tables = names === undefined ? schema.tables : names.map((n) => {
      const t = schema.byName.get(n);
      if (!t) throw new HttpError('UNKNOWN_TABLE', `table "${n.slice(0, 100)}" is not synced`, { table: n });
      return t;
    });
    const out: Array<{ table: string; sequence: string; last_value: string | null; max_id: string | null }> = [];
    for (const t of tables) {
      if (!t.pkSequence) continue;
      const { rows } = await options.db.query<{ last_value: string | null; max_id: string | null }>(
        `SELECT pg_sequence_last_value($1::text::regclass)::text AS last_value, (SELECT max(${quoteIdent(t.primaryKey[0]!)})::text FROM ${t.sqlName}) AS max_id`,
        [t.pkSequence],
      );
      out.push({ table: t.name, sequence: t.pkSequence, last_value: rows[0]!.last_value, max_id: rows[0]!.max_id });
    }
    return { sequences: out };
  });
  app.post('/api/database/ids/', {
    schema: { body: IDS_BODY },
    preHandler: async (request, reply) => app.requireSync(request, reply),
  }, async (request) => {
    const body = request.body as { table: string; count: number; above?: string };
    const table = options.schema().byName.get(body.table);
    if (!table) throw new HttpError('UNKNOWN_TABLE', `table "${body.table.slice(0, 100)}" is not synced`, { table: body.table });
    if (!table.pkSequence) throw new HttpError('BAD_REQUEST', `table "${table.name}" has no single integer key filled from a sequence`, { table: table.name });
    const pk = quoteIdent(table.primaryKey[0]!);
    const ids = await options.db.transaction(async (tx) => {
      // Never moves the sequence backwards: only forward past the floor and every id present.
      await tx.query(
        `SELECT setval($1::text::regclass, f.floor)
           FROM (SELECT GREATEST($2::text::bigint, (SELECT coalesce(max(${pk})::bigint, 0) FROM ${table.sqlName})) AS floor) f
          WHERE f.floor > 0 AND f.floor >= coalesce(pg_sequence_last_value($1::text::regclass), 0)`,
        [table.pkSequence, body.above ?? '0'],
      );
      const { rows } = await tx.query<{ id: string }>(`SELECT nextval($1::text::regclass)::text AS id FROM generate_series(1, $2::int)`, [table.pkSequence, body.count]);
      return rows.map((r) => r.id);
    });
    request.log.info({ table: table.name, count: ids.length }, 'ids allocated');
    return { table: table.name, ids };
  });
}
