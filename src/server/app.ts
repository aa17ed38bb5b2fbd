import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Readable, pipeline } from 'node:stream';
import { constants as zlibConstants, createGzip, gzipSync } from 'node:zlib';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest, type preHandlerAsyncHookHandler } from 'fastify';
import { registerAuth, renderHttpError } from './auth/index.js';
import { bodyStream, DEFAULT_BODY_LIMITS, discardBody, limitedBody, type BodyLimits } from './body.js';
import { applyBulkLoad, bulkProgress } from './bulk.js';
import { checkCursorIssued, formatCursor, headCursor, parseCursor } from './cursor.js';
import { readFeed } from './feed.js';
import { HttpError, answerClientError, errorBody } from './http-error.js';
import type { ChangeSignal } from './notify.js';
import type { SyncSchema, TableInfo } from './schema.js';
import { streamSnapshot } from './snapshot.js';
import type { SqlDatabase } from './sql.js';
import { applyUpload, type ConflictPolicy, type UploadBatch } from './upload.js';
import { fromWire, normaliseTimestamp } from './values.js';

/** Names the protocol version this server speaks (docs/protocol.md). */
export const PROTOCOL_VERSION = 1;
/** Caps `wait` for a long-polling feed request, in seconds. */
export const MAX_WAIT_SECONDS = 60;
/** Caps the changes in one upload batch. */
export const MAX_BATCH_CHANGES = 5000;
/** Caps `limit` for one feed page. */
export const MAX_FEED_LIMIT = 5000;

/** Lists the API paths, as discovery and server info publish them. */
export const ENDPOINTS = {
  sync: '/api/database/sync/',
  download: '/api/database/download/',
  upload: '/api/database/upload/',
  bulk: '/api/database/bulk/',
  token: '/api/auth/token/',
} as const;

