import type { PgType } from './pg-type.js';

/**
 * The conversion rules between the desktop app's SQLite values and the wire encoding of
 * docs/protocol.md (which is PostgreSQL's). Used by migrate (SQLite → PostgreSQL), sync (both
 * ways) and verify (canonical forms for checksums). docs/conversion.md is the readable version;
 * keep the two in step.
 *
 * The rule that matters most: a value is never altered silently. Either it converts exactly, or
 * the result says why it cannot (`ok: false`), and the caller stops or rejects the row.
 */

/** Names a value as better-sqlite3 returns it (with safe integers on, integers are bigint). */
export type SqliteValue = null | number | bigint | string | Uint8Array;

/** Names a JSON value on the wire. */
export type WireValue = null | boolean | number | string | WireValue[] | { [key: string]: WireValue };

/** Names why a value cannot be converted (also the audit kinds migrate reports). */
export type ProblemKind =
  | 'nul-in-text'
  | 'invalid-utf8'
  | 'too-long'
  | 'not-an-integer'
  | 'integer-out-of-range'
  | 'not-a-number'
  | 'numeric-overflow'
  | 'not-a-boolean'
  | 'invalid-date'
  | 'invalid-time'
  | 'invalid-timestamp'
  | 'invalid-uuid'
  | 'invalid-json';

/** Names a conversion that was exact but worth reporting (the value's spelling or storage class was unusual). */
export type NoteKind = 'boolean-spelled-as-text' | 'storage-class-mismatch' | 'datetime-with-t';

/** Holds the outcome of converting one value. */
export type Conversion =
  | { ok: true; value: WireValue; note?: NoteKind }
  | { ok: false; kind: ProblemKind; reason: string };

/** Describes the surroundings of a conversion. */
export interface ConvertOptions {
  /** IANA zone of naive datetimes stored in SQLite (Django with USE_TZ stores UTC). */
  timezone: string;
}

const INT_RANGE = {
  int2: [-(2n ** 15n), 2n ** 15n - 1n],
  int4: [-(2n ** 31n), 2n ** 31n - 1n],
  int8: [-(2n ** 63n), 2n ** 63n - 1n],
} as const;

const utf8 = new TextDecoder('utf-8', { fatal: true });

const ok = (value: WireValue, note?: NoteKind): Conversion => (note ? { ok: true, value, note } : { ok: true, value });
const fail = (kind: ProblemKind, reason: string): Conversion => ({ ok: false, kind, reason });

/** Converts one SQLite value to the wire value for a PostgreSQL column of type `type`. */
export function toWire(value: SqliteValue, type: PgType, options: ConvertOptions): Conversion {
  if (value === null) return ok(null);
  switch (type.kind) {
    case 'int2':
    case 'int4':
    case 'int8':
      return integerToWire(value, type.kind);
    case 'numeric':
      return numericToWire(value, type);
    case 'float':
      return floatToWire(value);
    case 'boolean':
      return booleanToWire(value);
    case 'text':
      return textToWire(value, type);
    case 'date':
      return dateToWire(value);
    case 'time':
      return timeToWire(value);
    case 'timestamp':
    case 'timestamptz':
      return timestampToWire(value, type.kind, options.timezone);
    case 'bytea':
      if (value instanceof Uint8Array) return ok(Buffer.from(value).toString('base64'));
      return ok(Buffer.from(String(value), 'utf8').toString('base64'), 'storage-class-mismatch');
    case 'uuid':
      return uuidToWire(value);
    case 'json':
      return jsonToWire(value);
    case 'other': {
      const text = asText(value);
      return text.ok ? ok(text.value) : text;
    }
  }
}

