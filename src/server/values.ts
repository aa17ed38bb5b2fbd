import type { PgTypeKind } from '../sync/pg-type.js';

/**
 * The wire value table of docs/protocol.md, in one place: database value → JSON (downloads, feed,
 * conflict answers) and JSON → SQL parameter text (uploads, bulk loads, resume keys).
 *
 * Every parameter travels as text and is cast in SQL with `$n::text::<type>`, so node-postgres and
 * PGlite see the same thing and no driver-side conversion can lose digits.
 */

/** Names how a column's values are encoded on the wire: the kinds of the shared conversion rules. */
export type ValueKind = PgTypeKind;

const KIND_BY_TYPNAME: Record<string, ValueKind> = {
  int2: 'int2',
  int4: 'int4',
  int8: 'int8',
  numeric: 'numeric',
  float4: 'float',
  float8: 'float',
  bool: 'boolean',
  text: 'text',
  varchar: 'text',
  bpchar: 'text',
  name: 'text',
  citext: 'text',
  date: 'date',
  time: 'time',
  timestamp: 'timestamp',
  timestamptz: 'timestamptz',
  bytea: 'bytea',
  uuid: 'uuid',
  json: 'json',
  jsonb: 'json',
};

/** Returns the wire kind of a PostgreSQL type name (`pg_type.typname`). */
export function kindOfType(typname: string): ValueKind {
  return KIND_BY_TYPNAME[typname] ?? 'other';
}

/** Returns the SQL select expression for a column so the driver hands back what {@link toWire} expects. */
export function selectExpression(kind: ValueKind, qualifiedColumn: string): string {
  // Types outside the table (arrays, enums, intervals, timetz...) travel as PostgreSQL's text output;
  // without the cast node-postgres would parse some of them (arrays) into JS shapes.
  return kind === 'other' ? `${qualifiedColumn}::text` : qualifiedColumn;
}

/** Converts a value read from the database (through {@link selectExpression}) to its wire JSON. */
export function toWire(kind: ValueKind, value: unknown): unknown {
  if (value === null || value === undefined) return null;
  switch (kind) {
    case 'float':
      if (typeof value === 'number' && !Number.isFinite(value)) return Number.isNaN(value) ? 'NaN' : value > 0 ? 'Infinity' : '-Infinity';
      return typeof value === 'string' ? Number(value) : value;
    case 'int2':
    case 'int4':
      return typeof value === 'number' ? value : Number(value);
    case 'int8':
    case 'numeric':
      return String(value);
    case 'timestamp':
      return normaliseTimestamp(String(value), false);
    case 'timestamptz':
      return normaliseTimestamp(String(value), true);
    case 'bytea':
      if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
      return String(value);
    case 'json':
      return value;
    default:
      return value;
  }
}

/**
 * Converts PostgreSQL's text for a value (a changelog primary key, `to_jsonb(v) #>> '{}'`) to its
 * wire JSON; used for delete tombstones, where the row is gone and only the key text remains.
 */
export function textToWire(kind: ValueKind, text: string | null): unknown {
  if (text === null) return null;
  switch (kind) {
    case 'int2':
    case 'int4':
      return Number(text);
    case 'float':
      return /^-?\d/.test(text) ? Number(text) : text;
    case 'boolean':
      return text === 'true' || text === 't';
    case 'timestamp':
      return normaliseTimestamp(text, false);
    case 'timestamptz':
      return normaliseTimestamp(text, true);
    case 'bytea':
      return text.startsWith('\\x') ? Buffer.from(text.slice(2), 'hex').toString('base64') : text;
    case 'json':
      try {
        return JSON.parse(text) as unknown;
      } catch {
        return text;
      }
    default:
      return text;
  }
}

/** Rewrites PostgreSQL's timestamp text (session time zone UTC) in the documented ISO spelling. */
export function normaliseTimestamp(text: string, withZone: boolean): string {
  const m = /^(\d{4,}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2}(?:\.\d+)?)([+-]\d{2}(?::?\d{2}){0,2}|Z)?$/.exec(text);
  if (!m) return text; // infinity, BC dates: PostgreSQL's own text
  const [, date, time, zone] = m;
  if (!withZone) return `${date}T${time}`;
  if (zone === undefined || zone === 'Z' || /^[+-]00(:?00){0,2}$/.test(zone)) return `${date}T${time}Z`;
  // Only reachable when the session time zone is not UTC; keep the exact offset rather than guess.
  return `${date}T${time}${zone}`;
}

const INT_LIMITS = { int2: 32767, int4: 2147483647 } as const;
const NUMERIC_TEXT = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;
const DATE_TEXT = /^\d{4,}-\d{2}-\d{2}( BC)?$/;
const TIME_TEXT = /^\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?$/;
const TIMESTAMP_TEXT = /^\d{4,}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?$/;
const TIMESTAMPTZ_TEXT = /^\d{4,}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)?$/;
const UUID_TEXT = /^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$/;
const BASE64_TEXT = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const INFINITIES = new Set(['infinity', '-infinity']);

/** Describes the outcome of decoding one wire value: the SQL parameter text, or why it does not fit. */
export type Decoded = { ok: true; param: string | null } | { ok: false; reason: string };