/** Returns this package's version (server_version on the wire). */
export function serverVersion(): string {
  cachedVersion ??= (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  return cachedVersion;
}
let cachedVersion: string | undefined;

/** Describes what the routes need: the database, its synced scope and the server's settings. */
export interface SyncAppOptions {
  db: SqlDatabase;
  /** The synced scope, or a function returning the current one (it changes when the web app migrates). */
  schema: SyncSchema | (() => SyncSchema);
  changes: ChangeSignal;
  conflictPolicy: ConflictPolicy;
  updatedAtColumn?: string | undefined;
  syncPermission: string;
  tokenTtlSeconds?: number | undefined;
  limits?: Partial<BodyLimits> | undefined;
  logger?: FastifyBaseLogger | undefined;
  /** Aborted when the server closes: long polls answer at once. */
  closing?: AbortSignal | undefined;
  /** Re-reads the sync scope now (after migrate creates tables); without it the scope changes only on the periodic refresh. */
  refreshSchema?: (() => Promise<boolean>) | undefined;
}

const NODE_ID = '^[A-Za-z0-9._:-]{1,128}$';
const NODE_HEADERS = {
  type: 'object',
  properties: { 'x-epetsync-node': { type: 'string', pattern: NODE_ID } },
} as const;
const NO_QUERY = { type: 'object', properties: {}, additionalProperties: false } as const;

const DOWNLOAD_QUERY = {
  type: 'object',
  additionalProperties: false,
  properties: {
    since: { type: 'string', maxLength: 64 },
    limit: { type: 'string', pattern: '^[0-9]{1,9}$' },
    wait: { type: 'string', pattern: '^[0-9]{1,9}(\\.[0-9]{1,3})?$' },
    tables: { type: 'string', maxLength: 65536 },
    after_table: { type: 'string', maxLength: 256 },
    after: { type: 'string', maxLength: 65536 },
    echo: { type: 'string', enum: ['0', '1'] },
  },
} as const;

const UPLOAD_BODY = {
  type: 'object',
  required: ['batch_id', 'changes'],
  properties: {
    batch_id: { type: 'string', pattern: NODE_ID },
    base_cursor: { type: 'string', maxLength: 64 },
    changes: {
      type: 'array',
      maxItems: MAX_BATCH_CHANGES,
      items: {
        type: 'object',
        required: ['table', 'op', 'pk'],
        properties: {
          table: { type: 'string', minLength: 1, maxLength: 256 },
          op: { type: 'string', enum: ['upsert', 'delete'] },
          pk: { type: 'object', minProperties: 1 },
          values: { type: ['object', 'null'] },
          base_cursor: { type: 'string', maxLength: 64 },
        },
      },
    },
  },
} as const;

const BULK_QUERY = {
  type: 'object',
  required: ['table', 'load_id'],
  additionalProperties: false,
  properties: {
    table: { type: 'string', minLength: 1, maxLength: 256 },
    load_id: { type: 'string', pattern: NODE_ID },
  },
} as const;

/** Builds the Fastify app serving protocol 1 (routes, limits, errors, request ids); does not listen. */
export async function buildSyncApp(options: SyncAppOptions): Promise<FastifyInstance> {
  const limits: BodyLimits = { ...DEFAULT_BODY_LIMITS, ...options.limits };
  const { db, changes } = options;
  const source = options.schema;
  const current = (): SyncSchema => (typeof source === 'function' ? source() : source);
  const app = Fastify({
    ...(options.logger ? { loggerInstance: options.logger } : { logger: false }),
    bodyLimit: limits.maxDecompressedBytes,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && /^[A-Za-z0-9._:-]{1,64}$/.test(given) ? given : `req-${randomBytes(6).toString('hex')}`;
    },
    // Strict validation: no type coercion, no silently dropped properties (a typo is a 400).
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: true } },
    // Requests arriving while the server closes get the wire error below, not Fastify's own 503 body.
    return503OnClosing: false,
    logController: new PlainRequestLog(),
    forceCloseConnections: 'idle',
    // Headers over 16 KiB (a huge query string) and malformed HTTP get the documented error shape too.
    clientErrorHandler: answerClientError,
  });

  app.addHook('onRequest', async (request, reply) => {
    void reply.header('x-request-id', String(request.id));
    if (options.closing?.aborted && request.url !== '/healthz') {
      void reply.header('connection', 'close');
      throw new HttpError('DATABASE_UNAVAILABLE', 'The server is shutting down; try again shortly.', undefined, 5);
    }
  });
  app.addHook('preParsing', async (request, _reply, payload) => limitedBody(payload, request.headers, limits));
  // NDJSON bodies (bulk load, staged rows) are handed over unread: the routes stream them into COPY
  // line by line, so a body is never held whole in memory (limitedBody still caps its size).
  app.addContentTypeParser('application/x-ndjson', (_req, payload, done) => done(null, payload));
  app.addHook('onSend', async (request, reply, payload) => compress(request, reply, payload));
  app.setErrorHandler((error, request, reply) => renderHttpError(nameUnknownProperties(error), request, reply));
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).type('application/json; charset=utf-8').send(errorBody('NOT_FOUND', `No route ${request.method} ${request.url.split('?')[0]!.slice(0, 200)}`, String(request.id)));
  });

  await registerAuth(app, { db, syncPermission: options.syncPermission, ...(options.tokenTtlSeconds ? { tokenTtlSeconds: options.tokenTtlSeconds } : {}) });
  const requireSync: preHandlerAsyncHookHandler = async function (request, reply) {
    await app.requireSync(request, reply);
  };

  const discovery = () => ({
    service: 'epetsync',
    protocol: PROTOCOL_VERSION,
    server_version: serverVersion(),
    api_base: '/api/database/',
    endpoints: ENDPOINTS,
  });

  app.get('/.well-known/epetsync', { schema: { querystring: NO_QUERY } }, async () => discovery());
  app.get('/healthz', { schema: { querystring: NO_QUERY } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { querystring: NO_QUERY } }, async (request, reply) => {
    try {
      await withTimeout(db.query('SELECT 1'), 3000);
      return { status: 'ready' };
    } catch (error) {
      request.log.warn({ err: error }, 'readiness check failed');
      void reply.header('retry-after', '5');
      return reply.code(503).send({ status: 'unavailable' });
    }
  });

  app.get('/api/database/sync/', { schema: { querystring: NO_QUERY, headers: NODE_HEADERS }, preHandler: requireSync }, async (request) => {
    const schema = current();
    const node = nodeOf(request);
    const head = await headCursor(db);
    let client: Record<string, unknown> | null = null;
    if (node) {
      const { rows } = await db.query<{ node_id: string; last_push_at: string | null; last_pull_at: string | null; last_pull_cursor: string | null }>(
        `SELECT node_id, last_push_at::text AS last_push_at, last_pull_at::text AS last_pull_at, last_pull_cursor FROM epetsync.nodes WHERE node_id = $1::text`,
        [node],
      );
      const r = rows[0];
      if (r) {
        client = {
          node_id: r.node_id,
          last_push_at: r.last_push_at && normaliseTimestamp(r.last_push_at, true),
          last_pull_at: r.last_pull_at && normaliseTimestamp(r.last_pull_at, true),
          last_pull_cursor: r.last_pull_cursor,
        };
      }
    }
    return {
      ...discovery(),
      db_type: 'postgresql',
      engine: db.kind,
      server_time: new Date().toISOString(),
      head_cursor: formatCursor(head),
      conflict_policy: options.conflictPolicy,
      ...(options.updatedAtColumn ? { updated_at_column: options.updatedAtColumn } : {}),
      tables: schema.tables.map((t) => ({
        name: t.name,
        primary_key: t.primaryKey,
        columns: t.columns.map((c) => ({ name: c.name, type: c.type, nullable: c.nullable, default: c.default, max_length: c.maxLength, identity: c.identity, generated: c.generated })),
      })),
      unsynced_tables: schema.unsynced,
      limits: { max_body_bytes: limits.maxBodyBytes, max_decompressed_bytes: limits.maxDecompressedBytes, max_batch_changes: MAX_BATCH_CHANGES, max_wait_seconds: MAX_WAIT_SECONDS },
      client,
    };
  });

  app.get('/api/database/download/', { schema: { querystring: DOWNLOAD_QUERY, headers: NODE_HEADERS }, preHandler: requireSync }, async (request, reply) => {
    const schema = current();
    const q = request.query as { since?: string; limit?: string; wait?: string; tables?: string; after_table?: string; after?: string; echo?: string };
    const tables = q.tables === undefined ? undefined : [...new Set(q.tables.split(',').filter((n) => n !== ''))].map((n) => requireTable(schema, n));
    if (q.since === undefined) {
      if (q.limit !== undefined || q.wait !== undefined) {
        throw new HttpError('BAD_REQUEST', 'limit and wait belong to the change feed: add since=<cursor>', { problems: [{ path: 'querystring', message: 'limit/wait need since' }] });
      }
      const afterTable = q.after_table === undefined ? undefined : requireTable(schema, q.after_table);
      if ((afterTable === undefined) !== (q.after === undefined)) {
        throw new HttpError('BAD_REQUEST', 'after_table and after go together', { problems: [{ path: 'querystring', message: 'after_table and after go together' }] });
      }
      const list = tables ?? schema.tables;
      if (afterTable && !list.includes(afterTable)) throw new HttpError('BAD_REQUEST', `after_table "${afterTable.name}" is not among the tables requested`, { problems: [{ path: 'querystring/after_table', message: 'is not among the tables' }] });
      const after = afterTable && q.after !== undefined ? parseAfter(afterTable, q.after) : undefined;
      const controller = new AbortController();
      // The response's 'close' before it finished means the client went away (the request's own
      // 'close' fires as soon as its empty body has been read).
      reply.raw.on('close', () => {
        if (!reply.raw.writableFinished) controller.abort();
      });
      const node = nodeOf(request);
      const onComplete = node ? (cursor: string) => recordPull(db, node, cursor) : undefined;
      const stream = Readable.from(streamSnapshot(db, { tables: list, afterTable, after, signal: controller.signal, onComplete }), { objectMode: false });
      stream.on('error', (error) => request.log.error({ err: error }, 'snapshot stream failed; the answer was cut off'));
      return reply.type('application/x-ndjson; charset=utf-8').send(stream);
    }
    if (q.after_table !== undefined || q.after !== undefined) {
      throw new HttpError('BAD_REQUEST', 'after_table and after belong to snapshot mode, not to since=', { problems: [{ path: 'querystring', message: 'after needs snapshot mode' }] });
    }
    const since = parseCursor(q.since, 'since');
    await checkCursorIssued(db, since, q.since, 'since');
    const limit = q.limit === undefined ? 500 : Number(q.limit);
    if (limit < 1 || limit > MAX_FEED_LIMIT) throw new HttpError('BAD_REQUEST', `limit must be 1–${MAX_FEED_LIMIT}, got ${limit}`, { problems: [{ path: 'querystring/limit', message: `must be 1–${MAX_FEED_LIMIT}` }] });
    const wait = q.wait === undefined ? 0 : Number(q.wait);
    if (wait > MAX_WAIT_SECONDS) throw new HttpError('BAD_REQUEST', `wait must be 0–${MAX_WAIT_SECONDS} seconds, got ${wait}`, { problems: [{ path: 'querystring/wait', message: `must be 0–${MAX_WAIT_SECONDS}` }] });
    const node = nodeOf(request);
    // echo=1: the node's own uploads too (a desktop restored from a backup takes back what it sent since).
    const query = { since, limit, tables: tables?.map((t) => t.name), node: q.echo === '1' ? undefined : node };
    // Taken before each read: a commit notified while the read runs must not wait for the tick.
    let mark = changes.mark();
    let page = await readFeed(db, schema, query);
    if (page.entries === 0 && wait > 0) {
      const controller = new AbortController();
      const onClose = (): void => controller.abort();
      reply.raw.on('close', onClose);
      options.closing?.addEventListener('abort', onClose, { once: true });
      const deadline = Date.now() + wait * 1000;
      try {
        // A notification wakes the poll at once; the short tick covers a horizon that moves when a
        // transaction without captured writes ends (no notification for that).
        while (!controller.signal.aborted && Date.now() < deadline) {
          await changes.next(Math.min(500, deadline - Date.now()), controller.signal, mark);
          if (controller.signal.aborted) break;
          mark = changes.mark();
          page = await readFeed(db, schema, query);
          if (page.entries > 0) break;
        }
      } finally {
        reply.raw.off('close', onClose);
        options.closing?.removeEventListener('abort', onClose);
      }
    }
    if (node) await recordPull(db, node, page.cursor);
    const { entries: _, ...body } = page;
    return body;
  });

  app.post('/api/database/upload/', {
    schema: { querystring: NO_QUERY, body: UPLOAD_BODY, headers: { ...NODE_HEADERS, required: ['x-epetsync-node'] } },
    preValidation: requireJson,
    preHandler: requireSync,
  }, async (request) => {
    const batch = request.body as UploadBatch;
    const result = await applyUpload(db, current(), batch, { node: nodeOf(request)!, policy: options.conflictPolicy, updatedAtColumn: options.updatedAtColumn });
    request.log.info({ batch_id: batch.batch_id, applied: result.applied, conflicts: result.conflicts, replayed: result.replayed }, 'upload batch');
    return result;
  });

  app.get('/api/database/bulk/', { schema: { querystring: BULK_QUERY, headers: NODE_HEADERS }, preHandler: requireSync }, async (request) => {
    const q = request.query as { table: string; load_id: string };
    return bulkProgress(db, current(), q.table, q.load_id);
  });

  app.post('/api/database/bulk/', {
    schema: { querystring: BULK_QUERY, headers: NODE_HEADERS },
    preValidation: async (request) => {
      if (!isType(request, 'application/x-ndjson')) {
        throw new HttpError('UNSUPPORTED_MEDIA_TYPE', 'The bulk endpoint takes application/x-ndjson.', { content_type: String(request.headers['content-type'] ?? '').slice(0, 80) });
      }
    },
    preHandler: requireSync,
    onResponse: async (request) => discardBody(request.body),
  }, async (request) => {
    const q = request.query as { table: string; load_id: string };
    const result = await applyBulkLoad(db, current(), q.table, q.load_id, bodyStream(request.body));
    request.log.info({ table: result.table, load_id: result.load_id, rows: result.rows, total_rows: result.total_rows }, 'bulk load chunk');
    return result;
  });

  await app.register((await import('./migrate-routes.js')).migrateRoutes, { db, schema: current, requireSync, refreshSchema: options.refreshSchema });

  (await import('./ids.js')).registerIdRoutes(app, { db, schema: current });
  return app;
}

