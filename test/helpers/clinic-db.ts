import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { DJANGO_POSTGRES_SCHEMA } from '../../src/sync/generate.js';
import { makeClinicFolder, type ClinicFolder } from '../db/fixtures.js';
import { runCli, type CliRun } from './cli.js';
import { createTestDatabase, pgQuery, type TestDatabase } from './pg.js';
import { createSyncAccount, startServeProcess, type ServeProcess } from './server.js';

/** Describes a migrate test bed: a Django-shaped PostgreSQL database served by the real binary, and a clinic folder pointing at it. */
export interface MigrateBed {
  pg: TestDatabase;
  server: ServeProcess;
  folder: ClinicFolder;
  /** Runs `epetsync --config <folder>/config.json ...args` with the built binary. */
  cli(args: string[], options?: { timeoutMs?: number }): Promise<CliRun>;
  sql<Row = Record<string, unknown>>(text: string, params?: unknown[]): Promise<Row[]>;
  close(): Promise<void>;
}

/** Creates the Django schema in a fresh PostgreSQL database, an account, a served API and a clinic folder configured for it. */
export async function startMigrateBed(prefix = 'eps_mig', schema: readonly string[] = DJANGO_POSTGRES_SCHEMA): Promise<MigrateBed> {
  const db = await createTestDatabase(prefix);
  for (const sql of schema) await pgQuery(db.url, sql);
  await createSyncAccount(db.url, 'frontdesk', 'correct horse battery');
  const server = await startServeProcess({ databaseUrl: db.url });
  const folder = makeClinicFolder();
  writeFileSync(
    folder.config,
    `${JSON.stringify({ database: { path: 'db.sqlite3', backup_dir: 'backups' }, remote_database: { enabled: true, url: server.url, username: 'frontdesk' }, logging: { file: join(folder.root, 'logs', 'epetsync.log') } }, null, 2)}\n`,
  );
  return {
    pg: db,
    server,
    folder,
    cli: (args, options = {}) => runCli(['--config', folder.config, ...args], { env: { EPETSYNC_PASSWORD: 'correct horse battery' }, timeoutMs: options.timeoutMs ?? 120_000 }),
    sql: (text, params) => pgQuery(db.url, text, params),
    async close() {
      await server.stop();
      await db.drop();
    },
  };
}

/** Reads every row of a remote table directly from PostgreSQL with each column as PostgreSQL's text (UTC), keyed by the primary key text. */
export async function readRemoteText(url: string, table: string, key: string[]): Promise<Map<string, Record<string, string | null>>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`SET TIME ZONE 'UTC'`);
    const cols = (await client.query<{ attname: string }>(`SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, [`"${table}"`])).rows.map((r) => r.attname);
    const select = cols.map((c) => `"${c}"::text AS "${c}"`).join(', ');
    const { rows } = await client.query<Record<string, string | null>>(`SELECT ${select} FROM "${table}"`);
    return new Map(rows.map((r) => [key.map((k) => r[k]).join('|'), r]));
  } finally {
    await client.end();
  }
}

/** Creates another clinic folder whose config points at the bed's server, and a runner for it. */
export function clinicFolderFor(bed: MigrateBed): { folder: ClinicFolder; cli(args: string[], options?: { timeoutMs?: number }): Promise<CliRun> } {
  const folder = makeClinicFolder();
  writeFileSync(
    folder.config,
    `${JSON.stringify({ database: { path: 'db.sqlite3', backup_dir: 'backups' }, remote_database: { enabled: true, url: bed.server.url, username: 'frontdesk' }, logging: { file: join(folder.root, 'logs', 'epetsync.log') } }, null, 2)}\n`,
  );
  return {
    folder,
    cli: (args, options = {}) => runCli(['--config', folder.config, ...args], { env: { EPETSYNC_PASSWORD: 'correct horse battery' }, timeoutMs: options.timeoutMs ?? 120_000 }),
  };
}
