import type Database from 'better-sqlite3';
import { openDatabase } from '../db/open.js';
import { quoteIdent } from '../db/sql.js';

/**
 * Local change capture: SQLite triggers on every synced table record (table, primary key,
 * operation) in `_epetsync_changelog`, so writes by any process are seen — the desktop app
 * writes with Python's sqlite3, never through epetsync.
 *
 * The triggers run inside the desktop app's own SQLite library, so they use only core SQL
 * (`quote()`), no JSON1 or application-defined functions: a missing function there would make
 * every clinic write fail. Rows applied from the remote are not recorded: the apply transaction
 * sets `_epetsync_apply.suppress` and resets it before commit, so no other connection ever sees
 * it set (it holds the write lock throughout).
 */

/** Version of the trigger layout; bump when the generated SQL changes so installs upgrade. */
export const CAPTURE_VERSION = 1;

/** Prefix of every object epetsync creates in the desktop database. */
export const INTERNAL_PREFIX = '_epetsync_';

/** Describes one table to capture: its name and primary-key columns in key order. */
export interface CapturedTable {
  name: string;
  primaryKey: string[];
}

/** One pending local change as read from the changelog. */
export interface PendingChange {
  seq: number;
  table: string;
  /** Primary-key values in key order (integers as bigint). */
  pk: PrimaryKeyValue[];
  op: 'I' | 'U' | 'D';
}

/** Names a primary-key value read back from the changelog. */
export type PrimaryKeyValue = bigint | number | string | Buffer | null;

/**
 * Names the changelog index by row (table, key, seq): the engine looks up every entry of a row
 * when it builds a batch, settles an answer or applies a feed change; without it each look-up
 * scans the whole changelog and a large offline backlog takes quadratic time. Created with
 * IF NOT EXISTS whenever capture is installed, so existing installs get it on their next start.
 */
export const CHANGELOG_ROW_INDEX = `${INTERNAL_PREFIX}changelog_row`;

