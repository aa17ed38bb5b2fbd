import { quoteIdent, type SqlDatabase, type SqlExecutor } from './sql.js';
import { INTERNAL_SCHEMA, type SyncSchema } from './schema.js';

/** Bumps when the `epetsync` schema changes shape; recorded in `epetsync.schema_version`. */
export const INTERNAL_SCHEMA_VERSION = 1;

/** Names the NOTIFY channel every captured change signals on. */
export const CHANGES_CHANNEL = 'epetsync_changes';

/** Names the trigger installed on every synced table. */
export const CAPTURE_TRIGGER = 'epetsync_capture';

const SCHEMA_SQL = `
CREATE SCHEMA IF NOT EXISTS epetsync;
CREATE TABLE IF NOT EXISTS epetsync.schema_version (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  version integer NOT NULL,
  installed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS epetsync.changelog (
  seq bigserial PRIMARY KEY,
  txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
  table_name text NOT NULL,
  pk jsonb NOT NULL,
  op char(1) NOT NULL CHECK (op IN ('I', 'U', 'D')),
  origin text,
  changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS changelog_txid_seq_idx ON epetsync.changelog (txid, seq);
CREATE INDEX IF NOT EXISTS changelog_row_idx ON epetsync.changelog (table_name, pk);
CREATE TABLE IF NOT EXISTS epetsync.batches (
  batch_id text PRIMARY KEY,
  node_id text NOT NULL,
  request_hash text NOT NULL,
  response jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS epetsync.conflicts (
  conflict_id bigserial PRIMARY KEY,
  batch_id text NOT NULL,
  node_id text NOT NULL,
  table_name text NOT NULL,
  pk jsonb NOT NULL,
  client_op text NOT NULL,
  client_values jsonb,
  server_values jsonb,
  policy text NOT NULL,
  resolution text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS epetsync.nodes (
  node_id text PRIMARY KEY,
  last_push_at timestamptz,
  last_pull_at timestamptz,
  last_pull_cursor text
);
CREATE TABLE IF NOT EXISTS epetsync.bulk_loads (
  load_id text NOT NULL,
  table_name text NOT NULL,
  total_rows bigint NOT NULL DEFAULT 0,
  last_key jsonb,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (load_id, table_name)
);
CREATE OR REPLACE FUNCTION epetsync.capture() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  origin text;
  new_row jsonb;
  old_row jsonb;
  new_pk jsonb := '{}'::jsonb;
  old_pk jsonb := '{}'::jsonb;
  i integer;
BEGIN
  -- Bulk loads switch capture off for their own transaction only (set_config(..., true)).
  IF current_setting('epetsync.capture', true) = 'off' THEN
    RETURN NULL;
  END IF;
  -- A custom setting reads as '' (not NULL) once any earlier transaction of the session set it.
  origin := nullif(current_setting('epetsync.origin', true), '');
  -- TG_ARGV[0] is the synced table's name (TG_TABLE_NAME would name a partition); the rest are its key columns.
  IF TG_OP <> 'DELETE' THEN
    new_row := to_jsonb(NEW);
    FOR i IN 1 .. TG_NARGS - 1 LOOP
      new_pk := new_pk || jsonb_build_object(TG_ARGV[i], new_row ->> TG_ARGV[i]);
    END LOOP;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    old_row := to_jsonb(OLD);
    FOR i IN 1 .. TG_NARGS - 1 LOOP
      old_pk := old_pk || jsonb_build_object(TG_ARGV[i], old_row ->> TG_ARGV[i]);
    END LOOP;
  END IF;
  IF TG_OP = 'DELETE' THEN
    INSERT INTO epetsync.changelog (table_name, pk, op, origin) VALUES (TG_ARGV[0], old_pk, 'D', origin);
  ELSIF TG_OP = 'UPDATE' AND old_pk <> new_pk THEN
    INSERT INTO epetsync.changelog (table_name, pk, op, origin) VALUES (TG_ARGV[0], old_pk, 'D', origin);
    INSERT INTO epetsync.changelog (table_name, pk, op, origin) VALUES (TG_ARGV[0], new_pk, 'I', origin);
  ELSE
    INSERT INTO epetsync.changelog (table_name, pk, op, origin) VALUES (TG_ARGV[0], new_pk, left(TG_OP, 1), origin);
  END IF;
  PERFORM pg_notify('${CHANGES_CHANNEL}', '');
  RETURN NULL;
END
$fn$;
`;

