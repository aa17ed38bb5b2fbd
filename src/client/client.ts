/**
 * RemoteDatabaseClient: the one way epetsync talks to a sync server (docs/client.md).
 *
 * Honest by construction: no anonymous fallback, no made-up answers, every answer validated
 * against docs/protocol.md before use, every failure a typed error with a code and a remedy.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { pipeline, Readable } from 'node:stream';
import { createGzip, gzipSync } from 'node:zlib';
import type { z } from 'zod';
import type { EpetsyncConfig } from '../config/index.js';
import {
  AuthError,
  ConfigError,
  ConnectionError,
  EndpointNotFoundError,
  EpetsyncError,
  ProtocolError,
  ServerError,
  UsageError,
} from '../errors.js';
import type { Logger } from '../logger.js';
import { registerSecret, redactText } from '../redact.js';
import { connectionError, errorMessage, RequestRejectedError, responseError, transportCode } from './errors.js';
import { ndjsonLines, readCapped, Transport, type RawResponse } from './http.js';
import {
  bulkLoadResponseSchema,
  bulkStatusSchema,
  changePageSchema,
  describeIssues,
  discoverySchema,
  ID_PATTERN,
  isLegacyStub,
  PROTOCOL_VERSION,
  serverInfoSchema,
  snapshotBeginSchema,
  snapshotEndSchema,
  snapshotTableEndSchema,
  snapshotTableSchema,
  tokenResponseSchema,
  uploadResponseSchema,
  type BulkLoadResponse,
  type BulkStatus,
  type ChangePage,
  type Endpoints,
  type ServerInfo,
  type SnapshotEvent,
  type TokenResponse,
  type UploadBatch,
  type UploadResponse,
} from './protocol.js';
import { backoffDelay, DEFAULT_RETRY, parseRetryAfter, sleep, type RetryPolicy } from './retry.js';
import { readState, stateFilePath, updateState, type EndpointState, type TokenState } from './state.js';

/** Lists the API bases probed when the server has no discovery document, in order. */
export const KNOWN_BASES = ['/api/database/', '/vet_portal/api/database/', '/api/v1/database/'] as const;

/** Describes how to reach and authenticate with a sync server. */
export interface RemoteClientOptions {
  /** Server URL: an origin (`https://host`) or one that already contains the API path. */
  url: string;
  username?: string | undefined;
  password?: string | undefined;
  /** A bearer token from config or EPETSYNC_TOKEN; used before username + password. */
  token?: string | undefined;
  /** Sent as `X-Epetsync-Node` on every request. */
  nodeId: string;
  /** Where the endpoint and token are cached; omit to cache in memory only. */
  stateFile?: string | undefined;
  /** Allows http:// to a host that is not loopback (credentials travel in clear). */
  allowHttp?: boolean | undefined;
  /** Skips TLS certificate verification (self-signed test servers only); warns on every client. */
  insecureTls?: boolean | undefined;
  connectTimeoutMs?: number | undefined;
  /** Header timeout and body-idle timeout of every request (a long poll adds its wait). */
  requestTimeoutMs?: number | undefined;
  /** Largest JSON answer, and largest snapshot line, accepted (after decompression). */
  maxResponseBytes?: number | undefined;
  /** Retries after the first attempt, or a full policy. */
  retries?: number | Partial<RetryPolicy> | undefined;
  logger?: Logger | undefined;
  /** Aborts every request and wait of this client (monitor's stop signal). */
  signal?: AbortSignal | undefined;
  /** Receives warnings a person should see (insecure TLS, clear-text http). */
  onWarning?: ((message: string) => void) | undefined;
}

/** Describes one call's own options. */
export interface CallOptions {
  signal?: AbortSignal | undefined;
}

/** Describes a change-feed request. */
export interface ChangesOptions extends CallOptions {
  /** Changes per page, 1–5000 (server default 500). */
  limit?: number | undefined;
  /** Seconds to long-poll when no change is ready, 0–60. */
  wait?: number | undefined;
  tables?: string[] | undefined;
  /** Include this node's own uploads (left out by default): replaying into a database restored from a backup. */
  echo?: boolean | undefined;
}

/** Describes a bulk-load request. */
export interface BulkLoadOptions extends CallOptions {
  loadId: string;
  columns: string[];
}

/** Describes the endpoint in use and how it was found. */
export interface DiscoveryResult extends EndpointState {
  source: 'memory' | 'cache' | 'discovery' | 'probe';
}

/** Describes one HTTP call made through the retry loop. */
interface RequestSpec {
  /** A route of the discovered endpoint, or an absolute URL (discovery, login). */
  route?: keyof Endpoints;
  url?: URL;
  method: 'GET' | 'POST' | 'DELETE';
  query?: Record<string, string> | undefined;
  json?: unknown;
  accept?: string;
  auth: boolean;
  retry: boolean;
  headersTimeoutMs?: number | undefined;
  signal: AbortSignal;
}

const TOKEN_RENEW_MARGIN_MS = 60_000;
const ERROR_BODY_LIMIT = 1024 * 1024;
const GZIP_UPLOAD_OVER = 16 * 1024;

/** Talks to an epetsync sync server: discovery, auth, info, snapshot, change feed, upload, bulk load. */
export class RemoteDatabaseClient {
  /** The server URL with any embedded credentials removed. */
  readonly url: URL;
  readonly nodeId: string;
  private readonly username: string | undefined;
  private readonly password: string | undefined;
  private readonly configToken: string | undefined;
  private configTokenRejected = false;
  private token: { value: string; expiresAt: number | null; source: 'config' | 'login' | 'cache' } | undefined;
  private endpoint: EndpointState | undefined;
  // Single flight: concurrent calls (a long poll beside an upload) share one login and one discovery.
  private loggingIn: Promise<NonNullable<RemoteDatabaseClient['token']>> | undefined;
  private discovering: Promise<DiscoveryResult> | undefined;
  /** The token each 401 answer was given for, so a late 401 does not drop a token renewed meanwhile. */
  private readonly rejectedWith = new WeakMap<object, string>();
  private readonly transport: Transport;
  private readonly policy: RetryPolicy;
  private readonly maxResponseBytes: number;
  private readonly requestTimeoutMs: number;
  private readonly stateFile: string | undefined;
  private readonly logger: Logger | undefined;
  private readonly baseSignal: AbortSignal | undefined;

