/**
 * The state file `.epetsync/state.json` beside the config: node id, discovered endpoint, cached
 * token. Other modules add their own top-level keys; every write keeps the keys it does not know.
 * Written atomically (temp file + rename) with mode 0600 because it holds a bearer token.
 */
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { ConfigError } from '../errors.js';

/** Describes the endpoint found by discovery, cached so the next run skips probing. */
export interface EndpointState {
  /** The configured URL this was discovered for; a different URL invalidates the cache. */
  url: string;
  /** Absolute URL of the API base, e.g. `https://host/api/database/`. */
  base: string;
  /** Absolute paths of each route on the server. */
  endpoints: { sync: string; download: string; upload: string; bulk?: string | undefined; token?: string | undefined };
  serverIdentity: { service: string; protocol: number; serverVersion: string } | null;
  discoveredAt: string;
}

/** Describes a token obtained with username + password. */
export interface TokenState {
  value: string;
  /** ISO time the server said it expires, or null when it did not say. */
  expiresAt: string | null;
  username: string;
  /** Origin of the server that issued it. */
  server: string;
}

/** Describes the whole state file; unknown keys belong to other modules and are kept. */
export interface StateFile {
  nodeId?: string;
  endpoint?: EndpointState;
  token?: TokenState;
  [key: string]: unknown;
}

/** Returns the state file path for a config folder: `<dir>/.epetsync/state.json`. */
export function stateFilePath(configDir: string): string {
  return join(configDir, '.epetsync', 'state.json');
}

/** Reads the state file; a missing file is an empty state, an unreadable one a ConfigError naming the fix. */
export function readState(file: string): StateFile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new ConfigError('EPS_CONFIG_UNREADABLE', `Cannot read state file ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, {
      hint: 'Check the permissions of the .epetsync folder beside config.json.',
      cause: error,
    });
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new ConfigError('EPS_CONFIG_INVALID', `State file ${file} is not valid JSON`, {
      hint: 'Move the file aside; epetsync recreates it (node id, endpoint, token) on the next run.',
      cause: error,
      details: { file },
    });
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError('EPS_CONFIG_INVALID', `State file ${file} does not hold a JSON object`, {
      hint: 'Move the file aside; epetsync recreates it on the next run.',
      details: { file },
    });
  }
  return data as StateFile;
}

/** Writes `state` atomically with mode 0600 (folder 0700). */
export function writeState(file: string, state: StateFile): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    writeFileSync(temp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
    // writeFileSync's mode is masked by umask and ignored for an existing file.
    chmodSync(temp, 0o600);
    renameSync(temp, file);
  } catch (error) {
    try {
      unlinkSync(temp);
    } catch {
      // The temp file may never have been created.
    }
    throw new ConfigError('EPS_CONFIG_UNREADABLE', `Cannot write state file ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, {
      hint: 'Check that the folder beside config.json is writable by this user.',
      cause: error,
    });
  }
}

/** Reads the state, lets `mutate` change it, writes it back keeping unknown keys; returns the new state. */
export function updateState(file: string, mutate: (state: StateFile) => void): StateFile {
  const state = readState(file);
  mutate(state);
  writeState(file, state);
  return state;
}