function quoteLiteral(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

function triggerName(table: string, op: 'ai' | 'au' | 'ad'): string {
  return quoteIdent(`${INTERNAL_PREFIX}${op}_${table}`);
}

/** Returns the SQL that creates epetsync's internal tables (idempotent). */
function internalTablesSql(): string {
  return `
    CREATE TABLE IF NOT EXISTS ${INTERNAL_PREFIX}meta (key TEXT PRIMARY KEY, value TEXT);
    CREATE TABLE IF NOT EXISTS ${INTERNAL_PREFIX}changelog (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      table_name TEXT NOT NULL,
      pk TEXT NOT NULL,
      op TEXT NOT NULL CHECK (op IN ('I', 'U', 'D')),
      changed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    CREATE INDEX IF NOT EXISTS ${CHANGELOG_ROW_INDEX} ON ${INTERNAL_PREFIX}changelog (table_name, pk, seq);
    CREATE TABLE IF NOT EXISTS ${INTERNAL_PREFIX}apply (id INTEGER PRIMARY KEY CHECK (id = 1), suppress INTEGER NOT NULL DEFAULT 0);
    INSERT OR IGNORE INTO ${INTERNAL_PREFIX}apply (id, suppress) VALUES (1, 0);
  `;
}

function keyExpression(alias: 'NEW' | 'OLD', primaryKey: string[]): string {
  return primaryKey.map((c) => `quote(${alias}.${quoteIdent(c)})`).join(` || ',' || `);
}

/** Returns the CREATE TRIGGER statements for one table. */
export function triggerSql(table: CapturedTable): string[] {
  const name = quoteIdent(table.name);
  const literal = quoteLiteral(table.name);
  const log = `INSERT INTO ${INTERNAL_PREFIX}changelog (table_name, pk, op)`;
  const when = `WHEN (SELECT suppress FROM ${INTERNAL_PREFIX}apply WHERE id = 1) = 0`;
  const newKey = keyExpression('NEW', table.primaryKey);
  const oldKey = keyExpression('OLD', table.primaryKey);
  return [
    `CREATE TRIGGER ${triggerName(table.name, 'ai')} AFTER INSERT ON ${name} ${when} BEGIN ${log} VALUES (${literal}, ${newKey}, 'I'); END`,
    // A changed primary key is a delete of the old row and an insert of the new one.
    `CREATE TRIGGER ${triggerName(table.name, 'au')} AFTER UPDATE ON ${name} ${when} BEGIN ` +
      `${log} SELECT ${literal}, ${oldKey}, 'D' WHERE (${oldKey}) IS NOT (${newKey}); ` +
      `${log} VALUES (${literal}, ${newKey}, CASE WHEN (${oldKey}) IS (${newKey}) THEN 'U' ELSE 'I' END); END`,
    `CREATE TRIGGER ${triggerName(table.name, 'ad')} AFTER DELETE ON ${name} ${when} BEGIN ${log} VALUES (${literal}, ${oldKey}, 'D'); END`,
  ];
}

/** Lists epetsync's capture triggers present in the database, by table. */
export function installedTriggers(db: Database.Database): Map<string, string[]> {
  const rows = db
    .prepare(`SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' AND substr(name, 1, ${INTERNAL_PREFIX.length}) = ?`)
    .all(INTERNAL_PREFIX) as Array<{ name: string; tbl_name: string }>;
  const out = new Map<string, string[]>();
  for (const r of rows) out.set(r.tbl_name, [...(out.get(r.tbl_name) ?? []), r.name]);
  return out;
}

/** Returns the installed capture version, or null when capture was never installed. */
export function captureVersion(db: Database.Database): number | null {
  const exists = db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(`${INTERNAL_PREFIX}meta`);
  if (!exists) return null;
  const row = db.prepare(`SELECT value FROM ${INTERNAL_PREFIX}meta WHERE key = 'capture_version'`).get() as { value: string } | undefined;
  return row ? Number(row.value) : null;
}

/** Installs or upgrades capture triggers for exactly `tables`, in one transaction; returns what changed. */
export function installCapture(db: Database.Database, tables: CapturedTable[]): { installed: string[]; removed: string[]; version: number } {
  const apply = db.transaction(() => {
    db.exec(internalTablesSql());
    const before = installedTriggers(db);
    const wanted = new Set(tables.map((t) => t.name));
    for (const names of before.values()) for (const n of names) db.exec(`DROP TRIGGER IF EXISTS ${quoteIdent(n)}`);
    for (const table of tables) for (const sql of triggerSql(table)) db.exec(sql);
    db.prepare(`INSERT INTO ${INTERNAL_PREFIX}meta (key, value) VALUES ('capture_version', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`).run(
      String(CAPTURE_VERSION),
    );
    return { installed: [...wanted], removed: [...before.keys()].filter((t) => !wanted.has(t)) };
  });
  return { ...apply.immediate(), version: CAPTURE_VERSION };
}

/** Removes every capture trigger; with `dropTables` also the changelog and internal tables (pending changes are lost). */
export function removeCapture(db: Database.Database, options: { dropTables?: boolean } = {}): { removed: number } {
  const apply = db.transaction(() => {
    let removed = 0;
    for (const names of installedTriggers(db).values()) {
      for (const n of names) {
        db.exec(`DROP TRIGGER IF EXISTS ${quoteIdent(n)}`);
        removed += 1;
      }
    }
    if (options.dropTables) {
      for (const t of ['changelog', 'apply', 'meta']) db.exec(`DROP TABLE IF EXISTS ${INTERNAL_PREFIX}${t}`);
    }
    return { removed };
  });
  return apply.immediate();
}

/** Returns up to `limit` pending changes in commit order. */
export function readPendingChanges(db: Database.Database, limit: number): PendingChange[] {
  const rows = db
    .prepare(`SELECT seq, table_name, pk, op FROM ${INTERNAL_PREFIX}changelog ORDER BY seq LIMIT ?`)
    .safeIntegers(false)
    .all(limit) as Array<{ seq: number; table_name: string; pk: string; op: 'I' | 'U' | 'D' }>;
  return rows.map((r) => ({ seq: r.seq, table: r.table_name, pk: parseKey(r.pk), op: r.op }));
}

/** Returns how many changes are pending and when the oldest was made. */
export function pendingSummary(db: Database.Database): { count: number; oldest: string | null } {
  const row = db.prepare(`SELECT count(*) AS count, min(changed_at) AS oldest FROM ${INTERNAL_PREFIX}changelog`).safeIntegers(false).get() as {
    count: number;
    oldest: string | null;
  };
  return row;
}

/** Clears changelog entries the server acknowledged (by sequence number, so later edits of the same row stay pending). */
export function acknowledgeChanges(db: Database.Database, seqs: number[]): number {
  const del = db.prepare(`DELETE FROM ${INTERNAL_PREFIX}changelog WHERE seq = ?`);
  const run = db.transaction((list: number[]) => list.reduce((n, s) => n + del.run(s).changes, 0));
  return run.immediate(seqs);
}

/** Runs `fn` in one write transaction with capture suppressed, so rows applied from the remote are not echoed back. */
export function applyWithoutCapture<T>(db: Database.Database, fn: () => T): T {
  const suppress = db.prepare(`UPDATE ${INTERNAL_PREFIX}apply SET suppress = ? WHERE id = 1`);
  const run = db.transaction(() => {
    suppress.run(1);
    try {
      return fn();
    } finally {
      // Reset inside the transaction: committed state always has suppress = 0.
      suppress.run(0);
    }
  });
  return run.immediate();
}

/** Parses the changelog's key text, a comma-separated list of SQL literals written by `quote()`. */
export function parseKey(text: string): PrimaryKeyValue[] {
  const values: PrimaryKeyValue[] = [];
  let i = 0;
  while (i < text.length) {
    if (text[i] === "'") {
      let out = '';
      i += 1;
      for (;;) {
        const end = text.indexOf("'", i);
        if (end < 0) throw new Error(`malformed changelog key: ${text}`);
        out += text.slice(i, end);
        if (text[end + 1] === "'") {
          out += "'";
          i = end + 2;
        } else {
          i = end + 1;
          break;
        }
      }
      values.push(out);
    } else if (text.startsWith("X'", i)) {
      const end = text.indexOf("'", i + 2);
      values.push(Buffer.from(text.slice(i + 2, end), 'hex'));
      i = end + 1;
    } else {
      const end = text.indexOf(',', i);
      const token = text.slice(i, end < 0 ? text.length : end);
      if (token === 'NULL') values.push(null);
      else if (/^-?\d+$/.test(token)) values.push(BigInt(token));
      else values.push(Number(token));
      i += token.length;
    }
    if (i < text.length) {
      if (text[i] !== ',') throw new Error(`malformed changelog key: ${text}`);
      i += 1;
    }
  }
  return values;
}

/** Reads a value from epetsync's key/value table in the desktop database (null when unset or not installed). */
export function readMeta(db: Database.Database, key: string): string | null {
  const exists = db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(`${INTERNAL_PREFIX}meta`);
  if (!exists) return null;
  const row = db.prepare(`SELECT value FROM ${INTERNAL_PREFIX}meta WHERE key = ?`).get(key) as { value: string | null } | undefined;
  return row?.value ?? null;
}

/**
 * Writes a value to epetsync's key/value table. Call it inside the transaction that applies the
 * data it describes (the pull cursor with the rows of its page): invariant 3, a cursor is
 * persisted in the same transaction as the data it covers.
 */
export function writeMeta(db: Database.Database, key: string, value: string | null): void {
  db.prepare(`INSERT INTO ${INTERNAL_PREFIX}meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`).run(key, value);
}

/** Names the meta keys the sync engine and migrate share. */
export const META = {
  /** Feed cursor up to which remote changes are applied locally. */
  pullCursor: 'pull_cursor',
  /** Server identity the cursor belongs to (a cursor is meaningless on another server). */
  serverId: 'server_id',
  /** ISO time of the last completed migrate. */
  migratedAt: 'migrated_at',
  /** Set when the file was restored from a backup, until the sync engine's feed replay is done. */
  restoredFromBackup: 'restored_from_backup',
} as const;

/**
 * Marks a database just restored from a backup for the sync engine's replay (SyncEngine.markRestored,
 * docs/sync.md): what this desktop uploaded after the backup was taken is on the server only, and
 * the feed leaves a node's own uploads out, so the next cycle re-reads the feed with them included.
 * A file that never synced (no epetsync meta table) is left untouched. Returns whether it was marked.
 */
export function markForSyncReplay(databasePath: string, busyTimeoutMs: number): boolean {
  const db = openDatabase(databasePath, { mode: 'write', busyTimeoutMs });
  try {
    const synced = db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(`${INTERNAL_PREFIX}meta`) !== undefined;
    if (synced) writeMeta(db, META.restoredFromBackup, new Date().toISOString());
    return synced;
  } finally {
    db.close();
  }
}