  constructor(options: RemoteClientOptions) {
    const { url, username, password } = checkUrl(options);
    this.url = url;
    this.username = options.username ?? username;
    this.password = options.password ?? password;
    this.configToken = options.token;
    registerSecret(this.password);
    registerSecret(this.configToken);
    if (!ID_PATTERN.test(options.nodeId)) {
      throw new ConfigError('EPS_CONFIG_INVALID', `Node id ${JSON.stringify(options.nodeId.slice(0, 140))} is not 1–128 characters of A-Z a-z 0-9 . _ : -`, {
        hint: 'Set sync.node_id in config.json to a short name such as "front-desk-1".',
      });
    }
    this.nodeId = options.nodeId;
    this.stateFile = options.stateFile;
    this.logger = options.logger;
    this.baseSignal = options.signal;
    this.maxResponseBytes = options.maxResponseBytes ?? 64 * 1024 * 1024;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 60_000;
    this.policy = typeof options.retries === 'number' ? { ...DEFAULT_RETRY, retries: options.retries } : { ...DEFAULT_RETRY, ...(options.retries ?? {}) };
    const insecureTls = options.insecureTls ?? false;
    this.transport = new Transport({
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      headersTimeoutMs: this.requestTimeoutMs,
      bodyTimeoutMs: this.requestTimeoutMs,
      insecureTls,
    });
    const warn = (message: string): void => {
      this.logger?.warn(message);
      options.onWarning?.(message);
    };
    if (insecureTls) warn(`TLS certificate verification is OFF for ${this.url.host} (--insecure): anyone on the network path can read and change the data. Use it only with a self-signed test server.`);
    if (this.url.protocol === 'http:' && !isLoopback(this.url.hostname)) {
      warn(`Connecting to ${this.url.host} over plain http (allow_http is set): passwords and tokens travel in clear.`);
    }
  }

  /** Creates a client from the loaded config: URL, credentials, timeouts, state file beside the config and the node id. */
  static fromConfig(
    config: EpetsyncConfig,
    options: { nodeId?: string; logger?: Logger; signal?: AbortSignal; onWarning?: (message: string) => void; insecureTls?: boolean; retries?: number | Partial<RetryPolicy> } = {},
  ): RemoteDatabaseClient {
    const remote = config.remote;
    if (remote.url === undefined) {
      throw new ConfigError('EPS_CONFIG_INVALID', 'remote_database.url is not set', {
        hint: 'Set remote_database.url in config.json (or EPETSYNC_URL) to the web app address, e.g. https://clinic.example.org.',
      });
    }
    const stateFile = stateFilePath(config.dir);
    const nodeId = options.nodeId ?? config.sync.nodeId ?? resolveNodeId(stateFile);
    return new RemoteDatabaseClient({
      url: remote.url,
      username: remote.username,
      password: remote.password,
      token: remote.token,
      nodeId,
      stateFile,
      allowHttp: remote.allowHttp,
      insecureTls: options.insecureTls ?? remote.insecureTls,
      connectTimeoutMs: remote.connectTimeoutMs,
      requestTimeoutMs: remote.requestTimeoutMs,
      maxResponseBytes: remote.maxResponseBytes,
      retries: options.retries,
      logger: options.logger,
      signal: options.signal,
      onWarning: options.onWarning,
    });
  }

  // ---------------------------------------------------------------- discovery

  /** Finds the sync API: cached endpoint, else the discovery document, else the known bases; caches what worked. */
  async discover(options: CallOptions & { force?: boolean } = {}): Promise<DiscoveryResult> {
    if (!options.force && this.endpoint) return { ...this.endpoint, source: 'memory' };
    if (!options.force && this.stateFile) {
      const cached = readState(this.stateFile).endpoint;
      if (cached && cached.url === this.url.href && isEndpointState(cached)) {
        this.endpoint = cached;
        return { ...cached, source: 'cache' };
      }
    }
    const signal = this.signalFor(options.signal);
    this.discovering ??= (async (): Promise<DiscoveryResult> => {
      const tried: string[] = [];
      const found = (await this.fromDiscoveryDocument(signal, tried)) ?? (await this.probeBases(signal, tried));
      this.endpoint = found.endpoint;
      this.saveEndpoint(found.endpoint);
      this.logger?.debug({ base: found.endpoint.base, source: found.source }, 'sync API discovered');
      return { ...found.endpoint, source: found.source };
    })().finally(() => {
      this.discovering = undefined;
    });
    return this.discovering;
  }

  private async fromDiscoveryDocument(signal: AbortSignal, tried: string[]): Promise<{ endpoint: EndpointState; source: 'discovery' } | undefined> {
    const url = new URL('/.well-known/epetsync', this.url);
    const answer = await this.probe(url, signal);
    tried.push(`${url.href} (${answer.status})`);
    if (answer.status !== 200 || answer.body === undefined) return undefined;
    if (isLegacyStub(answer.body)) throw legacyStubError(url);
    checkProtocolVersion(answer.body, url);
    const doc = discoverySchema.safeParse(answer.body);
    // Another web app may answer 200 for any path (a catch-all page): not a discovery document.
    if (!doc.success) return undefined;
    const endpoints = doc.data.endpoints;
    const basePath = doc.data.api_base ?? endpoints.sync.replace(/[^/]+\/?$/, '');
    return {
      source: 'discovery',
      endpoint: {
        url: this.url.href,
        base: new URL(basePath, this.url).href,
        endpoints: { ...endpoints },
        serverIdentity: { service: doc.data.service, protocol: doc.data.protocol, serverVersion: doc.data.server_version },
        discoveredAt: new Date().toISOString(),
      },
    };
  }

