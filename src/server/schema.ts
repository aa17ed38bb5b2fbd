import { quoteIdent, type SqlExecutor } from './sql.js';
import { kindOfType, selectExpression, type ValueKind } from './values.js';

/** Lists the Django tables never synced by default (sessions, migrations, admin log, permission plumbing). */
export const DEFAULT_DENY_LIST = [
  'django_migrations',
  'django_session',
  'django_admin_log',
  'django_content_type',
  'auth_permission',
  'auth_group_permissions',
  'auth_user_user_permissions',
] as const;

/** Names epetsync's own schema, which is never synced. */
export const INTERNAL_SCHEMA = 'epetsync';

/** Describes one column of a synced table, as introspected from the catalogue. */
export interface ColumnInfo {
  name: string;
  /** `format_type(atttypid, atttypmod)`: the spelling server info shows. */
  type: string;
  /** `format_type(atttypid, NULL)`: the cast target for parameters (no typmod, so overflow is an error, not a silent cut). */
  castType: string;
  typname: string;
  kind: ValueKind;
  nullable: boolean;
  default: string | null;
  maxLength: number | null;
  identity: boolean;
  identityAlways: boolean;
  /** A generated (computed) column: served, but values sent for it are ignored. */
  generated: boolean;
}

/** Describes one synced table: quoted name, columns, primary key and the sequence behind it. */
export interface TableInfo {
  name: string;
  schema: string;
  /** `"schema"."table"`, built from catalogue names only. */
  sqlName: string;
  columns: ColumnInfo[];
  columnsByName: Map<string, ColumnInfo>;
  primaryKey: string[];
  /** Sequence feeding a single-column integer primary key (serial or identity), to advance after explicit ids arrive. */
  pkSequence: string | null;
}

/** Describes a table that is not synced and why. */
export interface UnsyncedTable {
  name: string;
  reason: 'excluded' | 'not included' | 'no primary key';
}

/** Describes the synced scope of a database: tables in foreign-key order plus those left out. */
export interface SyncSchema {
  tables: TableInfo[];
  byName: Map<string, TableInfo>;
  unsynced: UnsyncedTable[];
}

/** Chooses tables: an include list (default all) minus an exclude list, always minus the deny list. */
export interface ScopeOptions {
  include?: string[] | undefined;
  exclude?: string[] | undefined;
}

interface ColumnRow {
  schema: string;
  table: string;
  column: string;
  type: string;
  cast_type: string;
  typname: string;
  not_null: boolean;
  default: string | null;
  max_length: number | null;
  identity: string;
  generated: boolean;
  pk_position: number | null;
  seq: string | null;
}

