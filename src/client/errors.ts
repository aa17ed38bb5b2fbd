/**
 * Turns transport failures and error answers into epetsync's error family, each with a stable
 * code and a one-line remedy. Messages name the host, never credentials.
 */
import { AuthError, ConnectionError, EpetsyncError, ProtocolError, ServerError, type EpetsyncErrorOptions } from '../errors.js';
import { redactText } from '../redact.js';
import { wireErrorSchema, type WireError } from './protocol.js';

/** Reports a 4xx the server gave for an invalid request; `wireCode` and `details` (e.g. `index`) let callers quarantine the change. */
export class RequestRejectedError extends EpetsyncError {
  readonly status: number;
  readonly wireCode: string;

  constructor(status: number, wireCode: string, message: string, options: EpetsyncErrorOptions = {}) {
    super('EPS_REQUEST_REJECTED', message, options);
    this.status = status;
    this.wireCode = wireCode;
  }
}

const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT$|SELF_SIGNED_CERT_IN_CHAIN$|UNABLE_TO_(GET|VERIFY)_|EPROTO$|HOSTNAME_MISMATCH$)/;

/** Returns the most telling low-level error code inside `error` (undici wraps causes and AggregateErrors). */
export function transportCode(error: unknown): string | undefined {
  const seen = new Set<unknown>();
  const codes: string[] = [];
  const visit = (e: unknown): void => {
    if (e === null || typeof e !== 'object' || seen.has(e)) return;
    seen.add(e);
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') codes.push(code);
    if (e instanceof AggregateError) for (const inner of e.errors) visit(inner);
    visit((e as { cause?: unknown }).cause);
  };
  visit(error);
  // A specific errno or TLS code beats undici's generic wrapper code.
  return codes.find((c) => !c.startsWith('UND_ERR_')) ?? codes[0];
}

/** Maps a failure below HTTP (DNS, refused, timeout, TLS, reset) to a ConnectionError naming what to check. */
export function connectionError(error: unknown, url: URL, phase: 'connect' | 'headers' | 'body' = 'connect'): ConnectionError {
  const code = transportCode(error);
  const host = url.host;
  const details = { host, code: code ?? null };
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_NONAME' || code === 'EAI_FAIL') {
    return new ConnectionError('EPS_CONNECT_DNS', `Cannot resolve the server host name ${url.hostname} (${code})`, {
      hint: 'Check remote_database.url for a typo and that this machine has DNS and internet access.',
      cause: error,
      details,
    });
  }
  if (code === 'ECONNREFUSED') {
    return new ConnectionError('EPS_CONNECT_REFUSED', `The server ${host} refused the connection`, {
      hint: 'Check that the server is running and that the port in remote_database.url is right.',
      cause: error,
      details,
    });
  }
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'ETIMEDOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    const what = code === 'UND_ERR_HEADERS_TIMEOUT' ? 'did not start answering' : code === 'UND_ERR_BODY_TIMEOUT' ? 'stopped sending its answer' : 'did not accept the connection';
    return new ConnectionError('EPS_CONNECT_TIMEOUT', `The server ${host} ${what} in time (${code})`, {
      hint: 'Check the network and firewall, or raise remote_database.connect_timeout_ms / request_timeout_ms for a slow link.',
      cause: error,
      details,
    });
  }
  if (code !== undefined && TLS_CODES.test(code)) {
    return new ConnectionError('EPS_CONNECT_TLS', `TLS with ${host} failed: ${redactText(errorMessage(error))} (${code})`, {
      hint: 'Check the server certificate (expiry, host name, issuer) and the clock of this machine; --insecure is only for self-signed test servers.',
      cause: error,
      details,
    });
  }
  return new ConnectionError('EPS_CONNECT_RESET', `The connection to ${host} was closed ${phase === 'body' ? 'in the middle of the answer' : 'before the answer was complete'} (${code ?? 'closed'})`, {
    hint: 'Check for a proxy or load balancer cutting connections; the request is retried automatically and can be run again safely.',
    cause: error,
    details,
  });
}

/** Returns the parsed wire error of an error body, or undefined when the body is not one. */
export function parseWireError(body: unknown): WireError | undefined {
  const parsed = wireErrorSchema.safeParse(body);
  return parsed.success ? parsed.data.error : undefined;
}