/** Converts a wire value into the value to store in SQLite, following how Django stores each type there. */
export function fromWire(value: WireValue, type: PgType, options: ConvertOptions): SqliteValue {
  if (value === null) return null;
  switch (type.kind) {
    case 'int2':
    case 'int4':
    case 'int8':
      return typeof value === 'number' ? value : BigInt(String(value));
    case 'numeric':
      // NUMERIC affinity in the desktop schema stores it as Django would (REAL or INTEGER).
      return String(value);
    case 'float':
      return typeof value === 'number' ? value : Number(value);
    case 'boolean':
      return value === true ? 1 : 0;
    case 'bytea':
      return Buffer.from(String(value), 'base64');
    case 'uuid':
      // Django's UUIDField is char(32) without dashes on SQLite.
      return String(value).replace(/-/g, '').toLowerCase();
    case 'json':
      return JSON.stringify(value);
    case 'timestamp':
      return djangoDateTime(String(value));
    case 'timestamptz':
      return djangoDateTime(utcToZoned(String(value), options.timezone));
    default:
      return typeof value === 'string' ? value : JSON.stringify(value);
  }
}

/** Returns the canonical text of a wire value, identical on both sides for equal values (verify checksums). */
export function canonical(value: WireValue, type: PgType): string {
  if (value === null) return '\\N';
  switch (type.kind) {
    case 'int2':
    case 'int4':
    case 'int8':
      return BigInt(String(value)).toString();
    case 'numeric':
      return trimDecimal(normalizeDecimal(String(value)) ?? String(value));
    case 'float':
      return typeof value === 'number' ? String(value) : String(Number(value));
    case 'boolean':
      return value === true ? 't' : 'f';
    case 'timestamp':
    case 'timestamptz':
    case 'time':
      return String(value).replace(/(\.\d*?)0+(Z?)$/, '$1$2').replace(/\.(Z?)$/, '$1');
    case 'uuid':
      return String(value).toLowerCase();
    case 'json':
      return stableStringify(value);
    default:
      return typeof value === 'string' ? value : JSON.stringify(value);
  }
}

function integerToWire(value: SqliteValue, kind: 'int2' | 'int4' | 'int8'): Conversion {
  let n: bigint;
  let note: NoteKind | undefined;
  if (typeof value === 'bigint') n = value;
  else if (typeof value === 'number') {
    if (!Number.isInteger(value)) return fail('not-an-integer', `${value} is not a whole number`);
    if (!Number.isSafeInteger(value)) return fail('not-an-integer', `${value} was stored as a floating-point number and has lost digits`);
    n = BigInt(value);
  } else if (typeof value === 'string' && /^\s*[+-]?\d+\s*$/.test(value)) {
    n = BigInt(value.trim());
    note = 'storage-class-mismatch';
  } else {
    return fail('not-an-integer', `${describe(value)} is not an integer`);
  }
  const [min, max] = INT_RANGE[kind];
  if (n < min || n > max) return fail('integer-out-of-range', `${n} is outside the range of ${kind === 'int2' ? 'smallint' : kind === 'int4' ? 'integer' : 'bigint'}`);
  return ok(kind === 'int8' ? n.toString() : Number(n), note);
}

function numericToWire(value: SqliteValue, type: PgType): Conversion {
  let text: string;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) return fail('not-a-number', `${value} cannot be stored in a numeric column`);
    // The shortest decimal that round-trips the float: what the desktop app meant, without drift.
    text = String(value);
  } else if (typeof value === 'bigint') text = value.toString();
  else if (typeof value === 'string') text = value.trim();
  else return fail('not-a-number', `${describe(value)} is not a decimal number`);
  const normal = normalizeDecimal(text);
  if (normal === null) return fail('not-a-number', `${describe(value)} is not a decimal number`);
  const scaled = type.scale === undefined ? normal : roundDecimal(normal, type.scale);
  if (type.precision !== undefined) {
    const intDigits = scaled.replace(/^-/, '').split('.')[0]!.replace(/^0+/, '').length;
    if (intDigits > type.precision - (type.scale ?? 0)) {
      return fail('numeric-overflow', `${text} does not fit ${type.name} (at most ${type.precision - (type.scale ?? 0)} digits before the point)`);
    }
  }
  return ok(scaled);
}