  private async probeBases(signal: AbortSignal, tried: string[]): Promise<{ endpoint: EndpointState; source: 'probe' }> {
    let weak: EndpointState | undefined;
    for (const base of candidateBases(this.url)) {
      for (const slash of [true, false]) {
        const syncPath = `${base}${slash ? 'sync/' : 'sync'}`;
        const url = new URL(syncPath, this.url);
        const answer = await this.probe(url, signal, this.tokenAtHand());
        tried.push(`${url.href} (${answer.status})`);
        const endpoint = (identity: EndpointState['serverIdentity'], endpoints?: Endpoints): EndpointState => ({
          url: this.url.href,
          base: new URL(base, this.url).href,
          endpoints: endpoints ?? deriveEndpoints(base, slash),
          serverIdentity: identity,
          discoveredAt: new Date().toISOString(),
        });
        if (answer.status === 200 && answer.body !== undefined) {
          if (isLegacyStub(answer.body)) throw legacyStubError(url);
          checkProtocolVersion(answer.body, url);
          const info = serverInfoSchema.safeParse(answer.body);
          if (info.success) {
            const d = info.data;
            return { source: 'probe', endpoint: endpoint({ service: d.service, protocol: d.protocol, serverVersion: d.server_version }, d.endpoints) };
          }
        }
        if ((answer.status === 401 || answer.status === 403) && answer.wire) {
          // An epetsync error body: the route exists and wants a token; info() confirms the identity later.
          return { source: 'probe', endpoint: endpoint(null) };
        }
        if ((answer.status === 401 || answer.status === 403) && weak === undefined) weak = endpoint(null);
      }
    }
    if (weak) return { source: 'probe', endpoint: weak };
    throw new EndpointNotFoundError('EPS_ENDPOINT_NOT_FOUND', `No epetsync sync API found at ${this.url.origin} (tried ${tried.length} URLs, e.g. ${tried.slice(0, 3).join(', ')})`, {
      hint: 'Check remote_database.url; the server must run `epetsync serve` or the web app must expose the sync API (GET /.well-known/epetsync).',
      details: { tried },
    });
  }

  /** Sends one unauthenticated-or-token probe; retries transport failures, 5xx, 408 and 429 like any read. */
  private async probe(url: URL, signal: AbortSignal, token?: string): Promise<{ status: number; body: unknown; wire: boolean }> {
    return this.withRetries(signal, true, async () => {
      const headers = this.headers('application/json', token);
      const res = await this.send({ url, method: 'GET', headers, signal });
      const body = await this.readJsonLoose(res, signal, res.status === 200 ? this.maxResponseBytes : ERROR_BODY_LIMIT);
      if (res.status >= 500 || res.status === 408 || res.status === 429) throw this.answerError(res, body);
      const wire = body !== null && typeof body === 'object' && 'error' in body && typeof (body as { error: unknown }).error === 'object';
      return { status: res.status, body, wire };
    });
  }

  // ---------------------------------------------------------------- auth

  /** Makes sure a usable token is at hand: configured, cached (until shortly before expiry) or obtained with username + password. */
  async authenticate(options: CallOptions & { force?: boolean } = {}): Promise<{ source: 'config' | 'login' | 'cache'; expiresAt: string | null }> {
    if (options.force) this.dropToken();
    const token = await this.ensureToken(this.signalFor(options.signal));
    return { source: token.source, expiresAt: token.expiresAt === null ? null : new Date(token.expiresAt).toISOString() };
  }

  /** Revokes the token obtained with username + password and forgets it (a configured token is left alone). */
  async logout(options: CallOptions = {}): Promise<void> {
    if (!this.token || this.token.source === 'config') return;
    const signal = this.signalFor(options.signal);
    const value = this.token.value;
    this.dropToken();
    const endpoint = await this.ensureEndpoint(signal);
    for (const path of tokenCandidates(endpoint)) {
      try {
        await this.request({ url: new URL(path, this.url), method: 'DELETE', auth: false, retry: true, signal }, async (res) => res.discard(), value);
        return;
      } catch (error) {
        if (error instanceof RequestRejectedError && error.status === 404) continue;
        throw error;
      }
    }
  }

  private tokenAtHand(): string | undefined {
    if (this.token && !expiringSoon(this.token.expiresAt)) return this.token.value;
    if (this.configToken && !this.configTokenRejected) return this.configToken;
    return undefined;
  }

  private async ensureToken(signal: AbortSignal): Promise<NonNullable<RemoteDatabaseClient['token']>> {
    if (this.token && !expiringSoon(this.token.expiresAt)) return this.token;
    if (this.configToken && !this.configTokenRejected) {
      this.token = { value: this.configToken, expiresAt: null, source: 'config' };
      return this.token;
    }
    if (this.stateFile && this.username) {
      const cached = readState(this.stateFile).token;
      if (
        cached && typeof cached.value === 'string' && cached.username === this.username && cached.server === this.url.origin &&
        !expiringSoon(cached.expiresAt === null ? null : Date.parse(cached.expiresAt))
      ) {
        registerSecret(cached.value);
        this.token = { value: cached.value, expiresAt: cached.expiresAt === null ? null : Date.parse(cached.expiresAt), source: 'cache' };
        return this.token;
      }
    }
    if (this.username && this.password) {
      this.loggingIn ??= this.login(signal).finally(() => {
        this.loggingIn = undefined;
      });
      return this.loggingIn;
    }
    throw new AuthError(
      'EPS_AUTH_MISSING',
      this.configTokenRejected ? 'The configured token was rejected and no username and password are configured to obtain a new one' : 'No credentials are configured for the sync server',
      {
        hint: 'Set remote_database.username and password in config.json (or EPETSYNC_PASSWORD), or EPETSYNC_TOKEN; epetsync never connects anonymously.',
      },
    );
  }

  private async login(signal: AbortSignal): Promise<NonNullable<RemoteDatabaseClient['token']>> {
    const endpoint = await this.ensureEndpoint(signal);
    const body = { username: this.username, password: this.password };
    let lastNotFound: EpetsyncError | undefined;
    const tried: string[] = [];
    for (const path of tokenCandidates(endpoint)) {
      const url = new URL(path, this.url);
      tried.push(url.href);
      let answer: TokenResponse;
      try {
        answer = await this.request({ url, method: 'POST', json: body, auth: false, retry: true, signal }, (res) => this.readJson(res, tokenResponseSchema, 'token answer'));
      } catch (error) {
        if (error instanceof RequestRejectedError && error.status === 404) {
          lastNotFound = error;
          continue;
        }
        throw error;
      }
      registerSecret(answer.token);
      const expiresAt = answer.expires_at ? Date.parse(answer.expires_at) : typeof answer.expires_in === 'number' ? Date.now() + answer.expires_in * 1000 : null;
      this.token = { value: answer.token, expiresAt, source: 'login' };
      this.configTokenRejected = this.configToken !== undefined;
      if (this.stateFile) {
        const saved: TokenState = {
          value: answer.token,
          expiresAt: expiresAt === null ? null : new Date(expiresAt).toISOString(),
          username: this.username!,
          server: this.url.origin,
        };
        updateState(this.stateFile, (s) => {
          s.token = saved;
        });
      }
      this.logger?.debug({ expiresAt: this.token.expiresAt }, 'obtained a sync token');
      return this.token;
    }
    throw new EndpointNotFoundError('EPS_ENDPOINT_NOT_FOUND', `No token endpoint found on ${this.url.origin}`, {
      hint: 'Check remote_database.url; the server must answer POST /api/auth/token/.',
      cause: lastNotFound,
      details: { tried },
    });
  }

