import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';

/** Lists the wire error codes of docs/protocol.md with their HTTP status. */
export const WIRE_ERRORS = {
  BAD_REQUEST: 400,
  INVALID_JSON: 400,
  UNKNOWN_TABLE: 400,
  UNKNOWN_COLUMN: 400,
  INVALID_VALUE: 400,
  MISSING_PRIMARY_KEY: 400,
  INVALID_CURSOR: 400,
  AUTH_REQUIRED: 401,
  TOKEN_INVALID: 401,
  TOKEN_EXPIRED: 401,
  INVALID_CREDENTIALS: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  REQUEST_TIMEOUT: 408,
  BATCH_ID_REUSED: 409,
  CONSTRAINT_VIOLATION: 409,
  BODY_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RATE_LIMITED: 429,
  HEADERS_TOO_LARGE: 431,
  INTERNAL: 500,
  DATABASE_UNAVAILABLE: 503,
} as const;

/** Names one wire error code. */
export type WireErrorCode = keyof typeof WIRE_ERRORS;

/** Carries a wire error: the server's error handler renders it as `{"error":{code,message,request_id,details}}`. */
export class HttpError extends Error {
  readonly code: WireErrorCode;
  readonly statusCode: number;
  readonly details: Record<string, unknown> | undefined;
  /** Seconds for a `Retry-After` header (429, 503). */
  readonly retryAfter: number | undefined;

  constructor(code: WireErrorCode, message: string, details?: Record<string, unknown>, retryAfter?: number) {
    super(message);
    this.name = 'HttpError';
    this.code = code;
    this.statusCode = WIRE_ERRORS[code];
    this.details = details;
    this.retryAfter = retryAfter;
  }
}

/** Returns the JSON body for an error answer. */
export function errorBody(code: WireErrorCode, message: string, requestId: string, details?: Record<string, unknown>): {
  error: { code: WireErrorCode; message: string; request_id: string; details?: Record<string, unknown> };
} {
  return { error: { code, message, request_id: requestId, ...(details ? { details } : {}) } };
}

/**
 * Answers a request Node's HTTP parser refused before Fastify saw it (request line and headers over
 * 16 KiB, malformed HTTP) in the documented error shape, then closes the connection: a Fastify
 * `clientErrorHandler`. Fastify's own answer has another shape and no request id.
 */
export function answerClientError(error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const requestId = `req-${randomBytes(6).toString('hex')}`;
  const [status, reason, body] =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'Request Header Fields Too Large', errorBody('HEADERS_TOO_LARGE', 'The request line and headers are over the 16 KiB limit (a query string that long belongs in a body).', requestId)]
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'Request Timeout', errorBody('REQUEST_TIMEOUT', 'The request did not arrive in time.', requestId)]
        : [400, 'Bad Request', errorBody('BAD_REQUEST', 'The request is not valid HTTP.', requestId, { problems: [{ path: 'request', message: 'is not valid HTTP' }] })];
  const text = JSON.stringify(body);
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(text)}\r\nX-Request-Id: ${requestId}\r\nConnection: close\r\n\r\n${text}`);
  }
  socket.destroy();
}