/** Describes what {@link installChangeCapture} did. */
export interface InstallResult {
  tables: number;
  removedTriggers: number;
}

/**
 * Installs the `epetsync` schema and a capture trigger on every synced table, idempotently, in one
 * transaction under an advisory lock (two servers starting together must not race). `extra` runs
 * inside the same transaction (the auth schema). Run again when PostgreSQL aborts it to break a
 * deadlock with the web app's writes (the triggers lock each table in turn): nothing of it applied.
 */
export async function installChangeCapture(
  db: SqlDatabase,
  schema: SyncSchema,
  extra?: (tx: SqlExecutor) => Promise<void>,
): Promise<InstallResult> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await installOnce(db, schema, extra);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (attempt >= 5 || (code !== '40P01' && code !== '40001')) throw error;
      await new Promise((r) => setTimeout(r, 50 * attempt + Math.floor(Math.random() * 100)));
    }
  }
}

async function installOnce(db: SqlDatabase, schema: SyncSchema, extra?: (tx: SqlExecutor) => Promise<void>): Promise<InstallResult> {
  return db.transaction(async (tx) => {
    await tx.query(`SELECT pg_advisory_xact_lock(hashtext('epetsync.install'))`);
    for (const statement of splitStatements(SCHEMA_SQL)) await tx.query(statement);
    await tx.query(
      `INSERT INTO epetsync.schema_version (id, version) VALUES (true, $1)
       ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, installed_at = now()`,
      [INTERNAL_SCHEMA_VERSION],
    );
    for (const t of schema.tables) {
      const args = [t.name, ...t.primaryKey].map(quoteLiteral).join(', ');
      await tx.query(`DROP TRIGGER IF EXISTS ${CAPTURE_TRIGGER} ON ${t.sqlName}`);
      await tx.query(
        // The WHEN clause keeps bulk loads (capture off for their transaction) from calling the
        // function once per row at all: PostgreSQL checks it without entering PL/pgSQL.
        `CREATE TRIGGER ${CAPTURE_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON ${t.sqlName}
         FOR EACH ROW WHEN (current_setting('epetsync.capture', true) IS DISTINCT FROM 'off')
         EXECUTE FUNCTION epetsync.capture(${args})`,
      );
    }
    // Tables that left the sync scope (excluded since the last start) stop being captured.
    const { rows } = await tx.query<{ schema: string; table: string }>(
      `SELECT n.nspname AS schema, c.relname AS table FROM pg_trigger g
         JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE g.tgname = $1 AND n.nspname <> $2 AND g.tgparentid = 0`, // partitions' clones go with their parent
      [CAPTURE_TRIGGER, INTERNAL_SCHEMA],
    );
    let removed = 0;
    for (const r of rows) {
      const synced = schema.byName.get(r.table);
      if (synced && synced.schema === r.schema) continue;
      await tx.query(`DROP TRIGGER IF EXISTS ${CAPTURE_TRIGGER} ON ${quoteIdent(r.schema)}.${quoteIdent(r.table)}`);
      removed += 1;
    }
    if (extra) await extra(tx);
    return { tables: schema.tables.length, removedTriggers: removed };
  });
}

/** Returns true when the `epetsync` schema is installed (for `--no-install`). */
export async function isInstalled(db: SqlExecutor): Promise<boolean> {
  const { rows } = await db.query<{ ok: boolean }>(`SELECT to_regclass('epetsync.changelog') IS NOT NULL AS ok`);
  return rows[0]?.ok === true;
}

function splitStatements(sql: string): string[] {
  // The function body is dollar-quoted; split on semicolons at line ends outside it.
  const out: string[] = [];
  let current = '';
  let inBody = false;
  for (const line of sql.split('\n')) {
    if (line.includes('$fn$')) inBody = !inBody;
    current += `${line}\n`;
    if (!inBody && line.trimEnd().endsWith(';')) {
      out.push(current.trim());
      current = '';
    }
  }
  if (current.trim()) out.push(current.trim());
  return out;
}

function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}
