import { hostname } from 'node:os';
import { loadConfig, type EpetsyncConfig } from '../config/index.js';
import { RemoteDatabaseClient, readState, stateFilePath } from '../client/index.js';
import { openDatabase, type SqliteDatabase } from '../db/index.js';
import type { Logger } from '../logger.js';

/** Describes how a diagnose run is set up. */
export interface DiagnoseOptions {
  /** `--config` value, if given. */
  configPath?: string | undefined;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** `--deep`: integrity_check instead of quick_check, checksums instead of row counts. */
  deep?: boolean;
  logger?: Logger | undefined;
  signal?: AbortSignal | undefined;
  /** Clock, for tests. */
  now?: () => Date;
  /** Platform, for the desktop-app and permission checks. */
  platform?: NodeJS.Platform;
}

/**
 * Holds what the checks share during one pass: the config, one read-only database handle and one
 * remote client (without the state file, so that diagnosing never rewrites the cached endpoint or
 * token), plus results earlier checks leave for later ones. {@link reset} drops all of it after a fix.
 */
export class DiagnoseContext {
  readonly options: DiagnoseOptions;
  readonly deep: boolean;
  /** Facts one check leaves for another (discovery result, server info, login). */
  readonly memo = new Map<string, unknown>();
  private loaded: { config?: EpetsyncConfig; error?: unknown } | undefined;
  private handle: SqliteDatabase | undefined;
  private remote: RemoteDatabaseClient | undefined;

  constructor(options: DiagnoseOptions) {
    this.options = options;
    this.deep = options.deep ?? false;
  }

  /** Returns the current time. */
  now(): Date {
    return this.options.now?.() ?? new Date();
  }

  /** Returns the loaded config; throws the ConfigError found while loading it. */
  config(): EpetsyncConfig {
    this.loaded ??= (() => {
      try {
        return { config: loadConfig({ configPath: this.options.configPath, env: this.options.env, cwd: this.options.cwd }) };
      } catch (error) {
        return { error };
      }
    })();
    if (this.loaded.error !== undefined) throw this.loaded.error;
    return this.loaded.config!;
  }

  /** Returns the config, or undefined when it did not load. */
  maybeConfig(): EpetsyncConfig | undefined {
    try {
      return this.config();
    } catch {
      return undefined;
    }
  }

  /** Returns the desktop database opened read-only (once per pass). */
  db(): SqliteDatabase {
    const config = this.config();
    this.handle ??= openDatabase(config.database.path, { mode: 'read', busyTimeoutMs: config.database.busyTimeoutMs });
    return this.handle;
  }

  /** Returns a client for the configured server that keeps nothing in the state file; few retries, so a dead server is named quickly. */
  client(): RemoteDatabaseClient {
    if (!this.remote) {
      const config = this.config();
      let nodeId = config.sync.nodeId;
      if (nodeId === undefined) {
        try {
          nodeId = readState(stateFilePath(config.dir)).nodeId;
        } catch {
          nodeId = undefined;
        }
      }
      const remote = config.remote;
      this.remote = new RemoteDatabaseClient({
        url: remote.url ?? '',
        username: remote.username,
        password: remote.password,
        token: remote.token,
        nodeId: nodeId ?? `${hostname().replace(/[^A-Za-z0-9._:-]/g, '-').slice(0, 100) || 'host'}-diagnose`,
        allowHttp: remote.allowHttp,
        insecureTls: remote.insecureTls,
        connectTimeoutMs: Math.min(remote.connectTimeoutMs, 5000),
        requestTimeoutMs: Math.min(remote.requestTimeoutMs, 15_000),
        maxResponseBytes: remote.maxResponseBytes,
        retries: { retries: 1, baseDelayMs: 100, maxDelayMs: 200 },
        logger: this.options.logger,
        signal: this.options.signal,
      });
    }
    return this.remote;
  }

  /** Closes the database and the client and forgets everything, so the next pass sees the repaired state. */
  async reset(): Promise<void> {
    this.handle?.close();
    this.handle = undefined;
    const remote = this.remote;
    this.remote = undefined;
    await remote?.close();
    this.loaded = undefined;
    this.memo.clear();
  }
}