  /** Forgets the token `value` was (default: the current one); a token renewed meanwhile is kept. */
  private dropToken(value: string | undefined = this.token?.value): void {
    if (value === undefined) return;
    if (value === this.configToken) this.configTokenRejected = true;
    if (this.stateFile && readState(this.stateFile).token?.value === value) {
      updateState(this.stateFile, (s) => {
        if (s.token?.value === value) delete s.token;
      });
    }
    if (this.token?.value === value) this.token = undefined;
  }

  private canRenew(): boolean {
    return this.username !== undefined && this.password !== undefined;
  }

  // ---------------------------------------------------------------- API

  /** Returns the server's identity, protocol, head cursor, synced tables, limits and this node's sync state. */
  async info(options: CallOptions = {}): Promise<ServerInfo> {
    const signal = this.signalFor(options.signal);
    const info = await this.request({ route: 'sync', method: 'GET', auth: true, retry: true, signal }, (res) => this.readJson(res, serverInfoSchema, 'server info'));
    const identity = { service: info.service, protocol: info.protocol, serverVersion: info.server_version };
    if (this.endpoint && JSON.stringify(this.endpoint.serverIdentity) !== JSON.stringify(identity)) {
      this.endpoint = { ...this.endpoint, serverIdentity: identity };
      this.saveEndpoint(this.endpoint);
    }
    return info;
  }

  /** Reads one page of the change feed after `cursor`, long-polling up to `wait` seconds when nothing is ready. */
  async changesSince(cursor: string, options: ChangesOptions = {}): Promise<ChangePage> {
    if (cursor === '') throw new UsageError('EPS_USAGE', 'changesSince needs a cursor (c1.0.0 is the start of the feed)');
    const query: Record<string, string> = { since: cursor };
    if (options.limit !== undefined) query.limit = String(options.limit);
    if (options.wait !== undefined) query.wait = String(options.wait);
    if (options.tables && options.tables.length > 0) query.tables = options.tables.join(',');
    if (options.echo) query.echo = '1';
    const signal = this.signalFor(options.signal);
    const waitMs = Math.max(0, options.wait ?? 0) * 1000;
    return this.request(
      { route: 'download', method: 'GET', query, auth: true, retry: true, signal, headersTimeoutMs: this.requestTimeoutMs + waitMs },
      (res) => this.readJson(res, changePageSchema, 'change feed page'),
    );
  }

  /** Uploads a batch of changes (one transaction on the server); retried safely because batches are idempotent by id. */
  async upload(batch: UploadBatch, options: CallOptions = {}): Promise<UploadResponse> {
    if (!ID_PATTERN.test(batch.batch_id)) {
      throw new UsageError('EPS_USAGE', `Batch id ${JSON.stringify(batch.batch_id.slice(0, 140))} is not 1–128 characters of A-Z a-z 0-9 . _ : -`);
    }
    const signal = this.signalFor(options.signal);
    const answer = await this.request({ route: 'upload', method: 'POST', json: batch, auth: true, retry: true, signal }, (res) =>
      this.readJson(res, uploadResponseSchema, 'upload answer'),
    );
    if (answer.batch_id !== batch.batch_id) {
      throw malformed(`The upload answer is for batch ${JSON.stringify(answer.batch_id.slice(0, 140))}, not ${batch.batch_id}`);
    }
    const seen = new Set<number>();
    for (const r of answer.results) {
      if (r.index >= batch.changes.length || seen.has(r.index)) throw malformed(`The upload answer names change ${r.index}, which the batch of ${batch.changes.length} does not have or names twice`);
      seen.add(r.index);
    }
    return answer;
  }

  /** Takes `count` fresh ids above `above` from a table's sequence (`POST ids/` under the API base), for moving a row whose offline id collided. */
  async allocateIds(table: string, count: number, above: string, options: CallOptions = {}): Promise<string[]> {
    const { z: zod } = await import('zod');
    const schema = zod.object({ table: zod.string(), ids: zod.array(zod.string().regex(/^-?\d{1,19}$/)) });
    const signal = this.signalFor(options.signal);
    const url = new URL('ids/', (await this.ensureEndpoint(signal)).base);
    const answer = await this.request({ url, method: 'POST', json: { table, count, above }, auth: true, retry: true, signal }, (res) => this.readJson(res, schema, 'ids answer'));
    if (answer.ids.length !== count) throw malformed(`The server handed out ${answer.ids.length} ids for ${table}, not the ${count} asked for`);
    return answer.ids;
  }

