/**
 * A clinic for diagnose and fix tests: the web app's Django schema and auth_user in a fresh
 * PostgreSQL database served by the real binary, and clinic folders (config.json, a generated
 * desktop database) pointing at it.
 */
import { pbkdf2Sync, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DJANGO_POSTGRES_SCHEMA, generateClinicDatabase } from '../../src/sync/generate.js';
import { tempDir } from '../db/fixtures.js';
import { runCli, type CliRun } from '../helpers/cli.js';
import { createTestDatabase, pgQuery, type TestDatabase } from '../helpers/pg.js';
import { startServeProcess, type ServeProcess } from '../helpers/server.js';

/** Holds the staff account's password. */
export const PASSWORD = 'Front-desk-diagnose-42';

function djangoHash(password: string): string {
  const salt = randomBytes(12).toString('hex');
  return `pbkdf2_sha256$12000$${salt}$${pbkdf2Sync(password, salt, 12000, 32, 'sha256').toString('base64')}`;
}

/** Describes the remote side of the bed. */
export interface DiagnoseBed {
  pg: TestDatabase;
  server: ServeProcess;
  sql<R = Record<string, unknown>>(text: string, params?: unknown[]): Promise<R[]>;
  close(): Promise<void>;
}

/** Creates the web app's schema with a staff user `frontdesk` and a non-staff `reception`, and serves it. */
export async function startBed(prefix: string): Promise<DiagnoseBed> {
  const pg = await createTestDatabase(prefix);
  for (const sql of DJANGO_POSTGRES_SCHEMA) await pgQuery(pg.url, sql);
  await pgQuery(
    pg.url,
    `CREATE TABLE public.auth_user (id serial PRIMARY KEY, password varchar(128) NOT NULL, last_login timestamptz NULL, is_superuser boolean NOT NULL,
      username varchar(150) NOT NULL UNIQUE, first_name varchar(150) NOT NULL, last_name varchar(150) NOT NULL, email varchar(254) NOT NULL,
      is_staff boolean NOT NULL, is_active boolean NOT NULL, date_joined timestamptz NOT NULL)`,
  );
  for (const [user, staff] of [['frontdesk', true], ['reception', false]] as const) {
    await pgQuery(pg.url, `INSERT INTO public.auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined) VALUES ($1, false, $2, '', '', '', $3, true, now())`, [djangoHash(PASSWORD), user, staff]);
  }
  const server = await startServeProcess({ databaseUrl: pg.url });
  return {
    pg,
    server,
    sql: (text, params = []) => pgQuery(pg.url, text, params),
    async close() {
      await server.stop();
      await pg.drop();
    },
  };
}

/** Describes one clinic folder: its config, database and a runner of the built binary with its config. */
export interface Clinic {
  dir: string;
  config: string;
  db: string;
  backupDir: string;
  cli(args: string[], env?: NodeJS.ProcessEnv): Promise<CliRun>;
  /** Runs `diagnose --json ...args` and returns the parsed document with the exit code. */
  diagnose(args?: string[], env?: NodeJS.ProcessEnv): Promise<{ code: number | null; doc: DiagnoseDoc; run: CliRun }>;
}

/** Describes the --json document of diagnose. */
export interface DiagnoseDoc {
  ok: boolean;
  result: {
    config: string | null;
    checks: Array<{ id: string; group: string; status: string; found: string; remedy: string | null; fixable: boolean; data?: Record<string, unknown> }>;
    fixes: Array<{ id: string; action: string; outcome: string; before: string; after: string }>;
    summary: { ok: number; warn: number; fail: number; skipped: number };
  };
}

/** Creates a clinic folder; `remote` is merged into remote_database, `text` replaces config.json entirely. */
export function makeClinic(url: string, options: { remote?: Record<string, unknown>; database?: Record<string, unknown>; text?: string; scale?: number; app?: Record<string, unknown> } = {}): Clinic {
  const root = tempDir();
  const dir = join(root, 'clinic');
  mkdirSync(dir);
  const config = join(dir, 'config.json');
  const db = join(dir, 'db.sqlite3');
  generateClinicDatabase(db, { scale: options.scale ?? 5, journalMode: 'wal' });
  const doc = {
    database: { path: 'db.sqlite3', backup_dir: 'backups', ...options.database },
    ...(options.app ? { app: options.app } : {}),
    remote_database: { enabled: true, url, username: 'frontdesk', sync_interval: 30, ...options.remote },
    sync: { node_id: 'front-desk-1' },
    logging: { file: join(root, 'logs', 'epetsync.log') },
  };
  writeFileSync(config, options.text ?? `${JSON.stringify(doc, null, 2)}\n`, { mode: 0o600 });
  const baseEnv = { EPETSYNC_PASSWORD: PASSWORD };
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliRun> => runCli(['--config', config, ...args], { cwd: dir, env: { ...baseEnv, ...env }, timeoutMs: 90_000 });
  return {
    dir,
    config,
    db,
    backupDir: join(dir, 'backups'),
    cli,
    async diagnose(args = [], env = {}) {
      const run = await cli(['--json', 'diagnose', ...args], env);
      let doc: DiagnoseDoc;
      try {
        doc = JSON.parse(run.stdout) as DiagnoseDoc;
      } catch {
        throw new Error(`diagnose printed no JSON (exit ${run.code}): ${run.stdout}\n${run.stderr}`);
      }
      return { code: run.code, doc, run };
    },
  };
}

/** Returns one check of a diagnose document by id (fails the test when absent). */
export function check(doc: DiagnoseDoc, id: string): DiagnoseDoc['result']['checks'][number] {
  const c = doc.result.checks.find((x) => x.id === id);
  if (!c) throw new Error(`no check ${id} in ${doc.result.checks.map((x) => x.id).join(', ')}`);
  return c;
}

/** Returns the ids of checks that are neither ok nor skipped, with what they found (for readable failures). */
export function problems(doc: DiagnoseDoc): string[] {
  return doc.result.checks.filter((c) => c.status === 'warn' || c.status === 'fail').map((c) => `${c.id} ${c.status}: ${c.found}`);
}
