import { readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parse as parseJsonc, printParseErrorCode, type ParseError } from 'jsonc-parser';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
import { registerSecret } from '../redact.js';
import { EXPECTATIONS, knownKeys, rawConfigSchema, type RawConfig } from './schema.js';

/** Lists the environment variables that override config keys. */
export const ENV_OVERRIDES = {
  EPETSYNC_URL: 'remote_database.url',
  EPETSYNC_USERNAME: 'remote_database.username',
  EPETSYNC_PASSWORD: 'remote_database.password',
  EPETSYNC_TOKEN: 'remote_database.token',
  EPETSYNC_DB: 'database.path',
} as const;

/** Holds the resolved configuration every command works from (absolute paths, defaults applied). */
export interface EpetsyncConfig {
  /** Absolute path of the config file read. */
  file: string;
  /** Folder of the config file; relative paths and state files live beside it. */
  dir: string;
  /** How the file was found: flag, env, cwd or legacy folder. */
  source: 'flag' | 'env' | 'cwd' | 'vet_desktop_app';
  database: {
    /** Absolute path of the SQLite file; see {@link requireLocalPath} for Windows paths. */
    path: string;
    backupDir: string;
    realTimeSync: boolean;
    timezone: string;
    busyTimeoutMs: number;
    backupKeep: number;
  };
  app: {
    offlineMode: boolean;
    syncInterval: number | undefined;
    autoBackup: boolean;
    restartCommand: string | undefined;
    stopCommand: string | undefined;
    startCommand: string | undefined;
  };
  remote: {
    enabled: boolean;
    url: string | undefined;
    username: string | undefined;
    password: string | undefined;
    token: string | undefined;
    syncInterval: number;
    autoSync: boolean;
    allowHttp: boolean;
    insecureTls: boolean;
    connectTimeoutMs: number;
    requestTimeoutMs: number;
    maxResponseBytes: number;
    /** Which keys came from the environment rather than the file. */
    fromEnv: string[];
  };
  sync: {
    include: string[] | undefined;
    exclude: string[];
    conflictPolicy: 'server-wins' | 'client-wins' | 'newest-wins';
    updatedAtColumn: string | undefined;
    batchSize: number;
    nodeId: string | undefined;
  };
  logging: { file: string; level: string | undefined };
  /** Non-fatal findings: unknown keys, deprecated spellings. */
  warnings: string[];
  /** The file as parsed, for tools that rewrite it while keeping unknown keys. */
  raw: RawConfig;
}

/** Describes where to look for the config and what environment to apply. */
export interface LoadConfigOptions {
  /** `--config` value. */
  configPath?: string | undefined;
  /** Environment (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Working directory for the lookup (default process.cwd()). */
  cwd?: string;
  /** Platform, for Windows-path detection (default process.platform). */
  platform?: NodeJS.Platform;
}

/** Returns the candidate config paths in lookup order, each with how it was found. */
export function configCandidates(options: LoadConfigOptions = {}): Array<{ path: string; source: EpetsyncConfig['source'] }> {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  if (options.configPath) return [{ path: resolve(cwd, options.configPath), source: 'flag' }];
  if (env.EPETSYNC_CONFIG) return [{ path: resolve(cwd, env.EPETSYNC_CONFIG), source: 'env' }];
  return [
    { path: join(cwd, 'config.json'), source: 'cwd' },
    { path: join(cwd, 'vet_desktop_app', 'config.json'), source: 'vet_desktop_app' },
  ];
}

/** Returns true when `p` is spelled as a Windows path (drive letter or UNC). */
export function isWindowsPath(p: string): boolean {
  return /^[A-Za-z]:[\\/]/.test(p) || p.startsWith('\\\\');
}

/** Finds, reads, validates and resolves the config; throws a {@link ConfigError} naming the key and the fix. */
export function loadConfig(options: LoadConfigOptions = {}): EpetsyncConfig {
  const candidates = configCandidates(options);
  const found = candidates.find((c) => fileKind(c.path) !== 'missing');
  if (!found) {
    const looked = candidates.map((c) => c.path).join(', ');
    throw new ConfigError('EPS_CONFIG_NOT_FOUND', `No config file found (looked for ${looked})`, {
      hint: 'Pass --config <path>, set EPETSYNC_CONFIG, or run epetsync from the folder that holds config.json.',
      details: { looked: candidates.map((c) => c.path) },
    });
  }
  if (fileKind(found.path) === 'directory') {
    throw new ConfigError('EPS_CONFIG_UNREADABLE', `Config path ${found.path} is a directory, not a file`, {
      hint: 'Point --config at the config.json file itself.',
    });
  }
  let text: string;
  try {
    text = readFileSync(found.path, 'utf8');
  } catch (cause) {
    throw new ConfigError('EPS_CONFIG_UNREADABLE', `Cannot read config file ${found.path}: ${(cause as NodeJS.ErrnoException).code ?? String(cause)}`, {
      hint: 'Check the file permissions; epetsync only needs to read it.',
      cause,
    });
  }
  return parseConfigText(text, found.path, found.source, options);
}