  /**
   * Streams a snapshot as events: `begin` (the cursor to pull the feed from afterwards), then per table
   * a `table` header, its `row`s and `table_end`, then `end`. Memory stays flat: lines are parsed as they
   * arrive. A connection cut mid-stream is resumed after the last key received; a stream that ends
   * without its `end` line is a ProtocolError.
   */
  async *snapshot(tables?: string[], options: CallOptions = {}): AsyncGenerator<SnapshotEvent> {
    const signal = this.signalFor(options.signal);
    const done = new Set<string>();
    let beginCursor: string | undefined;
    let current: { table: string; columns: string[]; primaryKey: string[]; keyIndex: number[]; rows: number; lastKey: unknown[] | undefined; resumed: boolean } | undefined;
    let totalRows = 0;
    let resumed = false;
    let resumes = 0;
    for (;;) {
      const query: Record<string, string> = {};
      if (tables && tables.length > 0) query.tables = tables.join(',');
      if (current?.lastKey) {
        query.after_table = current.table;
        query.after = JSON.stringify(current.lastKey);
      }
      const res = await this.request({ route: 'download', method: 'GET', query, accept: 'application/x-ndjson', auth: true, retry: true, signal }, async (r) => r);
      let sawBegin = false;
      let skipping: string | undefined;
      try {
        for await (const line of ndjsonLines(res.body, this.maxResponseBytes)) {
          const message = parseLine(line);
          switch (message.type) {
            case 'begin': {
              const begin = parseWith(snapshotBeginSchema, message, 'snapshot begin line');
              if (sawBegin) throw malformed('The snapshot stream has two begin lines');
              sawBegin = true;
              if (beginCursor === undefined) {
                beginCursor = begin.cursor;
                yield { type: 'begin', cursor: begin.cursor };
              }
              break;
            }
            case 'table': {
              if (!sawBegin) throw malformed('The snapshot stream starts without its begin line');
              const t = parseWith(snapshotTableSchema, message, 'snapshot table line');
              if (done.has(t.table)) {
                skipping = t.table;
                break;
              }
              if (current && current.table === t.table) {
                if (current.columns.join('\u0000') !== t.columns.join('\u0000')) throw malformed(`The resumed snapshot of ${t.table} lists different columns`);
                break;
              }
              if (current) throw malformed(`The snapshot starts table ${t.table} before ending ${current.table}`);
              current = {
                table: t.table,
                columns: t.columns,
                primaryKey: t.primary_key,
                keyIndex: t.primary_key.map((k) => t.columns.indexOf(k)),
                rows: 0,
                lastKey: undefined,
                resumed: false,
              };
              yield { type: 'table', table: t.table, columns: t.columns, primaryKey: t.primary_key };
              break;
            }
            case 'row': {
              if (skipping !== undefined) break;
              if (!current) throw malformed('The snapshot sends a row outside a table');
              const values = (message as { values?: unknown }).values;
              if (!Array.isArray(values) || values.length !== current.columns.length) {
                throw malformed(`A snapshot row of ${current.table} does not have its ${current.columns.length} values`);
              }
              const key = current.keyIndex.map((i) => values[i]);
              if (current.lastKey && !keyAfter(key, current.lastKey)) {
                throw malformed(`A snapshot row of ${current.table} repeats or goes back from the key ${JSON.stringify(current.lastKey).slice(0, 100)}: rows come once each, in primary-key order`);
              }
              current.rows += 1;
              totalRows += 1;
              current.lastKey = key;
              yield { type: 'row', table: current.table, values };
              break;
            }
            case 'table_end': {
              const end = parseWith(snapshotTableEndSchema, message, 'snapshot table_end line');
              if (skipping !== undefined && end.table === skipping) {
                skipping = undefined;
                break;
              }
              if (!current || current.table !== end.table) throw malformed(`The snapshot ends table ${end.table}, which it had not started`);
              if (!current.resumed && end.rows !== current.rows) throw malformed(`The snapshot says table ${end.table} had ${end.rows} rows but sent ${current.rows}`);
              done.add(current.table);
              const rows = current.rows;
              current = undefined;
              yield { type: 'table_end', table: end.table, rows };
              break;
            }
            case 'end': {
              const end = parseWith(snapshotEndSchema, message, 'snapshot end line');
              if (current) throw malformed(`The snapshot ended inside table ${current.table}`);
              if (!resumed && end.rows !== totalRows) throw malformed(`The snapshot says it sent ${end.rows} rows but sent ${totalRows}`);
              yield { type: 'end', tables: done.size, rows: totalRows, cursor: beginCursor ?? end.cursor };
              return;
            }
            default:
              // Line types from a later protocol revision are ignored, as the protocol's additive rule allows.
              break;
          }
        }
        throw malformed('The snapshot stream ended without its end line: it was cut off and must not be trusted', 'Run the command again; if it keeps happening, check for a proxy that limits response size or time.');
      } catch (error) {
        if (signal.aborted) throw interrupted(signal);
        const mapped = error instanceof EpetsyncError ? error : this.transportError(error, res.url, 'body', signal);
        if (!isRetryable(mapped) || resumes >= this.policy.retries) throw mapped;
        resumes += 1;
        resumed = true;
        if (current) current.resumed = true;
        const wait = backoffDelay(resumes - 1, this.policy);
        this.logger?.warn({ code: mapped.code, table: current?.table, after: current?.lastKey !== undefined }, `snapshot interrupted (${mapped.message}); resuming in ${wait} ms`);
        await this.pause(wait, signal);
      } finally {
        res.discard();
      }
    }
  }

  /** Streams rows (arrays in `columns` order, primary-key order) into one table as NDJSON (gzip unless the server is on this machine); one request is one transaction. */
  async bulkLoad(table: string, rows: AsyncIterable<unknown[]> | Iterable<unknown[]>, options: BulkLoadOptions): Promise<BulkLoadResponse> {
    if (!ID_PATTERN.test(options.loadId)) throw new UsageError('EPS_USAGE', `Load id ${JSON.stringify(options.loadId.slice(0, 140))} is not 1–128 characters of A-Z a-z 0-9 . _ : -`);
    const signal = this.signalFor(options.signal);
    let sourceError: unknown;
    const source = Readable.from(ndjsonChunks(options.columns, rows));
    source.on('error', (error) => {
      sourceError ??= error;
    });
    // pipeline, not pipe: a failing row source must end the request instead of leaving it hanging.
    const encoding = this.rowsEncoding();
    const body = encoding === 'gzip' ? pipeline(source, createGzip({ level: 1 }), () => {}) : source;
    // The body can be sent only once: no retry here. A failed request changed nothing; the caller resumes from bulkStatus().
    const answer = await this.request(
      {
        route: 'bulk',
        method: 'POST',
        query: { table, load_id: options.loadId },
        auth: true,
        retry: false,
        signal,
      },
      (res) => this.readJson(res, bulkLoadResponseSchema, 'bulk-load answer'),
      undefined,
      { body, contentType: 'application/x-ndjson', contentEncoding: encoding },
    ).catch((error: unknown) => {
      // The rows' own failure (a local read error) is the story, not the connection it broke.
      throw sourceError ?? error;
    });
    if (answer.table !== table || answer.load_id !== options.loadId) throw malformed(`The bulk-load answer is for ${answer.table}/${answer.load_id}, not ${table}/${options.loadId}`);
    return answer;
  }

  /** Returns how far a bulk load got (rows loaded, last primary key), so a crashed migrate resumes there. */
  async bulkStatus(table: string, loadId: string, options: CallOptions = {}): Promise<BulkStatus> {
    const signal = this.signalFor(options.signal);
    return this.request({ route: 'bulk', method: 'GET', query: { table, load_id: loadId }, auth: true, retry: true, signal }, (res) =>
      this.readJson(res, bulkStatusSchema, 'bulk-load status'),
    );
  }