function floatToWire(value: SqliteValue): Conversion {
  if (typeof value === 'number') return ok(Number.isFinite(value) ? value : String(value));
  if (typeof value === 'bigint') {
    const n = Number(value);
    if (BigInt(n) !== value) return fail('not-a-number', `${value} cannot be represented exactly as a floating-point number`);
    return ok(n);
  }
  if (typeof value === 'string') {
    const t = value.trim();
    if (/^(NaN|[+-]?Infinity)$/.test(t)) return ok(t.replace(/^\+/, ''), 'storage-class-mismatch');
    if (normalizeDecimal(t) !== null) return ok(Number(t), 'storage-class-mismatch');
  }
  return fail('not-a-number', `${describe(value)} is not a number`);
}

const TRUE_WORDS = new Set(['t', 'true', 'y', 'yes', 'on', '1']);
const FALSE_WORDS = new Set(['f', 'false', 'n', 'no', 'off', '0']);

function booleanToWire(value: SqliteValue): Conversion {
  if (value === 0 || value === 0n) return ok(false);
  if (value === 1 || value === 1n) return ok(true);
  if (typeof value === 'string') {
    const word = value.trim().toLowerCase();
    if (TRUE_WORDS.has(word)) return ok(true, 'boolean-spelled-as-text');
    if (FALSE_WORDS.has(word)) return ok(false, 'boolean-spelled-as-text');
  }
  return fail('not-a-boolean', `${describe(value)} is not a boolean (expected 0 or 1)`);
}

function asText(value: SqliteValue): { ok: true; value: string; note?: NoteKind } | { ok: false; kind: ProblemKind; reason: string } {
  let text: string;
  let note: NoteKind | undefined;
  if (typeof value === 'string') text = value;
  else if (value instanceof Uint8Array) {
    try {
      text = utf8.decode(value);
    } catch {
      return { ok: false, kind: 'invalid-utf8', reason: `bytes ${Buffer.from(value).subarray(0, 16).toString('hex')}… are not valid UTF-8` };
    }
  } else {
    text = String(value);
    note = 'storage-class-mismatch';
  }
  if (text.includes('\u0000')) return { ok: false, kind: 'nul-in-text', reason: 'text contains a NUL character, which PostgreSQL cannot store' };
  return note ? { ok: true, value: text, note } : { ok: true, value: text };
}

function textToWire(value: SqliteValue, type: PgType): Conversion {
  const text = asText(value);
  if (!text.ok) return text;
  if (type.maxLength !== undefined) {
    const length = [...text.value].length;
    if (length > type.maxLength) return fail('too-long', `text of ${length} characters is longer than ${type.name}`);
  }
  return ok(text.value, text.note);
}

function daysInMonth(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

function validDate(y: number, m: number, d: number): boolean {
  return y >= 1 && m >= 1 && m <= 12 && d >= 1 && d <= daysInMonth(y, m);
}

function dateToWire(value: SqliteValue): Conversion {
  if (typeof value !== 'string') return fail('invalid-date', `${describe(value)} is not a date (expected YYYY-MM-DD)`);
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value.trim());
  if (!m || !validDate(Number(m[1]), Number(m[2]), Number(m[3]))) return fail('invalid-date', `"${value}" is not a valid date`);
  return ok(value.trim());
}

