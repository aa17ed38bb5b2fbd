/** Names the families of PostgreSQL column types the conversion rules distinguish. */
export type PgTypeKind =
  | 'int2'
  | 'int4'
  | 'int8'
  | 'numeric'
  | 'float'
  | 'boolean'
  | 'text'
  | 'date'
  | 'time'
  | 'timestamp'
  | 'timestamptz'
  | 'bytea'
  | 'uuid'
  | 'json'
  | 'other';

/** Describes a PostgreSQL column type as spelled by `format_type()`. */
export interface PgType {
  kind: PgTypeKind;
  /** The spelling it was parsed from, e.g. `character varying(100)`. */
  name: string;
  /** `varchar(n)` / `char(n)` length in characters. */
  maxLength?: number;
  /** `numeric(p,s)` precision and scale. */
  precision?: number;
  scale?: number;
}

/** Parses a `format_type()` spelling (`numeric(10,2)`, `timestamp with time zone`, …) into a {@link PgType}. */
export function parsePgType(name: string): PgType {
  const t = name.trim().toLowerCase();
  if (t.endsWith('[]')) return { kind: 'other', name };
  const args = /\(([^)]*)\)/.exec(t)?.[1]?.split(',').map((a) => Number(a.trim()));
  const bare = t.replace(/\([^)]*\)/, '').replace(/\s+/g, ' ').trim();
  switch (bare) {
    case 'smallint':
    case 'int2':
      return { kind: 'int2', name };
    case 'integer':
    case 'int':
    case 'int4':
    case 'serial':
      return { kind: 'int4', name };
    case 'bigint':
    case 'int8':
    case 'bigserial':
      return { kind: 'int8', name };
    case 'numeric':
    case 'decimal': {
      const out: PgType = { kind: 'numeric', name };
      if (args?.[0] !== undefined && Number.isFinite(args[0])) out.precision = args[0];
      if (args !== undefined && Number.isFinite(args[0])) out.scale = args[1] !== undefined && Number.isFinite(args[1]) ? args[1] : 0;
      return out;
    }
    case 'real':
    case 'float4':
    case 'double precision':
    case 'float8':
    case 'float':
      return { kind: 'float', name };
    case 'boolean':
    case 'bool':
      return { kind: 'boolean', name };
    case 'text':
    case 'character varying':
    case 'varchar':
    case 'character':
    case 'char':
    case 'bpchar':
    case 'citext':
    case 'name': {
      const out: PgType = { kind: 'text', name };
      if (args?.[0] !== undefined && Number.isFinite(args[0]) && bare !== 'text') out.maxLength = args[0];
      // A bare `character` means character(1) in PostgreSQL.
      if (args === undefined && (bare === 'character' || bare === 'char')) out.maxLength = 1;
      return out;
    }
    case 'date':
      return { kind: 'date', name };
    case 'time':
    case 'time without time zone':
      return { kind: 'time', name };
    case 'timestamp':
    case 'timestamp without time zone':
      return { kind: 'timestamp', name };
    case 'timestamptz':
    case 'timestamp with time zone':
      return { kind: 'timestamptz', name };
    case 'bytea':
      return { kind: 'bytea', name };
    case 'uuid':
      return { kind: 'uuid', name };
    case 'json':
    case 'jsonb':
      return { kind: 'json', name };
    default:
      return { kind: 'other', name };
  }
}