  /** Calls a migrate-support route `migrate/<path>` under the API base (docs/protocol.md); JSON or streamed NDJSON rows; never retried when rows are streamed. */
  async migrateRequest<S extends z.ZodType>(
    path: string,
    schema: S,
    body: { json: unknown } | { columns: string[]; rows: AsyncIterable<unknown[]> | Iterable<unknown[]>; query: Record<string, string> },
    options: CallOptions = {},
  ): Promise<z.output<S>> {
    const signal = this.signalFor(options.signal);
    const url = new URL(`migrate/${path}`, (await this.ensureEndpoint(signal)).base);
    const what = `migrate ${path.replace(/\/$/, '')} answer`;
    if ('json' in body) return this.request({ url, method: 'POST', json: body.json, auth: true, retry: true, signal }, (res) => this.readJson(res, schema, what));
    let sourceError: unknown;
    const source = Readable.from(ndjsonChunks(body.columns, body.rows));
    source.on('error', (error) => {
      sourceError ??= error;
    });
    const encoding = this.rowsEncoding();
    const stream = encoding === 'gzip' ? pipeline(source, createGzip({ level: 1 }), () => {}) : source;
    return this.request({ url, method: 'POST', query: body.query, auth: true, retry: false, signal }, (res) => this.readJson(res, schema, what), undefined, {
      body: stream,
      contentType: 'application/x-ndjson',
      contentEncoding: encoding,
    }).catch((error: unknown) => {
      throw sourceError ?? error;
    });
  }

  /**
   * Returns how streamed rows are encoded: as they are to a server on this machine (loopback: gzip
   * would only spend CPU on both sides), gzip at level 1 elsewhere (most of the size gain of the
   * default level for a fraction of its CPU; docs/migrate.md has the figures).
   */
  private rowsEncoding(): 'gzip' | 'identity' {
    const host = this.url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
    const loopback = host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
    return loopback ? 'identity' : 'gzip';
  }

  /** Closes the connection pool; in-flight requests finish first. */
  async close(): Promise<void> {
    await this.transport.close();
  }

  // ---------------------------------------------------------------- plumbing

  /** Runs one call with retries, one re-authentication on 401 and one re-discovery on 404. */
  private async request<T>(
    spec: Omit<RequestSpec, 'json'> & { json?: unknown },
    consume: (res: RawResponse) => Promise<T>,
    explicitToken?: string,
    stream?: { body: Readable; contentType: string; contentEncoding: string },
  ): Promise<T> {
    let reauthenticated = false;
    let rediscovered = false;
    for (;;) {
      try {
        return await this.withRetries(spec.signal, spec.retry, () => this.attempt(spec, consume, explicitToken, stream));
      } catch (error) {
        const status = error instanceof EpetsyncError ? error.details?.status : undefined;
        if (error instanceof AuthError && status === 401 && spec.auth && !reauthenticated && stream === undefined) {
          this.dropToken(this.rejectedWith.get(error));
          if (this.canRenew()) {
            reauthenticated = true;
            this.logger?.info('token rejected; re-authenticating once');
            continue;
          }
          throw error;
        }
        if (error instanceof RequestRejectedError && status === 404 && spec.route !== undefined && !rediscovered && stream === undefined) {
          rediscovered = true;
          this.logger?.info({ route: spec.route }, 'route answered 404; discovering the API again');
          this.endpoint = undefined;
          await this.discover({ force: true, signal: spec.signal });
          continue;
        }
        if (error instanceof RequestRejectedError && status === 404 && spec.route !== undefined) {
          throw new EndpointNotFoundError('EPS_ENDPOINT_NOT_FOUND', `The server has no ${spec.route} route at ${String(error.details?.url ?? '')} even after discovering the API again`, {
            hint: 'The server may be an older or different version: run `epetsync diagnose` to see what it offers.',
            cause: error,
            details: { tried: [error.details?.url] },
          });
        }
        throw error;
      }
    }
  }

  private async attempt<T>(
    spec: Omit<RequestSpec, 'json'> & { json?: unknown },
    consume: (res: RawResponse) => Promise<T>,
    explicitToken: string | undefined,
    stream: { body: Readable; contentType: string; contentEncoding: string } | undefined,
  ): Promise<T> {
    const url = spec.url ?? (await this.routeUrl(spec.route!, spec.signal));
    if (spec.query) for (const [k, v] of Object.entries(spec.query)) url.searchParams.set(k, v);
    const token = spec.auth ? (await this.ensureToken(spec.signal)).value : explicitToken;
    const headers = this.headers(spec.accept ?? 'application/json', token);
    let body: string | Buffer | Readable | undefined;
    if (stream) {
      body = stream.body;
      headers['content-type'] = stream.contentType;
      headers['content-encoding'] = stream.contentEncoding;
    } else if (spec.json !== undefined) {
      const text = JSON.stringify(spec.json);
      headers['content-type'] = 'application/json';
      if (Buffer.byteLength(text) > GZIP_UPLOAD_OVER) {
        body = gzipSync(text);
        headers['content-encoding'] = 'gzip';
      } else {
        body = text;
      }
    }
    const res = await this.send({ url, method: spec.method, headers, body, signal: spec.signal, headersTimeoutMs: spec.headersTimeoutMs });
    if (res.status >= 200 && res.status < 300) {
      try {
        return await consume(res);
      } catch (error) {
        res.discard();
        if (error instanceof EpetsyncError) throw error;
        throw this.transportError(error, url, 'body', spec.signal);
      }
    }
    const errorBody = await this.readJsonLoose(res, spec.signal);
    const error = this.answerError(res, errorBody);
    if (token !== undefined) this.rejectedWith.set(error, token);
    throw error;
  }

  private async send(req: Parameters<Transport['send']>[0]): Promise<RawResponse> {
    try {
      const res = await this.transport.send(req);
      this.logger?.debug({ method: req.method, path: req.url.pathname, status: res.status, requestId: res.requestId }, 'sync API answer');
      return res;
    } catch (error) {
      if (error instanceof EpetsyncError) throw error;
      throw this.transportError(error, req.url, 'connect', req.signal);
    }
  }

