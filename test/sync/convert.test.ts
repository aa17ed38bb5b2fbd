import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonical, fromWire, normalizeDecimal, toWire, type SqliteValue } from '../../src/sync/convert.js';
import { parsePgType } from '../../src/sync/pg-type.js';

const UTC = { timezone: 'UTC' };
const t = parsePgType;

function wire(value: SqliteValue, type: string, options = UTC): unknown {
  const result = toWire(value, t(type), options);
  if (!result.ok) throw new Error(`${result.kind}: ${result.reason}`);
  return result.value;
}

function problem(value: SqliteValue, type: string): string {
  const result = toWire(value, t(type), UTC);
  if (result.ok) throw new Error(`expected ${String(value)} to be refused for ${type}`);
  return result.kind;
}

describe('convert', () => {
  it('parses format_type spellings', () => {
    expect(t('character varying(100)')).toEqual({ kind: 'text', name: 'character varying(100)', maxLength: 100 });
    expect(t('numeric(10,2)')).toEqual({ kind: 'numeric', name: 'numeric(10,2)', precision: 10, scale: 2 });
    expect(t('numeric')).toEqual({ kind: 'numeric', name: 'numeric' });
    expect(t('timestamp(6) with time zone').kind).toBe('timestamptz');
    expect(t('timestamp without time zone').kind).toBe('timestamp');
    expect(t('double precision').kind).toBe('float');
    expect(t('integer[]').kind).toBe('other');
  });

  it('converts Django booleans stored as 0/1 and flags the ones spelled as text', () => {
    expect(wire(1n, 'boolean')).toBe(true);
    expect(wire(0, 'boolean')).toBe(false);
    expect(toWire('t', t('boolean'), UTC)).toEqual({ ok: true, value: true, note: 'boolean-spelled-as-text' });
    expect(toWire('no', t('boolean'), UTC)).toEqual({ ok: true, value: false, note: 'boolean-spelled-as-text' });
    expect(problem(2n, 'boolean')).toBe('not-a-boolean');
  });

  it('accepts both Django datetime spellings and keeps microseconds', () => {
    expect(wire('2026-11-25 09:30:00', 'timestamp without time zone')).toBe('2026-11-25T09:30:00');
    expect(toWire('2026-11-25T09:30:00.123400', t('timestamp'), UTC)).toEqual({ ok: true, value: '2026-11-25T09:30:00.1234', note: 'datetime-with-t' });
    expect(wire('2026-11-25 09:30:00.000001', 'timestamp with time zone')).toBe('2026-11-25T09:30:00.000001Z');
    expect(wire('2026-11-25 09:30:00+02:00', 'timestamp with time zone')).toBe('2026-11-25T07:30:00Z');
    expect(problem('2024-02-30 10:00:00', 'timestamp')).toBe('invalid-timestamp');
    expect(problem('2024-02-30', 'date')).toBe('invalid-date');
    expect(wire('2024-02-29', 'date')).toBe('2024-02-29');
    expect(problem('25:00', 'time')).toBe('invalid-time');
    expect(problem(1732527000, 'timestamp')).toBe('invalid-timestamp');
  });

  it('reads naive datetimes in the configured time zone, across daylight saving', () => {
    const london = { timezone: 'Europe/London' };
    expect(wire('2026-07-01 12:00:00', 'timestamptz', london)).toBe('2026-07-01T11:00:00Z');
    expect(wire('2026-01-15 12:00:00', 'timestamptz', london)).toBe('2026-01-15T12:00:00Z');
    expect(fromWire('2026-07-01T11:00:00Z', t('timestamptz'), london)).toBe('2026-07-01 12:00:00');
  });

  it('converts decimals stored as REAL or TEXT exactly, without float drift', () => {
    expect(wire(12.5, 'numeric(10,2)')).toBe('12.50');
    expect(wire(0.1 + 0.2, 'numeric(10,2)')).toBe('0.30');
    expect(wire('19.99', 'numeric(10,2)')).toBe('19.99');
    expect(wire(2.675, 'numeric(10,2)')).toBe('2.68');
    expect(wire('1e-7', 'numeric')).toBe('0.0000001');
    expect(wire(42n, 'numeric(6,2)')).toBe('42.00');
    expect(wire('-0.005', 'numeric(6,2)')).toBe('-0.01');
    expect(problem('12,50', 'numeric(10,2)')).toBe('not-a-number');
    expect(problem(123456.7, 'numeric(6,2)')).toBe('numeric-overflow');
  });

  it('keeps 64-bit integers exact and checks ranges', () => {
    expect(wire(9007199254740993n, 'bigint')).toBe('9007199254740993');
    expect(wire(-(2n ** 63n), 'bigint')).toBe('-9223372036854775808');
    expect(wire(7n, 'integer')).toBe(7);
    expect(problem(2n ** 31n, 'integer')).toBe('integer-out-of-range');
    expect(problem('12abc', 'integer')).toBe('not-an-integer');
    expect(problem(12.5, 'bigint')).toBe('not-an-integer');
    expect(toWire('42', t('integer'), UTC)).toEqual({ ok: true, value: 42, note: 'storage-class-mismatch' });
    expect(fromWire('9007199254740993', t('bigint'), UTC)).toBe(9007199254740993n);
  });

  it('refuses text PostgreSQL cannot hold or that does not fit', () => {
    expect(wire('Ménard 🐾 ペット', 'character varying(12)')).toBe('Ménard 🐾 ペット');
    expect(problem('abcdefghijk', 'character varying(10)')).toBe('too-long');
    expect(problem('a\u0000b', 'text')).toBe('nul-in-text');
    expect(problem(Buffer.from([0x61, 0xff, 0xfe]), 'text')).toBe('invalid-utf8');
    expect(wire(Buffer.from('Zoë', 'utf8'), 'text')).toBe('Zoë');
  });

  it('round-trips blobs, Django UUIDs and JSON', () => {
    expect(wire(Buffer.from([0, 1, 2, 255]), 'bytea')).toBe('AAEC/w==');
    expect(fromWire('AAEC/w==', t('bytea'), UTC)).toEqual(Buffer.from([0, 1, 2, 255]));
    expect(wire('0B6C2F1E9A3D4C5B8E7F6A5B4C3D2E1F', 'uuid')).toBe('0b6c2f1e-9a3d-4c5b-8e7f-6a5b4c3d2e1f');
    expect(fromWire('0b6c2f1e-9a3d-4c5b-8e7f-6a5b4c3d2e1f', t('uuid'), UTC)).toBe('0b6c2f1e9a3d4c5b8e7f6a5b4c3d2e1f');
    expect(problem('not-a-uuid', 'uuid')).toBe('invalid-uuid');
    expect(wire('{"weight_kg": 4.2, "tags": ["cat"]}', 'jsonb')).toEqual({ weight_kg: 4.2, tags: ['cat'] });
    expect(problem('{weight: 4}', 'jsonb')).toBe('invalid-json');
  });

  it('normalises decimal spellings', () => {
    expect(normalizeDecimal('+007.50')).toBe('7.50');
    expect(normalizeDecimal('-0')).toBe('0');
    expect(normalizeDecimal('1.5e3')).toBe('1500');
    expect(normalizeDecimal('.5')).toBe('0.5');
    expect(normalizeDecimal('abc')).toBeNull();
    expect(normalizeDecimal('.')).toBeNull();
  });

  describe('properties', () => {
    it('any 64-bit integer survives SQLite → wire → SQLite', () => {
      fc.assert(fc.property(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), (n) => {
        const w = toWire(n, t('bigint'), UTC);
        expect(w.ok).toBe(true);
        expect(fromWire(w.ok ? w.value : null, t('bigint'), UTC)).toBe(n);
      }));
    });

    it('any unicode text without NUL survives unchanged', () => {
      fc.assert(fc.property(fc.string({ unit: 'grapheme' }).filter((s) => !s.includes('\u0000')), (s) => {
        expect(wire(s, 'text')).toBe(s);
        expect(fromWire(s, t('text'), UTC)).toBe(s);
      }));
    });

    it('any datetime with microseconds survives SQLite → wire → SQLite in any zone', () => {
      const zones = ['UTC', 'Europe/London', 'America/New_York', 'Asia/Kolkata'];
      const stamp = fc.date({ min: new Date('1971-01-01T00:00:00Z'), max: new Date('2090-01-01T00:00:00Z'), noInvalidDate: true });
      fc.assert(fc.property(stamp, fc.integer({ min: 0, max: 999_999 }), fc.constantFrom(...zones), (date, micros, timezone) => {
        const naive = `${date.toISOString().slice(0, 10)} ${date.toISOString().slice(11, 19)}${micros ? `.${String(micros).padStart(6, '0')}` : ''}`;
        const w = toWire(naive, t('timestamptz'), { timezone });
        expect(w.ok).toBe(true);
        const back = fromWire(w.ok ? w.value : null, t('timestamptz'), { timezone });
        // A wall time skipped by a daylight-saving jump has no instant; everything else is exact.
        const w2 = toWire(back, t('timestamptz'), { timezone });
        expect(w2.ok && w2.value).toBe(w.ok && w.value);
      }));
    });

    it('any decimal text converts to a value with the same canonical form', () => {
      fc.assert(fc.property(fc.bigInt({ min: -(10n ** 12n), max: 10n ** 12n }), fc.integer({ min: 0, max: 6 }), (units, scale) => {
        const s = scale === 0 ? units.toString() : `${units < 0n ? '-' : ''}${(units < 0n ? -units : units).toString().padStart(scale + 1, '0').replace(new RegExp(`(\\d{${scale}})$`), '.$1')}`;
        const w = toWire(s, t('numeric'), UTC);
        expect(w.ok).toBe(true);
        expect(canonical(w.ok ? w.value : null, t('numeric'))).toBe(canonical(s, t('numeric')));
      }));
    });
  });
});