const TIME = /^(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?$/;

function timeToWire(value: SqliteValue): Conversion {
  if (typeof value !== 'string') return fail('invalid-time', `${describe(value)} is not a time (expected HH:MM:SS)`);
  const m = TIME.exec(value.trim());
  if (!m) return fail('invalid-time', `"${value}" is not a valid time`);
  const [h, mi, s] = [Number(m[1]), Number(m[2]), Number(m[3] ?? '0')];
  if (h > 23 || mi > 59 || s > 59) return fail('invalid-time', `"${value}" is not a valid time`);
  const frac = fraction(m[4]);
  if (frac === null) return fail('invalid-time', `"${value}" has more than 6 fractional digits`);
  return ok(`${m[1]}:${m[2]}:${m[3] ?? '00'}${frac}`);
}

const DATETIME = /^(\d{4})-(\d{2})-(\d{2})(?:([ T])(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$/i;

/** Returns `.ffffff` with trailing zeros trimmed, '' for none, or null when it has more than 6 significant digits. */
function fraction(digits: string | undefined): string | null {
  if (!digits) return '';
  const trimmed = digits.replace(/0+$/, '');
  if (trimmed.length > 6) return null;
  return trimmed.length === 0 ? '' : `.${trimmed}`;
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

function timestampToWire(value: SqliteValue, kind: 'timestamp' | 'timestamptz', timezone: string): Conversion {
  if (typeof value !== 'string') return fail('invalid-timestamp', `${describe(value)} is not a date and time (expected YYYY-MM-DD HH:MM:SS)`);
  const m = DATETIME.exec(value.trim());
  if (!m) return fail('invalid-timestamp', `"${value}" is not a valid date and time`);
  const [y, mo, d, h, mi, s] = [m[1], m[2], m[3], m[5] ?? '0', m[6] ?? '0', m[7] ?? '0'].map(Number) as [number, number, number, number, number, number];
  if (!validDate(y, mo, d) || h > 23 || mi > 59 || s > 59) return fail('invalid-timestamp', `"${value}" is not a valid date and time`);
  const frac = fraction(m[8]);
  if (frac === null) return fail('invalid-timestamp', `"${value}" has more than 6 fractional digits`);
  const note: NoteKind | undefined = m[4] === 'T' ? 'datetime-with-t' : undefined;
  const offset = m[9];
  let wall = Date.UTC(y, mo - 1, d, h, mi, s);
  if (kind === 'timestamp') {
    // A naive column keeps the wall time; an offset in the text is applied to reach UTC wall time.
    if (offset) wall -= offsetMinutes(offset) * 60_000;
    return ok(`${isoSeconds(wall)}${frac}`, note);
  }
  const utc = offset ? wall - offsetMinutes(offset) * 60_000 : zonedToUtc(wall, timezone);
  return ok(`${isoSeconds(utc)}${frac}Z`, note);
}

function offsetMinutes(offset: string): number {
  if (offset.toUpperCase() === 'Z') return 0;
  const m = /^([+-])(\d{2}):?(\d{2})?$/.exec(offset)!;
  const minutes = Number(m[2]) * 60 + Number(m[3] ?? '0');
  return m[1] === '-' ? -minutes : minutes;
}

function isoSeconds(ms: number): string {
  const d = new Date(ms);
  return `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
}

const zoneFormats = new Map<string, Intl.DateTimeFormat>();

/** Returns how many minutes `timezone` is ahead of UTC at the instant `utcMs`. */
function zoneOffsetMinutes(utcMs: number, timezone: string): number {
  if (timezone === 'UTC') return 0;
  let format = zoneFormats.get(timezone);
  if (!format) {
    format = new Intl.DateTimeFormat('en-US', {
      timeZone: timezone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
    zoneFormats.set(timezone, format);
  }
  const parts = Object.fromEntries(format.formatToParts(new Date(utcMs)).map((p) => [p.type, p.value]));
  const wall = Date.UTC(Number(parts.year), Number(parts.month) - 1, Number(parts.day), Number(parts.hour), Number(parts.minute), Number(parts.second));
  return Math.round((wall - Math.floor(utcMs / 1000) * 1000) / 60_000);
}

/** Returns the UTC instant of a wall time in `timezone` (the earlier one when the clock falls back). */
function zonedToUtc(wallMs: number, timezone: string): number {
  const first = wallMs - zoneOffsetMinutes(wallMs, timezone) * 60_000;
  const second = wallMs - zoneOffsetMinutes(first, timezone) * 60_000;
  return Math.min(first, second);
}

/** Returns the naive wall time in `timezone` for an ISO UTC timestamp (`…Z`). */
function utcToZoned(iso: string, timezone: string): string {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?Z?$/.exec(iso);
  if (!m) return iso;
  const utc = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
  return `${isoSeconds(utc + zoneOffsetMinutes(utc, timezone) * 60_000)}${m[7] ?? ''}`;
}

/** Returns Django's SQLite spelling of a datetime: space separator, microseconds padded to 6 digits when present. */
function djangoDateTime(iso: string): string {
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.(\d+))?Z?$/.exec(iso);
  if (!m) return iso;
  return m[3] ? `${m[1]} ${m[2]}.${m[3].padEnd(6, '0')}` : `${m[1]} ${m[2]}`;
}

function uuidToWire(value: SqliteValue): Conversion {
  let hex: string;
  if (value instanceof Uint8Array) {
    if (value.length !== 16) return fail('invalid-uuid', `${value.length} bytes is not a UUID`);
    hex = Buffer.from(value).toString('hex');
  } else {
    hex = String(value).trim().replace(/^\{|\}$/g, '').replace(/-/g, '').toLowerCase();
  }
  if (!/^[0-9a-f]{32}$/.test(hex)) return fail('invalid-uuid', `${describe(value)} is not a UUID`);
  return ok(`${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`);
}

function jsonToWire(value: SqliteValue): Conversion {
  const text = asText(value);
  if (!text.ok) return text;
  try {
    return ok(JSON.parse(text.value) as WireValue);
  } catch {
    return fail('invalid-json', `${describe(value)} is not valid JSON`);
  }
}

/** Returns a plain decimal string (no exponent, no leading zeros, no '+') or null when `text` is not a number. */
export function normalizeDecimal(text: string): string | null {
  const m = /^([+-])?(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!m || (m[2] === '' && (m[3] ?? '') === '')) return null;
  const negative = m[1] === '-';
  let digits = `${m[2]}${m[3] ?? ''}`;
  let point = m[2]!.length + Number(m[4] ?? '0');
  if (point < 0) {
    digits = '0'.repeat(-point) + digits;
    point = 0;
  }
  if (point > digits.length) digits += '0'.repeat(point - digits.length);
  let intPart = digits.slice(0, point).replace(/^0+(?=\d)/, '');
  if (intPart === '') intPart = '0';
  const fracPart = digits.slice(point);
  const body = fracPart.length > 0 ? `${intPart}.${fracPart}` : intPart;
  const isZero = /^[0.]*$/.test(body);
  return negative && !isZero ? `-${body}` : body;
}

/** Rounds a plain decimal string to `scale` digits, half away from zero (as PostgreSQL's numeric does), padding with zeros. */
function roundDecimal(normal: string, scale: number): string {
  const negative = normal.startsWith('-');
  const [intPart, fracPart = ''] = normal.replace(/^-/, '').split('.') as [string, string?];
  let digits = intPart + fracPart.padEnd(scale, '0').slice(0, scale);
  if ((fracPart[scale] ?? '0') >= '5') digits = (BigInt(digits) + 1n).toString().padStart(digits.length, '0');
  const whole = digits.slice(0, digits.length - scale).replace(/^0+(?=\d)/, '') || '0';
  const body = scale > 0 ? `${whole}.${digits.slice(digits.length - scale)}` : whole;
  return negative && !/^[0.]*$/.test(body) ? `-${body}` : body;
}

function trimDecimal(normal: string): string {
  return normal.includes('.') ? normal.replace(/0+$/, '').replace(/\.$/, '') : normal;
}

function stableStringify(value: WireValue): string {
  if (Array.isArray(value)) return `[${value.map(stableStringify).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${stableStringify(value[k]!)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

function describe(value: SqliteValue): string {
  if (value instanceof Uint8Array) return `a ${value.length}-byte blob`;
  if (typeof value === 'string') return `"${value.length > 40 ? `${value.slice(0, 40)}…` : value}"`;
  return String(value);
}