/** Validates config text already read from `file`; exported for tests and `init`. */
export function parseConfigText(
  text: string,
  file: string,
  source: EpetsyncConfig['source'],
  options: LoadConfigOptions = {},
): EpetsyncConfig {
  const env = options.env ?? process.env;
  const platform = options.platform ?? process.platform;
  const data = parseJson(text.replace(/^\uFEFF/, ''), file);
  const result = rawConfigSchema.safeParse(data, { reportInput: true });
  if (!result.success) {
    const problems = result.error.issues.map((issue) => describeIssue(issue, data));
    throw new ConfigError('EPS_CONFIG_INVALID', `Invalid config ${file}: ${problems.join('; ')}`, {
      hint: 'Correct the value in config.json (see docs/configuration.md) and run the command again.',
      details: { file, problems },
    });
  }
  const raw = result.data;
  const warnings = unknownKeyWarnings(data, '');
  const fromEnv: string[] = [];
  const envValue = (name: keyof typeof ENV_OVERRIDES): string | undefined => {
    const v = env[name];
    if (v === undefined || v === '') return undefined;
    fromEnv.push(ENV_OVERRIDES[name]);
    return v;
  };

  const dir = dirname(file);
  const resolvePath = (p: string): string => (isWindowsPath(p) ? p : isAbsolute(p) ? p : resolve(dir, p));
  const dbPath = envValue('EPETSYNC_DB') ?? raw.database.path;
  const remote = raw.remote_database ?? {};
  const url = envValue('EPETSYNC_URL') ?? emptyToUndefined(remote.url);
  const password = envValue('EPETSYNC_PASSWORD') ?? emptyToUndefined(remote.password);
  const token = envValue('EPETSYNC_TOKEN') ?? emptyToUndefined(remote.token);
  registerSecret(password);
  registerSecret(token);
  if (url !== undefined) {
    try {
      const parsed = new URL(url);
      if (parsed.password) registerSecret(decodeURIComponent(parsed.password));
    } catch {
      // Reported by the URL check in the client and in diagnose, with the fix.
    }
  }
  // When the environment wins, the file's copy is still a secret to keep out of logs.
  registerSecret(remote.password);
  registerSecret(remote.token);

  return {
    file,
    dir,
    source,
    database: {
      path: resolvePath(dbPath),
      backupDir: resolvePath(raw.database.backup_dir ?? 'backups'),
      realTimeSync: raw.database.real_time_sync ?? false,
      timezone: raw.database.timezone ?? 'UTC',
      busyTimeoutMs: raw.database.busy_timeout_ms ?? 5000,
      backupKeep: raw.database.backup_keep ?? 10,
    },
    app: {
      offlineMode: raw.app?.offline_mode ?? false,
      syncInterval: raw.app?.sync_interval,
      autoBackup: raw.app?.auto_backup ?? true,
      restartCommand: raw.app?.restart_command,
      stopCommand: raw.app?.stop_command,
      startCommand: raw.app?.start_command,
    },
    remote: {
      enabled: remote.enabled ?? false,
      url,
      username: envValue('EPETSYNC_USERNAME') ?? emptyToUndefined(remote.username),
      password,
      token,
      syncInterval: remote.sync_interval ?? 30,
      autoSync: remote.auto_sync ?? false,
      allowHttp: remote.allow_http ?? false,
      insecureTls: remote.insecure_tls ?? false,
      connectTimeoutMs: remote.connect_timeout_ms ?? 10_000,
      requestTimeoutMs: remote.request_timeout_ms ?? 60_000,
      maxResponseBytes: remote.max_response_bytes ?? 64 * 1024 * 1024,
      fromEnv,
    },
    sync: {
      include: raw.sync?.tables?.include,
      exclude: raw.sync?.tables?.exclude ?? [],
      conflictPolicy: raw.sync?.conflict_policy ?? 'server-wins',
      updatedAtColumn: raw.sync?.updated_at_column,
      batchSize: raw.sync?.batch_size ?? 500,
      nodeId: raw.sync?.node_id,
    },
    logging: {
      file: resolvePath(raw.logging?.file ?? join('logs', 'epetsync.log')),
      level: raw.logging?.level,
    },
    warnings: platform === 'win32' ? warnings : [...warnings, ...windowsPathWarnings(raw, dbPath)],
    raw,
  };
}