/**
 * Logs each request with plain fields: the process logger scrubs objects before pino's
 * serializers run, which would reduce Fastify's own req/res objects to {}.
 */
class PlainRequestLog extends LogController {
  override incomingRequest(request: FastifyRequest): void {
    request.log.info({ method: request.method, url: request.url.slice(0, 500), ip: request.ip }, 'incoming request');
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const fields = { method: request.method, url: request.url.slice(0, 500), statusCode: reply.statusCode, ms: Math.round(reply.elapsedTime), account: request.account?.username };
    if (error) reply.log.error({ ...fields, err: error }, 'request errored');
    else reply.log.info(fields, 'request completed');
  }
}

/** Makes Ajv's "must NOT have additional properties" name the property (a parameter name, never a value). */
function nameUnknownProperties(error: unknown): unknown {
  const validation = (error as { validation?: Array<{ keyword?: string; message?: string; params?: Record<string, unknown> }> }).validation;
  if (Array.isArray(validation)) {
    for (const v of validation) {
      const extra = v.params?.additionalProperty;
      if (v.keyword === 'additionalProperties' && typeof extra === 'string') v.message = `must NOT have the unknown property "${extra.slice(0, 64)}"`;
    }
  }
  return error;
}

function requireTable(schema: SyncSchema, name: string): TableInfo {
  const t = schema.byName.get(name);
  if (!t) throw new HttpError('UNKNOWN_TABLE', `table "${name.slice(0, 100)}" is not synced`, { table: name });
  return t;
}

