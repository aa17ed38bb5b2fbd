/**
 * Splits an NDJSON byte stream into lines as it arrives, never holding more than the line being
 * read: the client reads the server's feed and snapshot answers with it, the server the bulk
 * bodies it streams into COPY. A line may span chunks; a trailing "\r" is dropped; every line is
 * yielded (blank ones too, so line numbers stay true) and the caller decides what a blank one means.
 */
export async function* splitLines(
  body: string | AsyncIterable<Buffer | string>,
  options: { maxLineBytes?: number; tooLong?: (limit: number) => Error } = {},
): AsyncGenerator<{ text: string; line: number }> {
  const max = options.maxLineBytes ?? Number.POSITIVE_INFINITY;
  const fail = (): Error => options.tooLong?.(max) ?? new RangeError(`a line is longer than ${max} bytes`);
  let lineNo = 0;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const piece of typeof body === 'string' ? [body] : body) {
    const chunk = typeof piece === 'string' ? Buffer.from(piece, 'utf8') : piece;
    let start = 0;
    let newline = chunk.indexOf(10, start);
    while (newline !== -1) {
      const part = chunk.subarray(start, newline);
      const line = pendingBytes > 0 ? Buffer.concat([...pending, part], pendingBytes + part.length) : part;
      pending = [];
      pendingBytes = 0;
      if (line.length > max) throw fail();
      lineNo += 1;
      const end = line.length > 0 && line[line.length - 1] === 13 ? line.length - 1 : line.length;
      yield { text: line.toString('utf8', 0, end), line: lineNo };
      start = newline + 1;
      newline = chunk.indexOf(10, start);
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      pending.push(rest);
      pendingBytes += rest.length;
      if (pendingBytes > max) throw fail();
    }
  }
  // A last line without "\n" is still a line; the caller decides whether the stream was complete.
  if (pendingBytes > 0) yield { text: Buffer.concat(pending, pendingBytes).toString('utf8'), line: lineNo + 1 };
}