/** Returns `p` when it can be used on this machine; throws EPS_CONFIG_WINDOWS_PATH for a Windows path elsewhere. */
export function requireLocalPath(p: string, key: string, platform: NodeJS.Platform = process.platform): string {
  if (platform !== 'win32' && isWindowsPath(p)) {
    throw new ConfigError('EPS_CONFIG_WINDOWS_PATH', `${key} is a Windows path (${p}) but epetsync is running on ${platform}`, {
      hint: `Set ${key} to the file's path on this machine, or set EPETSYNC_DB for this run.`,
      details: { key, value: p },
    });
  }
  return p;
}

function windowsPathWarnings(raw: RawConfig, dbPath: string): string[] {
  const out: string[] = [];
  if (isWindowsPath(dbPath)) out.push(`database.path is a Windows path (${dbPath}); it can only be used on Windows`);
  if (raw.database.backup_dir && isWindowsPath(raw.database.backup_dir)) {
    out.push(`database.backup_dir is a Windows path (${raw.database.backup_dir}); it can only be used on Windows`);
  }
  return out;
}

function emptyToUndefined(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}

type FileKind = 'file' | 'directory' | 'missing';

function fileKind(path: string): FileKind {
  try {
    return statSync(path).isDirectory() ? 'directory' : 'file';
  } catch {
    return 'missing';
  }
}

/** Parses strict JSON, reporting the first error with its line and column. */
function parseJson(text: string, file: string): unknown {
  const errors: ParseError[] = [];
  const value: unknown = parseJsonc(text, errors, { allowTrailingComma: false, disallowComments: true, allowEmptyContent: false });
  if (errors.length > 0) {
    const first = errors[0]!;
    const { line, column } = lineColumn(text, first.offset);
    throw new ConfigError(
      'EPS_CONFIG_SYNTAX',
      `Config ${file} is not valid JSON at line ${line}, column ${column}: ${describeParseError(printParseErrorCode(first.error))}`,
      { hint: 'Fix the JSON at that position (a missing comma or quote is the usual cause); comments and trailing commas are not allowed.', details: { file, line, column } },
    );
  }
  return value;
}

function describeParseError(code: string): string {
  const words: Record<string, string> = {
    InvalidSymbol: 'unexpected character',
    InvalidNumberFormat: 'malformed number',
    PropertyNameExpected: 'expected a property name in double quotes',
    ValueExpected: 'expected a value',
    ColonExpected: 'expected ":"',
    CommaExpected: 'expected ","',
    CloseBraceExpected: 'expected "}"',
    CloseBracketExpected: 'expected "]"',
    EndOfFileExpected: 'unexpected text after the end of the JSON',
    InvalidCommentToken: 'comments are not allowed',
    UnexpectedEndOfComment: 'unterminated comment',
    UnexpectedEndOfString: 'unterminated string',
    UnexpectedEndOfNumber: 'unterminated number',
    InvalidUnicode: 'invalid unicode escape',
    InvalidEscapeCharacter: 'invalid escape character',
    InvalidCharacter: 'invalid character in string',
  };
  return words[code] ?? code;
}

function lineColumn(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const column = offset - before.lastIndexOf('\n');
  return { line, column };
}

function describeIssue(issue: z.core.$ZodIssue, data: unknown): string {
  const path = issue.path.map(String).join('.');
  // An unrecognized union/record path may point below a known key; name the nearest one we describe.
  let key = path;
  while (key !== '' && EXPECTATIONS[key] === undefined) key = key.includes('.') ? key.slice(0, key.lastIndexOf('.')) : '';
  const expectation = EXPECTATIONS[key] ?? issue.message;
  const value = valueAt(data, issue.path.map(String));
  const shown = isSecretPath(path) ? '[REDACTED]' : value.present ? JSON.stringify(value.value) : 'nothing (the key is missing)';
  return `${path === '' ? 'the file' : path} ${expectation}, got ${shown}`;
}

function isSecretPath(path: string): boolean {
  return /(^|\.)(password|token)$/.test(path);
}

function valueAt(data: unknown, path: string[]): { present: boolean; value?: unknown } {
  let cur: unknown = data;
  for (const part of path) {
    if (cur === null || typeof cur !== 'object' || !(part in (cur as object))) return { present: false };
    cur = (cur as Record<string, unknown>)[part];
  }
  return { present: true, value: cur };
}

function unknownKeyWarnings(data: unknown, path: string): string[] {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) return [];
  const known = knownKeys(path);
  if (known === null) return [];
  const out: string[] = [];
  for (const [key, value] of Object.entries(data)) {
    const full = path === '' ? key : `${path}.${key}`;
    if (!known.has(key)) out.push(`unknown config key ${full} is ignored`);
    else out.push(...unknownKeyWarnings(value, full));
  }
  return out;
}