/**
 * Decodes one wire value for a column into the text bound as `$n::text::<type>`.
 * The database still has the last word (e.g. 2026-02-30).
 */
export function fromWire(kind: ValueKind, value: unknown): Decoded {
  if (value === null || value === undefined) return { ok: true, param: null };
  const bad = (expected: string): Decoded => ({ ok: false, reason: `expected ${expected}, got ${describe(value)}` });
  switch (kind) {
    case 'int2':
    case 'int4': {
      const n = typeof value === 'string' && /^-?\d{1,10}$/.test(value) ? Number(value) : value;
      if (typeof n !== 'number' || !Number.isInteger(n)) return bad('an integer');
      const limit = INT_LIMITS[kind];
      if (n > limit || n < -limit - 1) return bad(`an integer within ${kind} range`);
      return { ok: true, param: String(n) };
    }
    case 'int8':
      if (typeof value === 'string' && /^-?\d{1,19}$/.test(value)) return { ok: true, param: value };
      if (typeof value === 'number' && Number.isSafeInteger(value)) return { ok: true, param: String(value) };
      return bad('a bigint as a string of digits (or a safe-integer number)');
    case 'numeric':
      if (typeof value === 'string' && (NUMERIC_TEXT.test(value) || value === 'NaN')) return { ok: true, param: value };
      if (typeof value === 'number' && Number.isFinite(value)) return { ok: true, param: String(value) };
      return bad('a decimal number as a string');
    case 'float':
      if (typeof value === 'number' && Number.isFinite(value)) return { ok: true, param: String(value) };
      if (value === 'NaN' || value === 'Infinity' || value === '-Infinity') return { ok: true, param: value };
      return bad('a number (or "NaN", "Infinity", "-Infinity")');
    case 'boolean':
      return typeof value === 'boolean' ? { ok: true, param: value ? 'true' : 'false' } : bad('true or false');
    case 'text':
      if (typeof value !== 'string') return bad('a string');
      if (value.includes('\u0000')) return { ok: false, reason: 'text may not contain the NUL character' };
      return { ok: true, param: value };
    case 'date':
      return typeof value === 'string' && (DATE_TEXT.test(value) || INFINITIES.has(value)) ? { ok: true, param: value } : bad('a date "YYYY-MM-DD"');
    case 'time':
      return typeof value === 'string' && TIME_TEXT.test(value) ? { ok: true, param: value } : bad('a time "HH:MM:SS[.ffffff]"');
    case 'timestamp':
      return typeof value === 'string' && (TIMESTAMP_TEXT.test(value) || INFINITIES.has(value))
        ? { ok: true, param: value }
        : bad('a timestamp "YYYY-MM-DDTHH:MM:SS[.ffffff]"');
    case 'timestamptz':
      return typeof value === 'string' && (TIMESTAMPTZ_TEXT.test(value) || INFINITIES.has(value))
        ? { ok: true, param: value }
        : bad('a timestamp "YYYY-MM-DDTHH:MM:SS[.ffffff]Z"');
    case 'bytea':
      if (typeof value !== 'string' || !BASE64_TEXT.test(value)) return bad('base64 text');
      return { ok: true, param: `\\x${Buffer.from(value, 'base64').toString('hex')}` };
    case 'uuid':
      return typeof value === 'string' && UUID_TEXT.test(value) ? { ok: true, param: value } : bad('a uuid');
    case 'json':
      // Checked before anything recursive touches the value: JSON.stringify, the batch hash and
      // PostgreSQL's own parser all recurse, and a few thousand levels exhaust the stack.
      {
        const problem = jsonProblem(value, MAX_JSON_DEPTH);
        if (problem) return { ok: false, reason: problem };
      }
      return { ok: true, param: JSON.stringify(value) };
    default:
      if (typeof value === 'string') {
        if (value.includes('\u0000')) return { ok: false, reason: 'text may not contain the NUL character' };
        return { ok: true, param: value };
      }
      if (typeof value === 'number' || typeof value === 'boolean') return { ok: true, param: String(value) };
      return bad("PostgreSQL's text form as a string");
  }
}

/** Caps how deeply a json/jsonb value from the network may nest (docs/protocol.md, values on the wire). */
export const MAX_JSON_DEPTH = 256;

// NUL, and a UTF-16 surrogate without its pair: JSON.stringify writes them as \u escapes that jsonb refuses.
const NOT_STORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Returns why a parsed JSON value cannot be stored, or undefined: nested deeper than `max` levels,
 * or a string (value or key) holding NUL or a lone surrogate. Iterative, so any depth is safe to check.
 */
export function jsonProblem(value: unknown, max: number): string | undefined {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v === 'string') {
      if (NOT_STORABLE.test(v)) return 'a JSON string may not contain the NUL character or a lone surrogate';
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    if (depth + 1 > max) return `a JSON value may be nested at most ${max} levels deep`;
    if (Array.isArray(v)) {
      for (const child of v) stack.push([child, depth + 1]);
    } else {
      for (const [key, child] of Object.entries(v as Record<string, unknown>)) stack.push([key, depth + 1], [child, depth + 1]);
    }
  }
  return undefined;
}

function describe(value: unknown): string {
  if (typeof value === 'string') return `"${value.length > 40 ? `${value.slice(0, 40)}…` : value}"`;
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return String(value);
}
