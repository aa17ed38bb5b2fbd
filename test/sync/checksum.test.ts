import { describe, expect, it } from 'vitest';
import { TableChecksum } from '../../src/sync/checksum.js';
import { parsePgType } from '../../src/sync/pg-type.js';

const types = ['bigint', 'numeric(10,2)', 'timestamp with time zone', 'text'].map(parsePgType);

function checksum(rows: Array<Array<string | number | null>>): string {
  const c = new TableChecksum(types);
  for (const r of rows) c.add(r);
  return c.digest();
}

describe('checksum', () => {
  const rows = [
    ['1', '12.50', '2026-11-25T09:30:00.500Z', 'Rex'],
    ['2', '3.00', '2026-11-25T09:30:00Z', null],
  ];

  it('does not depend on row order', () => {
    expect(checksum(rows)).toBe(checksum([...rows].reverse()));
  });

  it('treats equal values spelled differently as equal', () => {
    expect(checksum([['1', '12.5', '2026-11-25T09:30:00.5Z', 'Rex'], rows[1]!])).toBe(checksum(rows));
  });

  it('sees a changed value, a NULL versus empty text, a shifted boundary and a duplicated row', () => {
    const base = checksum(rows);
    expect(checksum([['1', '12.51', '2026-11-25T09:30:00.5Z', 'Rex'], rows[1]!])).not.toBe(base);
    expect(checksum([rows[0]!, ['2', '3.00', '2026-11-25T09:30:00Z', '']])).not.toBe(base);
    expect(checksum([rows[0]!, rows[1]!, rows[1]!])).not.toBe(base);
    const two = new TableChecksum(['text', 'text'].map(parsePgType));
    two.add(['a', 'bc']);
    const other = new TableChecksum(['text', 'text'].map(parsePgType));
    other.add(['ab', 'c']);
    expect(two.digest()).not.toBe(other.digest());
  });

  it('counts rows', () => {
    const c = new TableChecksum(types);
    for (const r of rows) c.add(r);
    expect(c.rows).toBe(2);
    expect(c.digest()).toMatch(/^[0-9a-f]{16}$/);
  });
});
