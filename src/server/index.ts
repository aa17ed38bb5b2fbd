import type { AddressInfo } from 'node:net';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { EpetsyncError } from '../errors.js';
import { installAuthSchema } from './auth/index.js';
import { buildSyncApp } from './app.js';
import type { BodyLimits } from './body.js';
import { installChangeCapture, isInstalled } from './install.js';
import { listenForChanges } from './notify.js';
import { introspectSchema, type SyncSchema } from './schema.js';
import { openSqlDatabase, type SqlDatabase } from './sql.js';
import type { ConflictPolicy } from './upload.js';

export { buildSyncApp, ENDPOINTS, PROTOCOL_VERSION, MAX_WAIT_SECONDS, MAX_BATCH_CHANGES } from './app.js';
export { DEFAULT_BODY_LIMITS, type BodyLimits } from './body.js';
export { formatCursor, parseCursor, type Cursor } from './cursor.js';
export { installChangeCapture, CHANGES_CHANNEL } from './install.js';
export { DEFAULT_DENY_LIST, introspectSchema, type SyncSchema, type TableInfo, type ColumnInfo } from './schema.js';
export { openSqlDatabase, type SqlDatabase, type SqlExecutor } from './sql.js';
export type { ConflictPolicy, UploadResult, UploadBatch, UploadChange } from './upload.js';

/** Configures {@link startSyncServer}: which database, where to listen, the sync scope and policies. */
export interface SyncServerOptions {
  /** PostgreSQL connection string; without it an embedded PGlite is used. */
  databaseUrl?: string | undefined;
  /** Folder of the embedded database (ignored with databaseUrl or memory). */
  dataDir?: string | undefined;
  /** A throwaway in-memory embedded database. */
  memory?: boolean | undefined;
  host?: string | undefined;
  /** 0 picks a free port (default 8787). */
  port?: number | undefined;
  include?: string[] | undefined;
  exclude?: string[] | undefined;
  conflictPolicy?: ConflictPolicy | undefined;
  updatedAtColumn?: string | undefined;
  /** Who may sync: staff (default), superuser, active or group:<name>. */
  syncPermission?: string | undefined;
  tokenTtlSeconds?: number | undefined;
  /** Install or upgrade the epetsync schema and capture triggers at start (default true). */
  install?: boolean | undefined;
  limits?: Partial<BodyLimits> | undefined;
  logger?: FastifyBaseLogger | undefined;
  /** How often to look for tables or columns the web app added or dropped (default 60 s; 0: only at start). */
  schemaRefreshSeconds?: number | undefined;
}

/** Describes a running sync server. */
export interface SyncServer {
  url: string;
  port: number;
  app: FastifyInstance;
  db: SqlDatabase;
  /** The synced scope in force (replaced when a refresh finds the schema changed). */
  readonly schema: SyncSchema;
  /** Re-reads the catalogue; when tables or columns changed, installs capture on them and swaps the scope in. Returns true when it changed. */
  refreshSchema(): Promise<boolean>;
  /** Stops accepting, finishes in-flight requests, ends long polls and closes the database. */
  close(): Promise<void>;
}

