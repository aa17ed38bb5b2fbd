import { ExitCode, type ExitCodeValue } from './exit-codes.js';

/**
 * Lists every stable error code epetsync raises, with its exit code and a summary.
 * `docs/errors.md` documents each one; test/errors.test.ts keeps the two in step.
 */
export const ERROR_CODES = {
  EPS_USAGE: { exit: ExitCode.USAGE, summary: 'The command line is wrong (unknown option, missing argument, conflicting flags).' },
  EPS_CONFIG_NOT_FOUND: { exit: ExitCode.USAGE, summary: 'No config.json was found where epetsync looked.' },
  EPS_CONFIG_UNREADABLE: { exit: ExitCode.USAGE, summary: 'The config file exists but cannot be read.' },
  EPS_CONFIG_SYNTAX: { exit: ExitCode.USAGE, summary: 'The config file is not valid JSON (line and column are given).' },
  EPS_CONFIG_INVALID: { exit: ExitCode.USAGE, summary: 'A config key has a value of the wrong kind or out of range.' },
  EPS_CONFIG_WINDOWS_PATH: { exit: ExitCode.USAGE, summary: 'A Windows path (C:\\...) is configured but epetsync runs on another system.' },
  EPS_DB_NOT_FOUND: { exit: ExitCode.LOCAL_DATABASE, summary: 'The local SQLite database file does not exist.' },
  EPS_DB_NOT_A_FILE: { exit: ExitCode.LOCAL_DATABASE, summary: 'The database path names a directory or something else that is not a file.' },
  EPS_DB_NOT_SQLITE: { exit: ExitCode.LOCAL_DATABASE, summary: 'The file is not an SQLite database.' },
  EPS_DB_CORRUPT: { exit: ExitCode.LOCAL_DATABASE, summary: 'SQLite reports the database image is malformed or fails its integrity check.' },
  EPS_DB_BUSY: { exit: ExitCode.LOCAL_DATABASE, summary: 'Another process held the database lock longer than the busy timeout.' },
  EPS_DB_OPEN_FAILED: { exit: ExitCode.LOCAL_DATABASE, summary: 'The database could not be opened (permissions, missing folder, other I/O error).' },
  EPS_DB_REPLACED: { exit: ExitCode.LOCAL_DATABASE, summary: 'The database file was deleted, or another file moved over it, while the monitor had it open; the monitor stopped.' },
  EPS_BACKUP_DIR: { exit: ExitCode.LOCAL_DATABASE, summary: 'The backup folder cannot be created or written.' },
  EPS_BACKUP_FAILED: { exit: ExitCode.LOCAL_DATABASE, summary: 'A backup could not be written or did not pass its integrity check.' },
  EPS_BACKUP_NOT_FOUND: { exit: ExitCode.LOCAL_DATABASE, summary: 'The backup named for restore does not exist, or there is no backup at all.' },
  EPS_RESTORE_REFUSED: { exit: ExitCode.USAGE, summary: 'Restore needs confirmation: answer on a terminal or pass --yes.' },
  EPS_LOCKED: { exit: ExitCode.LOCKED, summary: 'Another epetsync process holds the lock for this database.' },
  EPS_CONNECT_REFUSED: { exit: ExitCode.REMOTE_UNREACHABLE, summary: 'The server refused the TCP connection.' },
  EPS_CONNECT_DNS: { exit: ExitCode.REMOTE_UNREACHABLE, summary: 'The server host name does not resolve.' },
  EPS_CONNECT_TIMEOUT: { exit: ExitCode.REMOTE_UNREACHABLE, summary: 'The server did not answer in time (connect, headers or body).' },
  EPS_CONNECT_TLS: { exit: ExitCode.REMOTE_UNREACHABLE, summary: 'The TLS handshake failed or the certificate was not trusted.' },
  EPS_CONNECT_RESET: { exit: ExitCode.REMOTE_UNREACHABLE, summary: 'The connection was closed or reset before the answer was complete.' },
  EPS_INSECURE_URL: { exit: ExitCode.USAGE, summary: 'An http:// URL to a non-loopback host was refused (credentials would travel in clear).' },
  EPS_AUTH_FAILED: { exit: ExitCode.AUTH, summary: 'The server rejected the username and password.' },
  EPS_AUTH_EXPIRED: { exit: ExitCode.AUTH, summary: 'The token expired or was revoked and could not be renewed.' },
  EPS_AUTH_FORBIDDEN: { exit: ExitCode.AUTH, summary: 'The account is valid but may not sync.' },
  EPS_AUTH_MISSING: { exit: ExitCode.AUTH, summary: 'No credentials are configured; epetsync never connects anonymously.' },
  EPS_ENDPOINT_NOT_FOUND: { exit: ExitCode.REMOTE_PROTOCOL, summary: 'No sync API was found at any of the known paths.' },
  EPS_PROTOCOL_VERSION: { exit: ExitCode.REMOTE_PROTOCOL, summary: 'The server speaks a protocol version this epetsync does not.' },
  EPS_PROTOCOL_MALFORMED: { exit: ExitCode.REMOTE_PROTOCOL, summary: 'The server sent an answer that does not match the protocol.' },
  EPS_PROTOCOL_LEGACY_STUB: { exit: ExitCode.REMOTE_PROTOCOL, summary: 'The server is the legacy Django stub that cannot sync rows.' },
  EPS_PROTOCOL_TOO_LARGE: { exit: ExitCode.REMOTE_PROTOCOL, summary: 'The server sent more data than the configured response limit.' },
  EPS_SERVER_ERROR: { exit: ExitCode.REMOTE_PROTOCOL, summary: 'The server answered with a 5xx error.' },
  EPS_REQUEST_REJECTED: { exit: ExitCode.PROBLEMS, summary: 'The server rejected a request as invalid (4xx).' },
  EPS_MIGRATE_CHECK_FAILED: { exit: ExitCode.PROBLEMS, summary: 'Migrate preflight found blocking problems.' },
  EPS_MIGRATE_REMOTE_NOT_EMPTY: { exit: ExitCode.PROBLEMS, summary: 'The remote already holds different data; --force is needed to replace it.' },
  EPS_MIGRATE_UNCONVERTIBLE: { exit: ExitCode.PROBLEMS, summary: 'A local value cannot be converted to the remote column type.' },
  EPS_MIGRATE_REPLACE_FAILED: { exit: ExitCode.PROBLEMS, summary: 'The remote refused migrate --force\'s replace; it was left exactly as it was.' },
  EPS_VERIFY_MISMATCH: { exit: ExitCode.PROBLEMS, summary: 'Row counts or checksums differ between the two sides.' },
  EPS_SERVE_DATABASE: { exit: ExitCode.REMOTE_UNREACHABLE, summary: 'epetsync serve cannot reach or prepare its PostgreSQL database.' },
  EPS_INTERRUPTED: { exit: ExitCode.INTERRUPTED, summary: 'Stopped by a signal before the work was finished.' },
  EPS_INTERNAL: { exit: ExitCode.PROBLEMS, summary: 'An unexpected internal error (a bug): please report it with the log file.' },
} as const satisfies Record<string, { exit: ExitCodeValue; summary: string }>;

