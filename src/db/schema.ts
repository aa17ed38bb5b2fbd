import { quoteIdent, isInternalTable } from './sql.js';
import type { SqliteDatabase } from './open.js';

/** Describes one column as SQLite declares it. */
export interface ColumnInfo {
  name: string;
  /** The declared type as written (`VARCHAR(100)`, `datetime`, or `''` when none). */
  declaredType: string;
  notNull: boolean;
  /** The default as SQL text (`'active'`, `0`, `CURRENT_TIMESTAMP`), or null. */
  defaultValue: string | null;
  /** 1-based position in the primary key, 0 when not part of it. */
  primaryKeyPosition: number;
  /** 0 normal, 1 hidden (virtual table), 2 generated VIRTUAL, 3 generated STORED: generated columns cannot be written. */
  hidden: number;
}

/** Describes one foreign key constraint (possibly over several columns). */
export interface ForeignKeyInfo {
  /** The constraint's id in `pragma_foreign_key_list`. */
  id: number;
  columns: string[];
  referencedTable: string;
  /** Parent columns; null entries mean "the parent's primary key". */
  referencedColumns: Array<string | null>;
  onUpdate: string;
  onDelete: string;
}

/** Describes one index. */
export interface IndexInfo {
  name: string;
  unique: boolean;
  /** `c` CREATE INDEX, `u` UNIQUE constraint, `pk` PRIMARY KEY constraint. */
  origin: string;
  partial: boolean;
  /** Indexed columns in order; null for an expression. */
  columns: Array<string | null>;
}

/** Describes one user table. */
export interface TableInfo {
  name: string;
  /** `table` or `virtual`. */
  type: string;
  columns: ColumnInfo[];
  /** Primary key columns in key order (empty for a table with only the implicit rowid). */
  primaryKey: string[];
  /** True when the primary key is a single INTEGER PRIMARY KEY column (an alias of the rowid). */
  rowidAlias: boolean;
  withoutRowid: boolean;
  strict: boolean;
  /** True when the table was declared with AUTOINCREMENT. */
  autoincrement: boolean;
  /** The table's value in `sqlite_sequence` (the highest id ever handed out), or null when none is recorded. */
  sequence: number | null;
  foreignKeys: ForeignKeyInfo[];
  indexes: IndexInfo[];
  /** The CREATE statement as stored in sqlite_schema. */
  sql: string | null;
}

/** Returns the names of the user tables, sorted, leaving out `sqlite_%`, `_epetsync_%` and virtual-table shadow tables. */
export function listTables(db: SqliteDatabase): string[] {
  const rows = db.prepare("SELECT name FROM pragma_table_list WHERE schema = 'main' AND type IN ('table', 'virtual')").pluck().all() as string[];
  return rows.filter((name) => !isInternalTable(name)).sort(compareNames);
}

/** Returns the full description of every user table (see {@link describeTable}). */
export function introspectSchema(db: SqliteDatabase): TableInfo[] {
  const sequences = readSequences(db);
  return listTables(db).map((name) => describeTable(db, name, sequences));
}

/** Returns columns, keys, foreign keys, indexes and AUTOINCREMENT state of one table; identifiers are bound, never spliced. */
export function describeTable(db: SqliteDatabase, name: string, sequences: Map<string, number> = readSequences(db)): TableInfo {
  const meta = db.prepare("SELECT type, wr, strict FROM pragma_table_list WHERE schema = 'main' AND name = ?").get(name) as
    | { type: string; wr: number; strict: number }
    | undefined;
  if (meta === undefined) throw new Error(`No table named ${quoteIdent(name)} in this database`);
  const sql = (db.prepare("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?").pluck().get(name) as string | null | undefined) ?? null;
  const columns = (
    db.prepare("SELECT name, type, \"notnull\", dflt_value, pk, hidden FROM pragma_table_xinfo(?, 'main') ORDER BY cid").all(name) as Array<{
      name: string;
      type: string;
      notnull: number;
      dflt_value: string | null;
      pk: number;
      hidden: number;
    }>
  ).map((c) => ({ name: c.name, declaredType: c.type, notNull: c.notnull === 1, defaultValue: c.dflt_value, primaryKeyPosition: c.pk, hidden: c.hidden }));
  const primaryKey = columns.filter((c) => c.primaryKeyPosition > 0).sort((a, b) => a.primaryKeyPosition - b.primaryKeyPosition).map((c) => c.name);
  const withoutRowid = meta.wr === 1;
  const pkColumn = primaryKey.length === 1 ? columns.find((c) => c.name === primaryKey[0]) : undefined;
  const rowidAlias = !withoutRowid && pkColumn !== undefined && pkColumn.declaredType.toUpperCase() === 'INTEGER' && !isDescPrimaryKey(db, name);
  return {
    name,
    type: meta.type,
    columns,
    primaryKey,
    rowidAlias,
    withoutRowid,
    strict: meta.strict === 1,
    autoincrement: sql !== null && hasAutoincrement(sql),
    sequence: sequences.get(name) ?? null,
    foreignKeys: foreignKeys(db, name),
    indexes: indexes(db, name),
    sql,
  };
}