/** Starts the sync API: opens the database, installs change capture, serves protocol 1 on HTTP. */
export async function startSyncServer(options: SyncServerOptions = {}): Promise<SyncServer> {
  const db = await openSqlDatabase({ databaseUrl: options.databaseUrl, dataDir: options.dataDir, memory: options.memory });
  try {
    let schema = await introspectSchema(db, { include: options.include, exclude: options.exclude });
    if (options.updatedAtColumn) {
      const missing = schema.tables.length > 0 && schema.tables.every((t) => !t.columnsByName.has(options.updatedAtColumn!));
      if (missing) options.logger?.warn(`no synced table has the updated-at column "${options.updatedAtColumn}": newest-wins will always keep the server's version`);
    }
    const install = options.install !== false;
    if (!install) {
      if (!(await isInstalled(db))) {
        throw new EpetsyncError('EPS_SERVE_DATABASE', 'The epetsync schema is not installed in this database and --no-install was given', {
          hint: 'Start epetsync serve once without --no-install (it installs the schema and triggers idempotently).',
        });
      }
    } else {
      const installed = await installChangeCapture(db, schema, (tx) => installAuthSchema(tx));
      options.logger?.info({ tables: installed.tables, removed_triggers: installed.removedTriggers }, 'change capture installed');
    }
    for (const t of schema.unsynced.filter((u) => u.reason === 'no primary key')) {
      options.logger?.warn(`table "${t.name}" has no primary key: it can be migrated but not synced incrementally`);
    }
    const changes = await listenForChanges(db);
    const closing = new AbortController();
    let refreshing: Promise<boolean> | undefined;
    const refreshSchema = (): Promise<boolean> => {
      refreshing ??= (async () => {
        const next = await introspectSchema(db, { include: options.include, exclude: options.exclude });
        if (schemaSignature(next) === schemaSignature(schema)) return false;
        if (install) await installChangeCapture(db, next, (tx) => installAuthSchema(tx));
        schema = next;
        options.logger?.info({ tables: next.tables.length }, 'the database schema changed: sync scope refreshed');
        return true;
      })().finally(() => {
        refreshing = undefined;
      });
      return refreshing;
    };
    const app = await buildSyncApp({
      db,
      schema: () => schema,
      changes,
      conflictPolicy: options.conflictPolicy ?? 'server-wins',
      updatedAtColumn: options.updatedAtColumn,
      syncPermission: options.syncPermission ?? 'staff',
      tokenTtlSeconds: options.tokenTtlSeconds,
      limits: options.limits,
      logger: options.logger,
      closing: closing.signal,
      refreshSchema: () => refreshSchema(),
    });
    const host = options.host ?? '127.0.0.1';
    try {
      await app.listen({ host, port: options.port ?? 8787 });
    } catch (error) {
      await app.close().catch(() => {});
      await changes.close().catch(() => {});
      const code = (error as { code?: string }).code;
      throw new EpetsyncError('EPS_USAGE', `Cannot listen on ${host}:${options.port ?? 8787}: ${(error as Error).message}`, {
        hint: code === 'EADDRINUSE' ? 'Another process uses that port: pick another with --port (0 picks a free one).' : 'Check --host and --port.',
        cause: error,
      });
    }
    const port = (app.server.address() as AddressInfo).port;
    const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
    const everySeconds = options.schemaRefreshSeconds ?? 60;
    const timer = everySeconds > 0
      ? setInterval(() => {
          refreshSchema().catch((error: unknown) => options.logger?.warn({ err: error }, 'schema refresh failed; keeping the previous sync scope'));
        }, everySeconds * 1000)
      : undefined;
    timer?.unref();
    let closed: Promise<void> | undefined;
    return {
      url,
      port,
      app,
      db,
      get schema() {
        return schema;
      },
      refreshSchema,
      close() {
        closed ??= (async () => {
          clearInterval(timer);
          closing.abort();
          await refreshing?.catch(() => {});
          await app.close();
          await changes.close();
          await db.close();
        })();
        return closed;
      },
    };
  } catch (error) {
    await db.close().catch(() => {});
    if (error instanceof EpetsyncError) throw error;
    throw new EpetsyncError('EPS_SERVE_DATABASE', `Cannot prepare the database for sync: ${(error as Error).message}`, {
      hint: 'Check that the database user may create a schema, functions and triggers (or run once as the owner).',
      cause: error,
    });
  }
}

function schemaSignature(schema: SyncSchema): string {
  return JSON.stringify([
    schema.tables.map((t) => [t.schema, t.name, t.primaryKey, t.columns.map((c) => [c.name, c.type, c.nullable, c.default])]),
    schema.unsynced,
  ]);
}
