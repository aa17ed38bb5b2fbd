import type { SqlExecutor } from '../sql.js';

// One statement per query: PGlite's query() runs a single statement with the extended protocol.
const STATEMENTS = [
  'CREATE SCHEMA IF NOT EXISTS epetsync',
  `CREATE TABLE IF NOT EXISTS epetsync.users (
    username text PRIMARY KEY,
    password_hash text NOT NULL,
    is_active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
  )`,
  `CREATE TABLE IF NOT EXISTS epetsync.tokens (
    token_hash bytea PRIMARY KEY,
    username text NOT NULL,
    source text NOT NULL CHECK (source IN ('django', 'epetsync')),
    user_id bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
  )`,
  'CREATE INDEX IF NOT EXISTS tokens_username_idx ON epetsync.tokens (source, username)',
];

// Two processes running IF NOT EXISTS at the same moment can still collide on the catalogue's
// unique indexes (duplicate schema/relation or pg_type/pg_namespace key); the loser retries once.
const RACE_CODES = new Set(['23505', '42P06', '42P07', '42710']);

/** Creates the `epetsync.users` and `epetsync.tokens` tables when missing; safe to run at every start. */
export async function installAuthSchema(db: SqlExecutor): Promise<void> {
  for (const sql of STATEMENTS) {
    try {
      await db.query(sql);
    } catch (error) {
      if (!RACE_CODES.has((error as { code?: string }).code ?? '')) throw error;
      // Inside a caller's transaction the retry meets an aborted transaction; report the real cause.
      await db.query(sql).catch(() => {
        throw error;
      });
    }
  }
}