/** Reads the synced tables of the database from the catalogue (schemas on the search path, never `epetsync`). */
export async function introspectSchema(db: SqlExecutor, scope: ScopeOptions = {}): Promise<SyncSchema> {
  const { rows } = await db.query<ColumnRow>(
    `SELECT n.nspname AS schema, c.relname AS table, a.attname AS column,
            format_type(a.atttypid, a.atttypmod) AS type,
            format_type(a.atttypid, NULL) AS cast_type,
            t.typname, a.attnotnull AS not_null,
            pg_get_expr(d.adbin, d.adrelid) AS default,
            CASE WHEN a.atttypmod > 4 AND t.typname IN ('varchar', 'bpchar') THEN a.atttypmod - 4 END AS max_length,
            a.attidentity AS identity, a.attgenerated <> '' AS generated,
            array_position(i.indkey::int2[], a.attnum)::int AS pk_position,
            pg_get_serial_sequence(quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname) AS seq
       FROM pg_class c
       JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       JOIN pg_type t ON t.oid = a.atttypid
       LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
       LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
      WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
        AND n.nspname = ANY (current_schemas(false)) AND n.nspname <> $1
      ORDER BY array_position(current_schemas(false), n.nspname::text), c.relname, a.attnum`,
    [INTERNAL_SCHEMA],
  );
  const tables = new Map<string, TableInfo & { pkPositions: Map<string, number> }>();
  for (const r of rows) {
    let t = tables.get(r.table);
    if (t && t.schema !== r.schema) continue; // the same name further down the search path is shadowed
    if (!t) {
      t = { name: r.table, schema: r.schema, sqlName: `${quoteIdent(r.schema)}.${quoteIdent(r.table)}`, columns: [], columnsByName: new Map(), primaryKey: [], pkSequence: null, pkPositions: new Map() };
      tables.set(r.table, t);
    }
    const col: ColumnInfo = {
      name: r.column,
      type: r.type,
      castType: r.cast_type,
      typname: r.typname,
      kind: kindOfType(r.typname),
      nullable: !r.not_null,
      default: r.default,
      maxLength: r.max_length,
      identity: r.identity !== '',
      identityAlways: r.identity === 'a',
      generated: r.generated,
    };
    t.columns.push(col);
    t.columnsByName.set(col.name, col);
    if (r.pk_position !== null) {
      t.pkPositions.set(col.name, r.pk_position);
      if (r.seq && (col.kind === 'int2' || col.kind === 'int4' || col.kind === 'int8')) t.pkSequence = r.seq;
    }
  }
  const deny = new Set<string>(DEFAULT_DENY_LIST);
  const include = scope.include && scope.include.length > 0 ? new Set(scope.include) : null;
  const exclude = new Set(scope.exclude ?? []);
  const synced: TableInfo[] = [];
  const unsynced: UnsyncedTable[] = [];
  for (const t of tables.values()) {
    t.primaryKey = [...t.pkPositions.entries()].sort((a, b) => a[1] - b[1]).map(([name]) => name);
    if (t.primaryKey.length !== 1) t.pkSequence = null;
    const { pkPositions: _, ...info } = t;
    if (deny.has(t.name) || exclude.has(t.name)) unsynced.push({ name: t.name, reason: 'excluded' });
    else if (include && !include.has(t.name)) unsynced.push({ name: t.name, reason: 'not included' });
    else if (t.primaryKey.length === 0) unsynced.push({ name: t.name, reason: 'no primary key' });
    else synced.push(info);
  }
  const ordered = await foreignKeyOrder(db, synced);
  return { tables: ordered, byName: new Map(ordered.map((t) => [t.name, t])), unsynced };
}

async function foreignKeyOrder(db: SqlExecutor, tables: TableInfo[]): Promise<TableInfo[]> {
  const { rows } = await db.query<{ child_schema: string; child: string; parent_schema: string; parent: string }>(
    `SELECT cn.nspname AS child_schema, c.relname AS child, pn.nspname AS parent_schema, p.relname AS parent
       FROM pg_constraint k
       JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
       JOIN pg_class p ON p.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
      WHERE k.contype = 'f'`,
  );
  const bySql = new Map(tables.map((t) => [`${t.schema}.${t.name}`, t]));
  const parents = new Map<TableInfo, Set<TableInfo>>(tables.map((t) => [t, new Set()]));
  for (const r of rows) {
    const child = bySql.get(`${r.child_schema}.${r.child}`);
    const parent = bySql.get(`${r.parent_schema}.${r.parent}`);
    if (child && parent && child !== parent) parents.get(child)!.add(parent);
  }
  const done = new Set<TableInfo>();
  const ordered: TableInfo[] = [];
  const sorted = [...tables].sort((a, b) => a.name.localeCompare(b.name));
  // Depth-first with a visiting set: a foreign-key cycle is broken at the first table seen again.
  const visiting = new Set<TableInfo>();
  const visit = (t: TableInfo): void => {
    if (done.has(t) || visiting.has(t)) return;
    visiting.add(t);
    for (const p of [...parents.get(t)!].sort((a, b) => a.name.localeCompare(b.name))) visit(p);
    visiting.delete(t);
    done.add(t);
    ordered.push(t);
  };
  for (const t of sorted) visit(t);
  return ordered;
}

/** Returns the select list for a table's columns in table order, encoded for {@link toWire}. */
export function selectList(table: TableInfo, alias = 't'): string {
  return table.columns.map((c) => `${selectExpression(c.kind, `${alias}.${quoteIdent(c.name)}`)} AS ${quoteIdent(c.name)}`).join(', ');
}

/** Returns the SQL expression that turns a text parameter into a column's type. */
export function castParam(column: ColumnInfo, placeholder: string): string {
  return `${placeholder}::text::${column.castType}`;
}