function parseAfter(table: TableInfo, text: string): Array<string | null> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new HttpError('BAD_REQUEST', 'after must be a JSON array of primary-key values', { problems: [{ path: 'querystring/after', message: 'is not JSON' }] });
  }
  if (!Array.isArray(value) || value.length !== table.primaryKey.length) {
    throw new HttpError('BAD_REQUEST', `after must be a JSON array of ${table.primaryKey.length} primary-key value(s) of "${table.name}"`, { problems: [{ path: 'querystring/after', message: 'wrong shape' }] });
  }
  return table.primaryKey.map((name, k) => {
    const col = table.columnsByName.get(name)!;
    const d = fromWire(col.kind, value[k]);
    if (!d.ok || d.param === null) throw new HttpError('INVALID_VALUE', `after[${k}] (${table.name}.${name}): ${d.ok ? 'may not be null' : d.reason}`, { table: table.name, column: name, index: k });
    return d.param;
  });
}

async function recordPull(db: SqlDatabase, node: string, cursor: string): Promise<void> {
  await db.query(
    `INSERT INTO epetsync.nodes (node_id, last_pull_at, last_pull_cursor) VALUES ($1::text, now(), $2::text)
     ON CONFLICT (node_id) DO UPDATE SET last_pull_at = now(), last_pull_cursor = EXCLUDED.last_pull_cursor`,
    [node, cursor],
  );
}