/** Maps an error answer (status ≥ 400) that will not be retried or re-authenticated to its error class. */
export function responseError(status: number, body: unknown, requestId: string | undefined, url: URL): EpetsyncError {
  const wire = parseWireError(body);
  const wireCode = wire?.code ?? `HTTP_${status}`;
  const serverMessage = wire?.message ? `: ${redactText(wire.message).slice(0, 500)}` : '';
  const rid = wire?.request_id ?? requestId ?? null;
  const where = `${url.pathname}`;
  const details: Record<string, unknown> = { status, wire_code: wireCode, request_id: rid, ...(wire?.details ? { wire_details: wire.details } : {}) };
  if (status === 401) {
    if (wireCode === 'INVALID_CREDENTIALS') {
      return new AuthError('EPS_AUTH_FAILED', `The server rejected the username and password${serverMessage}`, {
        hint: 'Check remote_database.username and the password (config or EPETSYNC_PASSWORD).',
        details,
      });
    }
    if (wireCode === 'TOKEN_EXPIRED' || wireCode === 'TOKEN_INVALID') {
      return new AuthError('EPS_AUTH_EXPIRED', `The server rejected the token (${wireCode}) and it could not be renewed`, {
        hint: 'Configure remote_database.username and password so epetsync can obtain a new token, or set a fresh EPETSYNC_TOKEN.',
        details,
      });
    }
    return new AuthError('EPS_AUTH_FAILED', `The server refused the request to ${where} as unauthenticated (${wireCode})`, {
      hint: 'Check remote_database.username and password, or the token in EPETSYNC_TOKEN.',
      details,
    });
  }
  if (status === 403) {
    const rule = wire?.details?.rule;
    return new AuthError('EPS_AUTH_FORBIDDEN', `The account may not sync${typeof rule === 'string' ? ` (rule: ${rule})` : ''}${serverMessage}`, {
      hint: 'Ask the web app administrator to make the account active and allowed to sync (staff by default).',
      details,
    });
  }
  if (status >= 500) {
    return new ServerError('EPS_SERVER_ERROR', `The server answered ${status} ${wireCode} for ${where}${serverMessage}${rid ? ` (request id ${rid})` : ''}`, {
      hint: wireCode === 'DATABASE_UNAVAILABLE'
        ? 'The server cannot reach its PostgreSQL database; check the database, then run again.'
        : 'Run again later; if it persists, give the request id to whoever runs the server.',
      details,
    });
  }
  if (wire === undefined && status !== 404) {
    return new ProtocolError('EPS_PROTOCOL_MALFORMED', `The server answered ${status} for ${where} without a protocol error body`, {
      hint: 'Check that remote_database.url points at an epetsync server and not at another web app or proxy page.',
      details,
    });
  }
  return new RequestRejectedError(status, wireCode, `The server rejected the request to ${where} (${status} ${wireCode})${serverMessage}`, {
    hint: hintForWireCode(wireCode),
    details: { ...details, ...(wire?.details ?? {}) },
  });
}

function hintForWireCode(code: string): string {
  switch (code) {
    case 'UNKNOWN_TABLE':
    case 'UNKNOWN_COLUMN':
      return 'The local and remote schemas differ: run `epetsync diagnose` to compare them.';
    case 'INVALID_VALUE':
    case 'CONSTRAINT_VIOLATION':
    case 'MISSING_PRIMARY_KEY':
      return 'The change named by details.index cannot be applied; it is quarantined and can be inspected with `epetsync conflicts`.';
    case 'INVALID_CURSOR':
      return 'The stored cursor was not issued by this server: run a fresh snapshot (`epetsync migrate --check-only` shows the state).';
    case 'BATCH_ID_REUSED':
      return 'A batch id was reused with different content; this is a bug, please report it with the log file.';
    case 'BODY_TOO_LARGE':
      return 'Lower sync.batch_size in config.json so each request stays under the server limit.';
    case 'RATE_LIMITED':
      return 'Too many attempts: wait the time the server asked for and run again.';
    default:
      return 'Check the request details in the log file; this is usually a client/server version mismatch.';
  }
}

/** Returns an error's message, or its string form. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