  private async withRetries<T>(signal: AbortSignal, retry: boolean, run: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await run();
      } catch (error) {
        if (signal.aborted) throw interrupted(signal);
        if (!retry || attempt >= this.policy.retries || !isRetryable(error)) throw error;
        const asked = (error as EpetsyncError).details?.retry_after_ms;
        if (typeof asked === 'number' && asked > this.policy.maxRetryAfterMs) throw error;
        const wait = typeof asked === 'number' ? asked : backoffDelay(attempt, this.policy);
        this.logger?.warn({ code: (error as EpetsyncError).code, attempt: attempt + 1, waitMs: wait }, `${errorMessage(error)}; retrying in ${wait} ms`);
        await this.pause(wait, signal);
      }
    }
  }

  private async pause(ms: number, signal: AbortSignal): Promise<void> {
    try {
      await sleep(ms, signal);
    } catch {
      throw interrupted(signal);
    }
  }

  private answerError(res: RawResponse, body: unknown): EpetsyncError {
    if (res.status >= 300 && res.status < 400) {
      const location = redactText(String(res.headers.location ?? '(no Location header)')).slice(0, 300);
      // Not followed on purpose: a redirect could carry the bearer token to another host or to http.
      return new ProtocolError('EPS_PROTOCOL_MALFORMED', `The server redirected ${res.url.pathname} to ${location}; epetsync does not follow redirects`, {
        hint: 'Set remote_database.url to the address the server redirects to (often https:// instead of http://, or another host name).',
        details: { status: res.status, location, url: `${res.url.origin}${res.url.pathname}` },
      });
    }
    const error = responseError(res.status, body, res.requestId, res.url);
    const retryAfter = parseRetryAfter(res.headers['retry-after']);
    if (error.details) {
      error.details.url = redactText(`${res.url.origin}${res.url.pathname}`);
      if (retryAfter !== undefined) error.details.retry_after_ms = retryAfter;
    }
    if (retryAfter !== undefined && res.status === 429) error.message += ` (the server asks to wait ${Math.ceil(retryAfter / 1000)} s)`;
    return error;
  }

  private transportError(error: unknown, url: URL, phase: 'connect' | 'headers' | 'body', signal: AbortSignal | undefined): EpetsyncError {
    if (signal?.aborted) return interrupted(signal);
    const code = transportCode(error);
    // A connection cut mid-body fails in undici first (UND_ERR_SOCKET); a gzip stream that ends
    // early (Z_BUF_ERROR) therefore arrived as a complete answer: the server sent it truncated.
    if (code === 'Z_BUF_ERROR') return malformed('The server sent a gzip body that ends before the compressed data does (truncated)');
    if (code !== undefined && code.startsWith('Z_')) {
      return malformed(`The server sent a body that is not valid gzip (${code})`);
    }
    if (error instanceof SyntaxError) return malformed(`The server sent invalid JSON: ${error.message.slice(0, 200)}`);
    return connectionError(error, url, phase);
  }

  private headers(accept: string, token: string | undefined): Record<string, string> {
    const headers: Record<string, string> = {
      accept,
      'accept-encoding': 'gzip',
      'user-agent': 'epetsync-client',
      'x-epetsync-node': this.nodeId,
    };
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    return headers;
  }

  private async ensureEndpoint(signal: AbortSignal): Promise<EndpointState> {
    if (this.endpoint) return this.endpoint;
    await this.discover({ signal });
    return this.endpoint!;
  }

  private async routeUrl(route: keyof Endpoints, signal: AbortSignal): Promise<URL> {
    const endpoint = await this.ensureEndpoint(signal);
    const path = endpoint.endpoints[route];
    if (path === undefined) {
      throw new EndpointNotFoundError('EPS_ENDPOINT_NOT_FOUND', `The server does not offer the ${route} route`, {
        hint: 'The server is an older version: upgrade it to one that offers this route.',
        details: { tried: [endpoint.base] },
      });
    }
    return new URL(path, this.url);
  }

  private async readJson<S extends z.ZodType>(res: RawResponse, schema: S, what: string): Promise<z.output<S>> {
    const buffer = await readCapped(res.body, this.maxResponseBytes);
    let data: unknown;
    try {
      data = JSON.parse(buffer.toString('utf8'));
    } catch {
      throw malformed(`The server's ${what} is not valid JSON${res.requestId ? ` (request id ${res.requestId})` : ''}`, undefined, { request_id: res.requestId ?? null });
    }
    if (isLegacyStub(data)) throw legacyStubError(res.url);
    checkProtocolVersion(data, res.url);
    return parseWith(schema, data, what);
  }

  /** Reads a small body as JSON when it is JSON; anything else (HTML, cut-off text) is undefined. */
  private async readJsonLoose(res: RawResponse, signal: AbortSignal, limit = ERROR_BODY_LIMIT): Promise<unknown> {
    try {
      const buffer = await readCapped(res.body, limit);
      return JSON.parse(buffer.toString('utf8'));
    } catch (error) {
      res.discard();
      if (signal.aborted) throw interrupted(signal);
      if (error instanceof SyntaxError || (error instanceof ProtocolError && error.code === 'EPS_PROTOCOL_TOO_LARGE')) return undefined;
      if (error instanceof EpetsyncError) throw error;
      throw this.transportError(error, res.url, 'body', signal);
    }
  }

  private signalFor(signal: AbortSignal | undefined): AbortSignal {
    const signals = [this.baseSignal, signal].filter((s): s is AbortSignal => s !== undefined);
    if (signals.length === 0) return new AbortController().signal;
    if (signals.length === 1) return signals[0]!;
    return AbortSignal.any(signals);
  }

  private saveEndpoint(endpoint: EndpointState): void {
    if (!this.stateFile) return;
    updateState(this.stateFile, (s) => {
      s.endpoint = endpoint;
    });
  }
}

/** Returns the node id persisted in the state file, generating and saving one on first use. */
export function resolveNodeId(stateFile: string): string {
  const existing = readState(stateFile).nodeId;
  if (typeof existing === 'string' && ID_PATTERN.test(existing)) return existing;
  const host = hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 40) || 'node';
  const nodeId = `${host}-${randomBytes(4).toString('hex')}`;
  updateState(stateFile, (s) => {
    s.nodeId = nodeId;
  });
  return nodeId;
}

/** Returns the API bases to probe for a configured URL, the configured path first. */
export function candidateBases(url: URL): string[] {
  const out: string[] = [];
  let path = url.pathname;
  // A URL configured with a route (…/sync/, as the legacy config did) names its base.
  path = path.replace(/\/(sync|download|upload|bulk)\/?$/, '/');
  if (path !== '/' && path !== '') {
    const withSlash = path.endsWith('/') ? path : `${path}/`;
    if (/\/database\/$/.test(withSlash)) out.push(withSlash);
    else out.push(`${withSlash}api/database/`, withSlash);
  }
  out.push(...KNOWN_BASES);
  return [...new Set(out)];
}

function deriveEndpoints(base: string, slash: boolean): Endpoints {
  const route = (name: string): string => `${base}${name}${slash ? '/' : ''}`;
  return { sync: route('sync'), download: route('download'), upload: route('upload'), bulk: route('bulk') };
}