/** Returns the number of rows in each user table; a table that cannot be read gets `rows: null` and the reason. */
export function countRows(db: SqliteDatabase, tables: string[] = listTables(db)): Array<{ table: string; rows: number | null; error?: string }> {
  return tables.map((table) => {
    try {
      const rows = db.prepare(`SELECT count(*) FROM main.${quoteIdent(table)}`).pluck().get() as number;
      return { table, rows };
    } catch (error) {
      return { table, rows: null, error: error instanceof Error ? error.message : String(error) };
    }
  });
}

/** Returns `sqlite_sequence` as a map of table name to the highest id handed out (empty when no table uses AUTOINCREMENT). */
export function readSequences(db: SqliteDatabase): Map<string, number> {
  const exists = db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_sequence'").get();
  if (exists === undefined) return new Map();
  const rows = db.prepare('SELECT name, seq FROM sqlite_sequence').all() as Array<{ name: string; seq: number | bigint }>;
  return new Map(rows.map((r) => [r.name, Number(r.seq)]));
}

/** Returns true when a CREATE TABLE statement declares AUTOINCREMENT outside string literals and quoted names. */
export function hasAutoincrement(createSql: string): boolean {
  const bare = createSql.replace(/'(?:[^']|'')*'|"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\]/g, ' ');
  return /\bAUTOINCREMENT\b/i.test(bare);
}

// "INTEGER PRIMARY KEY DESC" is the one spelling that does not alias the rowid; the origin-pk index shows it.
function isDescPrimaryKey(db: SqliteDatabase, table: string): boolean {
  const pkIndex = db.prepare("SELECT name FROM pragma_index_list(?, 'main') WHERE origin = 'pk'").pluck().get(table) as string | undefined;
  return pkIndex !== undefined;
}

function foreignKeys(db: SqliteDatabase, table: string): ForeignKeyInfo[] {
  const rows = db.prepare("SELECT id, seq, \"table\", \"from\", \"to\", on_update, on_delete FROM pragma_foreign_key_list(?, 'main') ORDER BY id, seq").all(table) as Array<{
    id: number;
    seq: number;
    table: string;
    from: string;
    to: string | null;
    on_update: string;
    on_delete: string;
  }>;
  const byId = new Map<number, ForeignKeyInfo>();
  for (const r of rows) {
    let fk = byId.get(r.id);
    if (fk === undefined) {
      fk = { id: r.id, columns: [], referencedTable: r.table, referencedColumns: [], onUpdate: r.on_update, onDelete: r.on_delete };
      byId.set(r.id, fk);
    }
    fk.columns.push(r.from);
    fk.referencedColumns.push(r.to);
  }
  return [...byId.values()];
}

function indexes(db: SqliteDatabase, table: string): IndexInfo[] {
  const list = db.prepare("SELECT name, \"unique\", origin, partial FROM pragma_index_list(?, 'main')").all(table) as Array<{
    name: string;
    unique: number;
    origin: string;
    partial: number;
  }>;
  const info = db.prepare("SELECT name FROM pragma_index_info(?, 'main') ORDER BY seqno").pluck();
  return list
    .map((i) => ({ name: i.name, unique: i.unique === 1, origin: i.origin, partial: i.partial === 1, columns: info.all(i.name) as Array<string | null> }))
    .sort((a, b) => compareNames(a.name, b.name));
}

function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
