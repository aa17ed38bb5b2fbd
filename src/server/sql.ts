import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { EpetsyncError } from '../errors.js';

/** Runs SQL with `$1`-style parameters; the same text runs on PostgreSQL and PGlite. */
export interface SqlExecutor {
  query<Row = Record<string, unknown>>(text: string, params?: unknown[]): Promise<{ rows: Row[]; rowCount: number }>;
  /**
   * Streams `data` into a `COPY ... FROM STDIN` statement; present only inside a node-postgres
   * transaction (PGlite has no COPY protocol from JS, so bulk loads fall back to INSERT there).
   */
  copyFrom?(copySql: string, data: Iterable<string>): Promise<void>;
}

/** Owns a PostgreSQL database for the server: a node-postgres pool or an embedded PGlite. */
export interface SqlDatabase extends SqlExecutor {
  readonly kind: 'postgres' | 'pglite';
  /** Runs `fn` in one transaction: committed when it resolves, rolled back when it throws. */
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  /** Calls `onNotify` for each NOTIFY on `channel`; returns an unsubscribe function. */
  listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

/** Describes which database to open: a connection string, a data folder, or memory. */
export interface OpenSqlOptions {
  databaseUrl?: string | undefined;
  dataDir?: string | undefined;
  memory?: boolean | undefined;
  /** Pool size for node-postgres (default 10). */
  poolSize?: number;
}

/**
 * Lists the PostgreSQL type OIDs both drivers hand back as the server's own text: int8, numeric,
 * date, time, timestamp, timestamptz, timetz. Converting them to JS numbers or Dates would lose
 * digits, precision or the time zone; the wire format (docs/protocol.md) is built from the text.
 */
export const TEXT_TYPE_OIDS = [20, 1700, 1082, 1083, 1114, 1184, 1266];

/** Opens the server's database: node-postgres when a URL is given, else embedded PGlite. */
export async function openSqlDatabase(options: OpenSqlOptions): Promise<SqlDatabase> {
  if (options.databaseUrl) return openPostgres(options.databaseUrl, options.poolSize ?? 10);
  return openPglite(options.memory ? undefined : options.dataDir);
}

async function openPostgres(url: string, poolSize: number): Promise<SqlDatabase> {
  const { default: pg } = await import('pg');
  // Exact values: see TEXT_TYPE_OIDS.
  for (const oid of TEXT_TYPE_OIDS) pg.types.setTypeParser(oid, (v: string) => v);
  const pool = new pg.Pool({
    connectionString: url,
    max: poolSize,
    application_name: 'epetsync-serve',
    // Timestamps come back as the server's text; UTC makes that text the wire spelling (docs/protocol.md).
    // Awaited by the pool before the client is handed out.
    onConnect: async (client) => {
      await client.query(`SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'`);
    },
  });
  pool.on('error', () => {
    // An idle client lost its connection (server restart); the pool replaces it on next use.
  });
  try {
    const client = await pool.connect();
    client.release();
  } catch (cause) {
    await pool.end().catch(() => {});
    throw new EpetsyncError('EPS_SERVE_DATABASE', `Cannot connect to PostgreSQL: ${(cause as Error).message}`, {
      hint: 'Check --database-url / DATABASE_URL (host, port, database name, user) and that the server is running.',
      cause,
    });
  }
  const listeners = new Map<string, { client: import('pg').PoolClient | undefined; handlers: Set<(p: string) => void> }>();
  let closing = false;
  // A checked-out client has no pool error listener: without one, a connection dropped between
  // two queries (server restart, admin kill) would be an unhandled 'error' and end the process.
  const onClientError = (): void => {};
  const attachListener = async (channel: string, entry: { client: import('pg').PoolClient | undefined; handlers: Set<(p: string) => void> }): Promise<void> => {
    const client = await pool.connect();
    // A dying connection can report more than one error (a failed LISTEN and the connection's own
    // error, or two messages from the server): released twice, pg-pool throws from the event
    // handler, an uncaught exception that would end epetsync serve.
    let released = false;
    const release = (error: Error): void => {
      if (released) return;
      released = true;
      client.release(error);
    };
    client.on('notification', (msg) => {
      if (msg.channel === channel) for (const h of entry.handlers) h(msg.payload ?? '');
    });
    client.on('error', (error) => {
      const listening = entry.client === client;
      if (closing) return;
      release(error);
      // Before LISTEN succeeded, attachListener's own failure path retries (no second retry here).
      if (!listening) return;
      // The LISTEN connection died: drop it and listen again on a fresh one. Waiters meanwhile
      // fall back to their own polling tick, so nothing is missed, only woken later.
      entry.client = undefined;
      const retry = (): void => {
        if (closing || !listeners.has(channel)) return;
        attachListener(channel, entry).catch(() => setTimeout(retry, 1000).unref());
      };
      setTimeout(retry, 250).unref();
    });
    try {
      await client.query(`LISTEN ${quoteIdent(channel)}`);
    } catch (error) {
      release(error as Error);
      throw error;
    }
    if (released) throw new Error('the LISTEN connection was lost as it was set up');
    entry.client = client;
  };
  return {
    kind: 'postgres',
    async query(text, params) {
      const r = await pool.query(text, params as unknown[]);
      return { rows: r.rows, rowCount: r.rowCount ?? 0 };
    },
    async transaction(fn) {
      const client = await pool.connect();
      client.on('error', onClientError);
      let broken: Error | undefined;
      try {
        await client.query('BEGIN');
        const result = await fn({
          async query(text, params) {
            const r = await client.query(text, params as unknown[]);
            return { rows: r.rows, rowCount: r.rowCount ?? 0 };
          },
          async copyFrom(copySql, data) {
            const { from } = await import('pg-copy-streams');
            const { Readable } = await import('node:stream');
            const { pipeline } = await import('node:stream/promises');
            await pipeline(Readable.from(data), client.query(from(copySql)));
          },
        });
        await client.query('COMMIT');
        return result;
      } catch (error) {
        await client.query('ROLLBACK').catch((rollbackError: Error) => {
          broken = rollbackError;
        });
        throw error;
      } finally {
        client.off('error', onClientError);
        // A client whose ROLLBACK failed is not reusable: destroy it instead of pooling it.
        client.release(broken);
      }
    },
    async listen(channel, onNotify) {
      let entry = listeners.get(channel);
      if (!entry) {
        entry = { client: undefined, handlers: new Set<(p: string) => void>() };
        listeners.set(channel, entry);
        try {
          await attachListener(channel, entry);
        } catch (error) {
          listeners.delete(channel);
          throw error;
        }
      }
      entry.handlers.add(onNotify);
      const current = entry;
      return async () => {
        current.handlers.delete(onNotify);
      };
    },
    async close() {
      closing = true;
      for (const { client } of listeners.values()) client?.release();
      listeners.clear();
      await pool.end();
    },
  };
}

async function openPglite(dataDir: string | undefined): Promise<SqlDatabase> {
  const { PGlite } = await import('@electric-sql/pglite');
  const parsers = Object.fromEntries(TEXT_TYPE_OIDS.map((oid) => [oid, (v: string) => v]));
  let db: import('@electric-sql/pglite').PGlite;
  let unlock = (): void => {};
  try {
    if (dataDir) {
      mkdirSync(dataDir, { recursive: true });
      unlock = lockDataDir(dataDir);
    }
    db = dataDir ? await PGlite.create(dataDir, { parsers }) : await PGlite.create({ parsers });
  } catch (cause) {
    unlock();
    if (cause instanceof EpetsyncError) throw cause;
    throw new EpetsyncError('EPS_SERVE_DATABASE', `Cannot open the embedded database${dataDir ? ` in ${dataDir}` : ''}: ${(cause as Error).message}`, {
      hint: 'Check that the folder is writable and not used by another epetsync serve (or pass --data-dir / --memory).',
      cause,
    });
  }
  // One session for the life of the database: set outside any transaction so it sticks.
  await db.exec(`SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'`);
  const run = async <Row>(ex: { query: (t: string, p?: unknown[]) => Promise<{ rows: unknown[]; affectedRows?: number }> }, text: string, params?: unknown[]) => {
    const r = await ex.query(text, params);
    return { rows: r.rows as Row[], rowCount: r.affectedRows ?? r.rows.length };
  };
  return {
    kind: 'pglite',
    query: (text, params) => run(db, text, params),
    transaction: (fn) => db.transaction((tx) => fn({ query: (text, params) => run(tx, text, params) })),
    async listen(channel, onNotify) {
      const unsub = await db.listen(channel, onNotify);
      return async () => unsub();
    },
    async close() {
      try {
        await db.close();
      } finally {
        unlock();
      }
    },
  };
}

/**
 * Claims an embedded data folder for this process. PGlite has no lock of its own, and two
 * processes writing one folder (a second serve, or `serve user add` while serve runs) would
 * corrupt it; a lock left by a process that no longer exists is taken over.
 */
function lockDataDir(dataDir: string): () => void {
  const file = join(dataDir, 'epetsync.pid');
  const mine = String(process.pid);
  for (let attempt = 0; ; attempt += 1) {
    try {
      writeFileSync(file, mine, { flag: 'wx' });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw error;
      const holder = Number(readFileSync(file, 'utf8').trim());
      if (Number.isInteger(holder) && holder > 0 && (holder === process.pid || processAlive(holder))) {
        throw new EpetsyncError('EPS_LOCKED', `The embedded database in ${dataDir} is in use by process ${holder}`, {
          hint: 'Stop that epetsync first (serve and serve user cannot share an embedded database at once), or use --database-url.',
          details: { pid: holder, data_dir: dataDir },
        });
      }
      rmSync(file, { force: true });
    }
  }
  return () => {
    try {
      if (readFileSync(file, 'utf8').trim() === mine) rmSync(file, { force: true });
    } catch {
      // Already gone: nothing to release.
    }
  };
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Quotes an SQL identifier; callers pass only names taken from the introspected schema. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