function tokenCandidates(endpoint: EndpointState): string[] {
  const out: string[] = [];
  if (endpoint.endpoints.token) out.push(endpoint.endpoints.token);
  const basePath = new URL(endpoint.base).pathname;
  const prefix = basePath.replace(/api\/(v1\/)?database\/?$/, '');
  out.push(`${prefix}api/auth/token/`, '/api/auth/token/', `${prefix}api-token-auth/`, '/api-token-auth/');
  return [...new Set(out)];
}

function isEndpointState(value: unknown): value is EndpointState {
  if (value === null || typeof value !== 'object') return false;
  const v = value as Partial<EndpointState>;
  return typeof v.base === 'string' && v.endpoints !== undefined && typeof v.endpoints.sync === 'string' && typeof v.endpoints.download === 'string' && typeof v.endpoints.upload === 'string';
}

function expiringSoon(expiresAt: number | null): boolean {
  if (expiresAt === null) return false;
  if (Number.isNaN(expiresAt)) return true;
  return Date.now() >= expiresAt - TOKEN_RENEW_MARGIN_MS;
}

/** Returns true when a failure may succeed on a second try: transport failures (not DNS/TLS), 5xx, 408 and 429. */
export function isRetryable(error: unknown): boolean {
  if (error instanceof ConnectionError) return error.code === 'EPS_CONNECT_REFUSED' || error.code === 'EPS_CONNECT_TIMEOUT' || error.code === 'EPS_CONNECT_RESET';
  if (error instanceof ServerError) return true;
  if (error instanceof RequestRejectedError) return error.status === 408 || error.status === 429;
  return false;
}

function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || h.startsWith('::ffff:127.');
  return false;
}

function checkUrl(options: RemoteClientOptions): { url: URL; username?: string; password?: string } {
  let url: URL;
  try {
    url = new URL(options.url);
  } catch {
    throw new ConfigError('EPS_CONFIG_INVALID', `remote_database.url ${JSON.stringify(redactText(options.url).slice(0, 200))} is not a valid URL`, {
      hint: 'Set remote_database.url to the server address, e.g. https://clinic.example.org.',
    });
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new ConfigError('EPS_CONFIG_INVALID', `remote_database.url must start with https:// (got ${url.protocol}//)`, {
      hint: 'Set remote_database.url to the server address, e.g. https://clinic.example.org.',
    });
  }
  if (url.protocol === 'http:' && !isLoopback(url.hostname) && !options.allowHttp) {
    throw new UsageError('EPS_INSECURE_URL', `Refusing plain http:// to ${url.host}: the password and token would travel in clear`, {
      hint: 'Use https:// (Render serves it by default), or set remote_database.allow_http to true for a trusted private network.',
      details: { host: url.host },
    });
  }
  const username = url.username ? decodeURIComponent(url.username) : undefined;
  const password = url.password ? decodeURIComponent(url.password) : undefined;
  registerSecret(password);
  url.username = '';
  url.password = '';
  url.hash = '';
  url.search = '';
  return { url, ...(username ? { username } : {}), ...(password ? { password } : {}) };
}

function checkProtocolVersion(body: unknown, url: URL): void {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return;
  const protocol = (body as { protocol?: unknown }).protocol;
  if (typeof protocol === 'number' && protocol !== PROTOCOL_VERSION) {
    throw new ProtocolError('EPS_PROTOCOL_VERSION', `The server at ${url.host} speaks sync protocol ${protocol}; this epetsync speaks protocol ${PROTOCOL_VERSION}`, {
      hint: protocol > PROTOCOL_VERSION ? 'Upgrade epetsync on this machine.' : 'Upgrade the server (epetsync serve) to the same version.',
      details: { server_protocol: protocol, client_protocol: PROTOCOL_VERSION },
    });
  }
}

function legacyStubError(url: URL): ProtocolError {
  return new ProtocolError('EPS_PROTOCOL_LEGACY_STUB', `The server at ${url.host} is the legacy Django sync stub (${url.pathname}): row sync is not available there`, {
    hint: 'Deploy the epetsync sync API on the web app (epetsync serve, or the Django app with the sync API), then run again.',
    details: { url: `${url.origin}${url.pathname}` },
  });
}

function malformed(message: string, hint?: string, details?: Record<string, unknown>): ProtocolError {
  return new ProtocolError('EPS_PROTOCOL_MALFORMED', message, {
    hint: hint ?? 'Check that client and server run compatible epetsync versions and that no proxy rewrites answers.',
    ...(details ? { details } : {}),
  });
}

function interrupted(signal: AbortSignal): EpetsyncError {
  return new EpetsyncError('EPS_INTERRUPTED', 'Stopped before the server answered', {
    hint: 'Run the command again; nothing half-done is kept (uploads are atomic and idempotent).',
    cause: signal.reason,
  });
}

/**
 * Returns false when a snapshot key repeats the previous one, or, for a single key sent as a JSON
 * number (smallint, integer), does not come after it. Other keys are strings ordered by the
 * server's type and collation, which the table line does not carry, so only a repeat is caught
 * here (the sync engine also refuses a key repeated anywhere in a table).
 */
function keyAfter(key: unknown[], previous: unknown[]): boolean {
  if (JSON.stringify(key) === JSON.stringify(previous)) return false;
  const [now, before] = [key[0], previous[0]];
  return key.length !== 1 || typeof now !== 'number' || typeof before !== 'number' || now > before;
}

function parseLine(line: string): { type?: unknown } & Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw malformed(`The snapshot stream has a line that is not JSON: ${JSON.stringify(line.slice(0, 80))}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw malformed('The snapshot stream has a line that is not a JSON object');
  return value as { type?: unknown } & Record<string, unknown>;
}

function parseWith<S extends z.ZodType>(schema: S, data: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(data);
  if (!parsed.success) throw malformed(`The server's ${what} does not match the protocol (${describeIssues(parsed.error)})`);
  return parsed.data;
}

/** Yields the NDJSON body of a bulk load in ~64 KiB pieces: the columns line, then one array per row. */
async function* ndjsonChunks(columns: string[], rows: AsyncIterable<unknown[]> | Iterable<unknown[]>): AsyncGenerator<Buffer> {
  let parts: string[] = [`${JSON.stringify({ columns })}\n`];
  let size = parts[0]!.length;
  for await (const row of rows) {
    const line = `${JSON.stringify(row)}\n`;
    parts.push(line);
    size += line.length;
    if (size >= 64 * 1024) {
      yield Buffer.from(parts.join(''), 'utf8');
      parts = [];
      size = 0;
    }
  }
  if (parts.length > 0) yield Buffer.from(parts.join(''), 'utf8');
}
