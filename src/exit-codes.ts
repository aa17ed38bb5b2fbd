/** Process exit codes: the one table every command and `main` share (documented in README.md). */
export const ExitCode = {
  /** Everything worked; no problem found. */
  OK: 0,
  /** The command ran but found problems (failed checks, verify mismatch, quarantined changes). */
  PROBLEMS: 1,
  /** Bad command line or bad configuration; nothing was changed. */
  USAGE: 2,
  /** The remote server could not be reached (DNS, refused, timeout, TLS). */
  REMOTE_UNREACHABLE: 3,
  /** The remote refused the credentials or the account may not sync. */
  AUTH: 4,
  /** The local SQLite database is missing, unreadable, locked or corrupt. */
  LOCAL_DATABASE: 5,
  /** The remote answered, but not as a compatible sync API (endpoint, protocol, 5xx). */
  REMOTE_PROTOCOL: 6,
  /** Another epetsync instance holds the lock for this database. */
  LOCKED: 7,
  /** Stopped by SIGINT/SIGTERM before finishing. */
  INTERRUPTED: 130,
} as const;

/** Names one of the exit codes in {@link ExitCode}. */
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];