/** Names one stable epetsync error code. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** Describes how an {@link EpetsyncError} is built. */
export interface EpetsyncErrorOptions {
  /** One line telling the user what to do about it. */
  hint?: string;
  /** The underlying error, kept for the log file only. */
  cause?: unknown;
  /** Structured facts for `--json` output and logs (never secrets). */
  details?: Record<string, unknown>;
}

/** Carries a stable `code`, the exit code it maps to and a one-line remedy; the base of every expected failure. */
export class EpetsyncError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: EpetsyncErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = options.hint;
    this.details = options.details;
  }

  /** Returns the process exit code this error maps to. */
  get exitCode(): ExitCodeValue {
    return ERROR_CODES[this.code].exit;
  }

  /** Returns the JSON shape used for `--json` errors: `{code, message, hint, details}`. */
  toJSON(): { code: ErrorCode; message: string; hint?: string; details?: Record<string, unknown> } {
    return {
      code: this.code,
      message: this.message,
      ...(this.hint === undefined ? {} : { hint: this.hint }),
      ...(this.details === undefined ? {} : { details: this.details }),
    };
  }
}

/** Reports a bad command line. */
export class UsageError extends EpetsyncError {}
/** Reports a missing, unreadable or invalid configuration. */
export class ConfigError extends EpetsyncError {}
/** Reports a local SQLite database, backup or lock problem. */
export class LocalDatabaseError extends EpetsyncError {}
/** Reports that the remote could not be reached (DNS, refused, timeout, TLS, reset). */
export class ConnectionError extends EpetsyncError {}
/** Reports bad credentials, an expired token or an account without sync permission. */
export class AuthError extends EpetsyncError {}
/** Reports that no sync API was found; `details.tried` lists the URLs tried. */
export class EndpointNotFoundError extends EpetsyncError {}
/** Reports an answer that does not match the protocol (version, malformed body, legacy stub, too large). */
export class ProtocolError extends EpetsyncError {}
/** Reports a 5xx from the remote, with its request id when given. */
export class ServerError extends EpetsyncError {}
/** Reports a failed migrate preflight, load or verify. */
export class MigrationError extends EpetsyncError {}

/** Returns true when `error` is one of epetsync's own expected failures. */
export function isEpetsyncError(error: unknown): error is EpetsyncError {
  return error instanceof EpetsyncError;
}
