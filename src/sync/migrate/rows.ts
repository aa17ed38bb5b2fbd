import type Database from 'better-sqlite3';
import { quoteIdent } from '../../db/sql.js';
import { fromWire, toWire, type ConvertOptions, type NoteKind, type ProblemKind, type SqliteValue, type WireValue } from '../convert.js';
import { parsePgType, type PgType } from '../pg-type.js';

/** Names why a local row cannot be sent: a conversion problem, NULL in a NOT NULL column, a row the remote database refused, or a child of a rejected row. */
export type ValueProblemKind = ProblemKind | 'null-in-not-null' | 'refused-by-remote' | 'parent-rejected';

/** Describes one column carried from a local table to its remote twin. */
export interface ColumnMapping {
  name: string;
  /** The remote column type. */
  type: PgType;
  /** Remote column accepts NULL. */
  nullable: boolean;
}

/** Describes how one local table maps onto its remote table: the columns both have, in remote order. */
export interface TableMapping {
  name: string;
  columns: ColumnMapping[];
  primaryKey: string[];
  /** Index of each primary-key column in `columns`. */
  pkIndex: number[];
}

/** Describes a value that cannot be sent, with everything a person needs to find and fix it. */
export interface RowProblem {
  table: string;
  /** The row's primary key, wire-encoded where possible. */
  pk: Record<string, WireValue>;
  column: string;
  kind: ValueProblemKind;
  reason: string;
  /** The local value as JSON can carry it (a blob as `{"base64": …}`, integers as text). */
  value: WireValue;
}

/** Holds one converted row, or the first problem in it. */
export type ConvertedRow = { ok: true; values: WireValue[]; notes: Array<{ column: string; note: NoteKind }> } | { ok: false; problem: RowProblem };

/** Builds a mapping from the remote table description, keeping the columns the local table also has. */
export function buildMapping(
  name: string,
  remoteColumns: Array<{ name: string; type: string; nullable: boolean }>,
  primaryKey: string[],
  localColumns: Set<string>,
): TableMapping {
  const columns = remoteColumns.filter((c) => localColumns.has(c.name)).map((c) => ({ name: c.name, type: parsePgType(c.type), nullable: c.nullable }));
  const pkIndex = primaryKey.map((k) => columns.findIndex((c) => c.name === k));
  return { name, columns, primaryKey, pkIndex };
}

/** Returns a value in a form JSON carries without loss, for reports and reject files. */
export function reportable(value: SqliteValue): WireValue {
  if (value instanceof Uint8Array) return { base64: Buffer.from(value).toString('base64') };
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  return value;
}

/** Returns the row's primary key, converted to wire values where possible. */
export function primaryKeyOf(mapping: TableMapping, row: SqliteValue[], options: ConvertOptions): Record<string, WireValue> {
  const pk: Record<string, WireValue> = {};
  mapping.pkIndex.forEach((i, k) => {
    const c = toWire(row[i]!, mapping.columns[i]!.type, options);
    pk[mapping.primaryKey[k]!] = c.ok ? c.value : reportable(row[i]!);
  });
  return pk;
}

/** Converts one local row (values in mapping column order) to wire values, or names the first value that cannot go. */
export function convertRow(mapping: TableMapping, row: SqliteValue[], options: ConvertOptions): ConvertedRow {
  const values: WireValue[] = new Array<WireValue>(row.length);
  const notes: Array<{ column: string; note: NoteKind }> = [];
  for (let i = 0; i < mapping.columns.length; i += 1) {
    const column = mapping.columns[i]!;
    const raw = row[i]!;
    if (raw === null && !column.nullable) {
      return { ok: false, problem: { table: mapping.name, pk: primaryKeyOf(mapping, row, options), column: column.name, kind: 'null-in-not-null', reason: 'NULL in a column the remote declares NOT NULL', value: null } };
    }
    const c = toWire(raw, column.type, options);
    if (!c.ok) return { ok: false, problem: { table: mapping.name, pk: primaryKeyOf(mapping, row, options), column: column.name, kind: c.kind, reason: c.reason, value: reportable(raw) } };
    values[i] = c.value;
    if (c.note) notes.push({ column: column.name, note: c.note });
  }
  return { ok: true, values, notes };
}

/**
 * Reads a local table in primary-key order, a page at a time with keyset pagination (never the
 * whole table in memory, and no statement left open across an await), starting after `after`
 * (local values of the key columns) when given.
 */
export function* readPages(db: Database.Database, mapping: TableMapping, after: SqliteValue[] | null, pageSize = 2000): Generator<SqliteValue[][]> {
  const cols = mapping.columns.map((c) => quoteIdent(c.name)).join(', ');
  const key = mapping.primaryKey.map(quoteIdent).join(', ');
  const holes = mapping.primaryKey.map(() => '?').join(', ');
  const first = db.prepare(`SELECT ${cols} FROM main.${quoteIdent(mapping.name)} ORDER BY ${key} LIMIT ?`).raw(true).safeIntegers(true);
  const next = db.prepare(`SELECT ${cols} FROM main.${quoteIdent(mapping.name)} WHERE (${key}) > (${holes}) ORDER BY ${key} LIMIT ?`).raw(true).safeIntegers(true);
  let last = after;
  for (;;) {
    const page = (last === null ? first.all(pageSize) : next.all(...last, pageSize)) as SqliteValue[][];
    if (page.length === 0) return;
    yield page;
    if (page.length < pageSize) return;
    const tail = page[page.length - 1]!;
    last = mapping.pkIndex.map((i) => tail[i]!);
  }
}

/** Turns a checkpoint's last key (wire values, as sent) back into the local key values to resume after. */
export function localKey(mapping: TableMapping, lastKey: unknown[], options: ConvertOptions): SqliteValue[] {
  return mapping.pkIndex.map((i, k) => fromWire(lastKey[k] as WireValue, mapping.columns[i]!.type, options));
}
