import { isCorruptionError, type SqliteDatabase } from './open.js';
import { quoteIdent } from './sql.js';

/** Names SQLite's two structural checks: the fast one and the thorough one (which also compares indexes with rows). */
export type IntegrityCheckName = 'quick_check' | 'integrity_check';

/** Reports one run of `PRAGMA quick_check` or `PRAGMA integrity_check`. */
export interface IntegrityResult {
  check: IntegrityCheckName;
  ok: boolean;
  /** SQLite's messages, one per problem (empty when ok). */
  messages: string[];
  /** Tables the messages point at (through their b-tree root page or index name), best effort. */
  tables: string[];
  /** True when there were more problems than `maxErrors` and the list was cut. */
  truncated: boolean;
}

/** Reports one row that names a parent row which does not exist. */
export interface ForeignKeyViolation {
  table: string;
  /** rowid of the offending row (null for a WITHOUT ROWID table). */
  rowid: number | null;
  parent: string;
  /** Index of the constraint in `pragma_foreign_key_list(table)`. */
  fkid: number;
}

/** Reports `PRAGMA foreign_key_check` over the whole database. */
export interface ForeignKeyCheckResult {
  ok: boolean;
  /** Number of offending rows in all. */
  count: number;
  /** Offending rows per child table. */
  byTable: Record<string, number>;
  /** The first offending rows (at most `maxRows`). */
  violations: ForeignKeyViolation[];
  /** Set when the check itself could not run (e.g. a constraint names a table that does not exist). */
  error?: string;
}

/** Runs `PRAGMA quick_check`: page structure, NOT NULL and CHECK constraints, in about the time of a full read. */
export function quickCheck(db: SqliteDatabase, maxErrors = 100): IntegrityResult {
  return runCheck(db, 'quick_check', maxErrors);
}

/** Runs `PRAGMA integrity_check`: everything quick_check does plus that every index matches its table. */
export function integrityCheck(db: SqliteDatabase, maxErrors = 100): IntegrityResult {
  return runCheck(db, 'integrity_check', maxErrors);
}

function runCheck(db: SqliteDatabase, check: IntegrityCheckName, maxErrors: number): IntegrityResult {
  const limit = Math.max(1, Math.floor(maxErrors));
  let messages: string[];
  try {
    messages = db.prepare(`PRAGMA ${check}(${limit})`).pluck().all().map(String);
  } catch (error) {
    if (!isCorruptionError(error)) throw error;
    // integrity_check gives up on the first unreadable row; quick_check still lists the damaged pages.
    messages = [`${check} stopped: ${(error as Error).message}`];
    if (check === 'integrity_check') {
      try {
        messages.push(...db.prepare(`PRAGMA quick_check(${limit})`).pluck().all().map(String).filter((m) => m !== 'ok'));
      } catch {
        // The first message already says the image is damaged.
      }
    }
  }
  const ok = messages.length === 1 && messages[0] === 'ok';
  if (ok) return { check, ok, messages: [], tables: [], truncated: false };
  let tables = tablesNamedIn(db, messages);
  if (tables.length === 0) tables = unreadableTables(db);
  return { check, ok, messages, tables, truncated: messages.length >= limit };
}

// When SQLite stops at the first damaged page its messages name no tree: read every table and index to find them.
function unreadableTables(db: SqliteDatabase): string[] {
  const found = new Set<string>();
  let schema: Array<{ type: string; name: string; tbl_name: string }>;
  try {
    schema = db.prepare("SELECT type, name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index') AND rootpage > 0").all() as typeof schema;
  } catch {
    return [];
  }
  for (const entry of schema) {
    try {
      if (entry.type === 'table') {
        for (const row of db.prepare(`SELECT * FROM main.${quoteIdent(entry.name)}`).raw().iterate()) void row;
      } else {
        const columns = (db.prepare("SELECT name FROM pragma_index_info(?, 'main')").pluck().all(entry.name) as Array<string | null>).filter((c): c is string => c !== null);
        if (columns.length === 0) continue;
        const sql = `SELECT ${columns.map(quoteIdent).join(', ')} FROM main.${quoteIdent(entry.tbl_name)} INDEXED BY ${quoteIdent(entry.name)}`;
        for (const row of db.prepare(sql).raw().iterate()) void row;
      }
    } catch (error) {
      if (isCorruptionError(error)) found.add(entry.tbl_name);
    }
  }
  return [...found].sort();
}

function tablesNamedIn(db: SqliteDatabase, messages: string[]): string[] {
  let schema: Array<{ name: string; tbl_name: string; rootpage: number | null }>;
  try {
    schema = db.prepare('SELECT name, tbl_name, rootpage FROM sqlite_schema').all() as typeof schema;
  } catch {
    return [];
  }
  const byRoot = new Map(schema.filter((s) => s.rootpage).map((s) => [s.rootpage!, s.tbl_name]));
  const byName = new Map(schema.map((s) => [s.name, s.tbl_name]));
  const found = new Set<string>();
  for (const text of messages) {
    for (const m of text.matchAll(/\bTree (\d+)\b/g)) {
      const table = byRoot.get(Number(m[1]));
      if (table !== undefined) found.add(table);
    }
    for (const m of text.matchAll(/\b(?:index|table) (\S+)/g)) {
      const table = byName.get(m[1]!);
      if (table !== undefined) found.add(table);
    }
  }
  return [...found].sort();
}

/** Runs `PRAGMA foreign_key_check` and returns every child row whose parent is missing (whether or not enforcement is on). */
export function foreignKeyCheck(db: SqliteDatabase, maxRows = 100): ForeignKeyCheckResult {
  const result: ForeignKeyCheckResult = { ok: true, count: 0, byTable: {}, violations: [] };
  try {
    const rows = db.prepare('SELECT "table", rowid, parent, fkid FROM pragma_foreign_key_check').iterate() as IterableIterator<{
      table: string;
      rowid: number | bigint | null;
      parent: string;
      fkid: number;
    }>;
    for (const row of rows) {
      result.count += 1;
      result.byTable[row.table] = (result.byTable[row.table] ?? 0) + 1;
      if (result.violations.length < maxRows) {
        result.violations.push({ table: row.table, rowid: row.rowid === null ? null : Number(row.rowid), parent: row.parent, fkid: row.fkid });
      }
    }
  } catch (error) {
    result.error = error instanceof Error ? error.message : String(error);
  }
  result.ok = result.count === 0 && result.error === undefined;
  return result;
}
