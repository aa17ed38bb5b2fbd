import { describe, expect, it } from 'vitest';
import { formatCursor, parseCursor } from '../../src/server/cursor.js';
import { fromWire, kindOfType, normaliseTimestamp, textToWire, toWire } from '../../src/server/values.js';
import { HttpError } from '../../src/server/http-error.js';

describe('values', () => {
  it('encodes database values in the documented wire spelling', () => {
    expect(toWire('int8', '9007199254740993')).toBe('9007199254740993');
    expect(toWire('numeric', '12.50')).toBe('12.50');
    expect(toWire('float', Number.NaN)).toBe('NaN');
    expect(toWire('float', Number.NEGATIVE_INFINITY)).toBe('-Infinity');
    expect(toWire('timestamptz', '2026-11-25 09:30:00+00')).toBe('2026-11-25T09:30:00Z');
    expect(toWire('timestamptz', '2026-11-25 09:30:00.000001+00')).toBe('2026-11-25T09:30:00.000001Z');
    expect(toWire('timestamp', '2026-11-25 09:30:00.5')).toBe('2026-11-25T09:30:00.5');
    expect(toWire('bytea', Buffer.from([0, 1, 2, 255]))).toBe('AAEC/w==');
    expect(toWire('bytea', new Uint8Array([0, 1, 2, 255]))).toBe('AAEC/w==');
    expect(toWire('json', { a: [1, null] })).toEqual({ a: [1, null] });
    expect(toWire('text', null)).toBeNull();
  });

  it('keeps timestamps it cannot place as PostgreSQL wrote them', () => {
    expect(normaliseTimestamp('infinity', true)).toBe('infinity');
    expect(normaliseTimestamp('2026-11-25 09:30:00+02', true)).toBe('2026-11-25T09:30:00+02');
  });

  it('turns changelog key text back into wire values for tombstones', () => {
    expect(textToWire('int4', '42')).toBe(42);
    expect(textToWire('int8', '9007199254740993')).toBe('9007199254740993');
    expect(textToWire('boolean', 'true')).toBe(true);
    expect(textToWire('timestamptz', '2026-11-25T09:30:00+00:00')).toBe('2026-11-25T09:30:00Z');
    expect(textToWire('bytea', '\\x0001')).toBe('AAE=');
  });

  it('decodes uploads per column type and says why a value does not fit', () => {
    expect(fromWire('int8', '9223372036854775807')).toEqual({ ok: true, param: '9223372036854775807' });
    expect(fromWire('int8', 42)).toEqual({ ok: true, param: '42' });
    expect(fromWire('int8', 2 ** 53 + 2).ok).toBe(false);
    expect(fromWire('int2', 40000).ok).toBe(false);
    expect(fromWire('int4', 1.5).ok).toBe(false);
    expect(fromWire('numeric', '1e3')).toEqual({ ok: true, param: '1e3' });
    expect(fromWire('numeric', '12,5').ok).toBe(false);
    expect(fromWire('float', 'Infinity')).toEqual({ ok: true, param: 'Infinity' });
    expect(fromWire('boolean', 1).ok).toBe(false);
    expect(fromWire('bytea', 'AAEC/w==')).toEqual({ ok: true, param: '\\x000102ff' });
    expect(fromWire('json', { a: 1 })).toEqual({ ok: true, param: '{"a":1}' });
    expect(fromWire('timestamp', '2026-11-25 09:30:00')).toEqual({ ok: true, param: '2026-11-25 09:30:00' });
    expect(fromWire('timestamptz', '2026-11-25T09:30:00+02:00').ok).toBe(true);
    expect(fromWire('date', '25/11/2026').ok).toBe(false);
    expect(fromWire('uuid', 'not-a-uuid').ok).toBe(false);
    expect(fromWire('other', ['array']).ok).toBe(false);
    const bad = fromWire('boolean', 'yes');
    expect(bad.ok === false && bad.reason).toBe('expected true or false, got "yes"');
  });

  it('maps type names to wire kinds', () => {
    expect(kindOfType('int4')).toBe('int4');
    expect(kindOfType('bool')).toBe('boolean');
    expect(kindOfType('varchar')).toBe('text');
    expect(kindOfType('jsonb')).toBe('json');
    expect(kindOfType('interval')).toBe('other');
  });
});

describe('cursor', () => {
  it('round-trips and refuses what this server did not issue', () => {
    expect(formatCursor(parseCursor('c1.740.17'))).toBe('c1.740.17');
    for (const bad of ['', 'c1.1', 'c2.1.1', 'c1.-1.1', 'c1.1.1 ', 'c1.99999999999999999999.1']) {
      expect(() => parseCursor(bad)).toThrow(HttpError);
    }
  });
});
