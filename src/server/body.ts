import { PassThrough, Readable } from 'node:stream';
import { createGunzip, type Gunzip } from 'node:zlib';
import { HttpError } from './http-error.js';

/** Describes the request body limits: bytes on the wire and bytes after gzip decompression. */
export interface BodyLimits {
  maxBodyBytes: number;
  maxDecompressedBytes: number;
}

/** Lists the default body limits of docs/protocol.md: 64 MiB on the wire, 256 MiB decompressed. */
export const DEFAULT_BODY_LIMITS: BodyLimits = { maxBodyBytes: 64 * 1024 * 1024, maxDecompressedBytes: 256 * 1024 * 1024 };

/**
 * Returns the request body stream Fastify should parse: the raw bytes counted against the wire
 * limit and, for `Content-Encoding: gzip`, inflated with a hard cap so a gzip bomb is cut off at
 * the decompressed limit instead of filling memory. A Fastify `preParsing` hook.
 */
export function limitedBody(payload: Readable, headers: Record<string, string | string[] | undefined>, limits: BodyLimits): Readable {
  const encoding = String(headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  if (encoding !== 'identity' && encoding !== 'gzip' && encoding !== 'x-gzip') {
    throw new HttpError('UNSUPPORTED_MEDIA_TYPE', `Content-Encoding "${encoding.slice(0, 40)}" is not supported (send gzip or nothing)`, { content_encoding: encoding.slice(0, 40) });
  }
  const declared = Number(headers['content-length']);
  if (Number.isFinite(declared) && declared > limits.maxBodyBytes) throw tooLarge(limits.maxBodyBytes, 'body');
  const out = new PassThrough() as PassThrough & { receivedEncodedLength?: number };
  // Fastify stops listening once it has answered (a 415 before parsing, a body over a route's own
  // limit): a corrupt gzip tail arriving after that must not become an unhandled 'error' that ends
  // the whole process. Whoever still reads the body gets the error through its own listener.
  out.on('error', () => {});
  const gzip = encoding !== 'identity';
  let encoded = 0;
  let decoded = 0;
  let gunzip: Gunzip | undefined;
  let failed = false;
  const fail = (error: Error): void => {
    if (failed) return;
    failed = true;
    payload.unpipe();
    payload.resume(); // drain what is still coming so the socket can answer
    gunzip?.destroy();
    out.destroy(error);
  };
  payload.on('data', (chunk: Buffer) => {
    encoded += chunk.length;
    if (gzip) out.receivedEncodedLength = encoded;
    if (encoded > limits.maxBodyBytes) fail(tooLarge(limits.maxBodyBytes, 'body'));
  });
  payload.on('error', (error) => fail(error));
  if (!gzip) {
    payload.pipe(out);
    return out;
  }
  gunzip = createGunzip();
  gunzip.on('data', (chunk: Buffer) => {
    decoded += chunk.length;
    if (decoded > limits.maxDecompressedBytes) fail(tooLarge(limits.maxDecompressedBytes, 'decompressed body'));
  });
  gunzip.on('error', () => fail(new HttpError('BAD_REQUEST', 'The gzip body is corrupt or truncated.', { problems: [{ path: 'body', message: 'is not valid gzip' }] })));
  payload.pipe(gunzip).pipe(out);
  return out;
}

function tooLarge(limit: number, what: string): HttpError {
  return new HttpError('BODY_TOO_LARGE', `The ${what} is over the limit of ${limit} bytes.`, { limit });
}

/** Returns a request body handed over unread (a stream) or already read (a string, a Buffer) as something to iterate. */
export function bodyStream(body: unknown): string | AsyncIterable<Buffer | string> {
  if (typeof body === 'string') return body;
  if (Buffer.isBuffer(body)) return body.toString('utf8');
  if (body instanceof Readable) return body;
  throw new HttpError('BAD_REQUEST', 'The request has no body: the first line must be {"columns":[...]}', { line: 1, problems: [{ path: 'body', message: 'is missing' }] });
}

/** Lets a streamed body that nobody read (a request refused before its handler ran) flow away, so the connection stays usable. */
export function discardBody(body: unknown): void {
  if (body instanceof Readable && !body.readableEnded && !body.destroyed) {
    body.on('error', () => {});
    body.resume();
  }
}
