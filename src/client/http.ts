/**
 * The transport under RemoteDatabaseClient: one keep-alive undici Agent, gzip decoding and
 * size-capped body readers (whole JSON bodies and NDJSON lines read as they arrive).
 */
import { createGunzip } from 'node:zlib';
import { pipeline, type Readable } from 'node:stream';
import type { IncomingHttpHeaders } from 'node:http';
import { Agent } from 'undici';
import { ProtocolError } from '../errors.js';
import { splitLines } from '../ndjson.js';

/** Describes the transport's timeouts and TLS mode. */
export interface TransportOptions {
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  insecureTls: boolean;
}

/** Describes one HTTP request. */
export interface SendOptions {
  url: URL;
  method: 'GET' | 'POST' | 'DELETE';
  headers: Record<string, string>;
  body?: string | Buffer | Readable | undefined;
  signal?: AbortSignal | undefined;
  /** Per-request header timeout (long polls wait longer than the default). */
  headersTimeoutMs?: number | undefined;
}

/** Describes an answer whose body has not been read yet. */
export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  requestId: string | undefined;
  url: URL;
  /** The decoded (gunzipped) body; iterate it once or call {@link RawResponse.discard}. */
  body: Readable;
  /** Drops the body so the connection can be reused or closed. */
  discard(): void;
}

/** Sends requests over one keep-alive connection pool per origin. */
export class Transport {
  private readonly agent: Agent;

  constructor(private readonly options: TransportOptions) {
    this.agent = new Agent({
      connect: { timeout: options.connectTimeoutMs, rejectUnauthorized: !options.insecureTls },
      headersTimeout: options.headersTimeoutMs,
      bodyTimeout: options.bodyTimeoutMs,
      keepAliveTimeout: 10_000,
      keepAliveMaxTimeout: 60_000,
      connections: 8,
    });
  }

  /** Sends a request and returns the answer with its body still streaming; transport failures reject. */
  async send(req: SendOptions): Promise<RawResponse> {
    const res = await this.agent.request({
      origin: req.url.origin,
      path: `${req.url.pathname}${req.url.search}`,
      method: req.method,
      headers: req.headers,
      body: req.body ?? null,
      signal: req.signal ?? null,
      headersTimeout: req.headersTimeoutMs ?? this.options.headersTimeoutMs,
      bodyTimeout: this.options.bodyTimeoutMs,
    });
    const raw = res.body as unknown as Readable;
    const encoding = String(res.headers['content-encoding'] ?? 'identity').toLowerCase().trim();
    let body: Readable;
    if (encoding === 'gzip' || encoding === 'x-gzip') {
      // pipeline destroys the gunzip stream with the socket's error, so a reset surfaces to the reader.
      body = pipeline(raw, createGunzip(), () => {});
    } else if (encoding === 'identity' || encoding === '') {
      body = raw;
    } else {
      discard(raw);
      throw new ProtocolError('EPS_PROTOCOL_MALFORMED', `The server answered with an unsupported content encoding "${encoding.slice(0, 40)}"`, {
        hint: 'Check for a proxy between this machine and the server that re-encodes answers.',
      });
    }
    const requestId = firstHeader(res.headers['x-request-id']);
    return {
      status: res.statusCode,
      headers: res.headers,
      requestId,
      url: req.url,
      body,
      discard: () => {
        discard(body);
        discard(raw);
      },
    };
  }

  /** Closes idle connections and stops the pool. */
  async close(): Promise<void> {
    await this.agent.close();
  }

  /** Drops every connection at once, including ones in use. */
  async destroy(): Promise<void> {
    await this.agent.destroy();
  }
}

// undici's body emits an AbortError when destroyed unread; nobody is listening any more by then.
function discard(stream: Readable): void {
  if (stream.destroyed) return;
  stream.on('error', () => {});
  stream.destroy();
}

/** Returns the first value of a header. */
export function firstHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** Reads a whole body into a Buffer, failing with EPS_PROTOCOL_TOO_LARGE past `maxBytes` (counted after decompression). */
export async function readCapped(body: Readable, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > maxBytes) {
      body.destroy();
      throw tooLarge(maxBytes, 'answer');
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

/** Yields the lines of an NDJSON body as they arrive (never the whole body at once); a line longer than `maxLineBytes` fails. */
export async function* ndjsonLines(body: AsyncIterable<Buffer>, maxLineBytes: number): AsyncGenerator<string> {
  for await (const { text } of splitLines(body, { maxLineBytes, tooLong: (limit) => tooLarge(limit, 'line') })) if (text.length > 0) yield text;
}

function tooLarge(limit: number, what: 'answer' | 'line'): ProtocolError {
  return new ProtocolError('EPS_PROTOCOL_TOO_LARGE', `The server sent ${what === 'line' ? 'a stream line' : 'an answer'} larger than the ${limit}-byte limit`, {
    hint: 'Raise remote_database.max_response_bytes if the server is trusted and rows are really this large.',
    details: { limit },
  });
}