function nodeOf(request: FastifyRequest): string | undefined {
  const node = request.headers['x-epetsync-node'];
  return typeof node === 'string' ? node : undefined;
}

function isType(request: FastifyRequest, type: string): boolean {
  const given = String(request.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  return given === type;
}

async function requireJson(request: FastifyRequest): Promise<void> {
  if (!isType(request, 'application/json')) {
    throw new HttpError('UNSUPPORTED_MEDIA_TYPE', 'This route takes application/json.', { content_type: String(request.headers['content-type'] ?? '').slice(0, 80) });
  }
}

function acceptsGzip(request: FastifyRequest): boolean {
  const header = String(request.headers['accept-encoding'] ?? '');
  return /(^|,)\s*(gzip|\*)\s*(;\s*q=(0?\.\d*[1-9]|1(\.0*)?))?\s*(,|$)/i.test(header);
}

async function compress(request: FastifyRequest, reply: FastifyReply, payload: unknown): Promise<unknown> {
  if (payload === null || payload === undefined || reply.getHeader('content-encoding')) return payload;
  const isStream = payload instanceof Readable;
  if (!isStream && typeof payload !== 'string' && !Buffer.isBuffer(payload)) return payload;
  void reply.header('vary', 'accept-encoding');
  if (!acceptsGzip(request)) return payload;
  if (isStream) {
    void reply.header('content-encoding', 'gzip');
    reply.removeHeader('content-length');
    // Sync-flush per chunk (one keyset page) so a slow download still delivers whole pages as it goes.
    const gzip = createGzip({ flush: zlibConstants.Z_SYNC_FLUSH });
    return pipeline(payload, gzip, () => {});
  }
  const bytes = typeof payload === 'string' ? Buffer.from(payload) : (payload as Buffer);
  if (bytes.length < 1024) return payload;
  void reply.header('content-encoding', 'gzip');
  reply.removeHeader('content-length');
  return gzipSync(bytes);
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]);
}
