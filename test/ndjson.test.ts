import { describe, expect, it } from 'vitest';
import { splitLines } from '../src/ndjson.js';

async function collect(body: string | Array<Buffer | string>, options?: Parameters<typeof splitLines>[1]): Promise<Array<{ text: string; line: number }>> {
  const out: Array<{ text: string; line: number }> = [];
  const source = typeof body === 'string' ? body : (async function* () { yield* body; })();
  for await (const l of splitLines(source, options)) out.push(l);
  return out;
}

describe('splitLines', () => {
  it('joins lines split across chunks (a multi-byte character too) and numbers every line, blank ones included', async () => {
    const bytes = Buffer.from('{"a":1}\r\n\n["Ménard 🐾"]\n[2]', 'utf8');
    const chunks = [bytes.subarray(0, 3), bytes.subarray(3, 9), bytes.subarray(9, 15), bytes.subarray(15)];
    expect(await collect(chunks)).toEqual([
      { text: '{"a":1}', line: 1 },
      { text: '', line: 2 },
      { text: '["Ménard 🐾"]', line: 3 },
      { text: '[2]', line: 4 },
    ]);
    expect(await collect('x\ny\n')).toEqual([{ text: 'x', line: 1 }, { text: 'y', line: 2 }]);
  });

  it('fails on a line over the limit, also while the line is still arriving', async () => {
    const tooLong = (limit: number): Error => new Error(`over ${limit}`);
    await expect(collect(['12345\n'], { maxLineBytes: 4, tooLong })).rejects.toThrow('over 4');
    // No newline yet: the pending bytes alone exceed the limit, so an endless line is cut off.
    await expect(collect(['123', '45'], { maxLineBytes: 4, tooLong })).rejects.toThrow('over 4');
    expect(await collect(['1234\n'], { maxLineBytes: 4, tooLong })).toEqual([{ text: '1234', line: 1 }]);
  });
});
