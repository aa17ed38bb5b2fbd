import { createHash } from 'node:crypto';
import { canonical, type WireValue } from './convert.js';
import type { PgType } from './pg-type.js';

const MOD = 2n ** 64n;

/**
 * Accumulates an order-independent checksum of a table: each row's canonical values are hashed
 * (SHA-256, length-prefixed so `"a","bc"` and `"ab","c"` differ) and the first 64 bits are summed
 * modulo 2^64. Client and server compute it the same way over wire values, so equal tables give
 * equal checksums whatever order their rows were read in. A sum rather than XOR keeps a row that
 * appears twice from cancelling itself out.
 */
export class TableChecksum {
  rows = 0;
  private sum = 0n;

  constructor(private readonly types: PgType[]) {}

  /** Adds one row, its values in the column order given to the constructor. */
  add(values: WireValue[]): void {
    const hash = createHash('sha256');
    values.forEach((value, i) => {
      const text = canonical(value, this.types[i]!);
      hash.update(`${Buffer.byteLength(text)}:${text}|`);
    });
    this.sum = (this.sum + hash.digest().readBigUInt64BE(0)) % MOD;
    this.rows += 1;
  }

  /** Returns the checksum as 16 hex digits. */
  digest(): string {
    return this.sum.toString(16).padStart(16, '0');
  }
}
