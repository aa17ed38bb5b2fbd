/**
 * A clinic on both sides for sync tests: the same Django-shaped schema in a fresh PostgreSQL
 * database (served by the real sync server in-process) and in real SQLite files.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { RemoteDatabaseClient } from '../../src/client/index.js';
import { createAccount } from '../../src/server/auth/index.js';
import { startSyncServer, type SyncServer } from '../../src/server/index.js';
import { createTestDatabase, pgQuery, type TestDatabase } from '../helpers/pg.js';

/** Names the sync account the fixtures create. */
export const USER = 'frontdesk';
/** Holds the account's password. */
export const PASSWORD = 'Front-Desk-pa55-for-tests';

/** Lists the PostgreSQL side of the clinic, as Django's migrations would create it. */
export const PG_SCHEMA = `
  CREATE TABLE clinic_owner (id bigserial PRIMARY KEY, name varchar(100) NOT NULL, email varchar(254), updated_at timestamptz NOT NULL DEFAULT now());
  CREATE TABLE clinic_pet (id bigserial PRIMARY KEY, owner_id bigint NOT NULL REFERENCES clinic_owner(id) DEFERRABLE INITIALLY DEFERRED,
    name varchar(100) NOT NULL, weight_kg numeric(6,2) CHECK (weight_kg IS NULL OR weight_kg >= 0), neutered boolean NOT NULL DEFAULT false, updated_at timestamptz NOT NULL DEFAULT now());
  CREATE TABLE clinic_vaccination (pet_id bigint NOT NULL, vaccine varchar(50) NOT NULL, given_on date, PRIMARY KEY (pet_id, vaccine));
  CREATE TABLE clinic_species (code varchar(20) PRIMARY KEY, label text NOT NULL);
`;

/** Lists the SQLite side, as Django's SQLite backend creates it. */
export const SQLITE_SCHEMA = `
  CREATE TABLE "clinic_owner" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "name" varchar(100) NOT NULL, "email" varchar(254) NULL, "updated_at" datetime NOT NULL);
  CREATE TABLE "clinic_pet" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "owner_id" bigint NOT NULL REFERENCES "clinic_owner" ("id") DEFERRABLE INITIALLY DEFERRED,
    "name" varchar(100) NOT NULL, "weight_kg" decimal NULL, "neutered" bool NOT NULL, "updated_at" datetime NOT NULL);
  CREATE TABLE "clinic_vaccination" ("pet_id" bigint NOT NULL, "vaccine" varchar(50) NOT NULL, "given_on" date NULL, PRIMARY KEY ("pet_id", "vaccine"));
  CREATE TABLE "clinic_species" ("code" varchar(20) NOT NULL PRIMARY KEY, "label" text NOT NULL);
`;

/** Describes the running remote side. */
export interface Remote {
  pg: TestDatabase;
  server: SyncServer;
  url: string;
  sql<R = Record<string, unknown>>(text: string, params?: unknown[]): Promise<R[]>;
  /** Empties every clinic table (children first). */
  reset(): Promise<void>;
  close(): Promise<void>;
}

/** Creates the PostgreSQL database, its schema and an account, and starts the sync server on a free port. */
export async function startRemote(prefix: string, options: { conflictPolicy?: 'server-wins' | 'client-wins' | 'newest-wins' } = {}): Promise<Remote> {
  const pg = await createTestDatabase(prefix);
  await pgQuery(pg.url, PG_SCHEMA);
  const server = await startSyncServer({ databaseUrl: pg.url, port: 0, conflictPolicy: options.conflictPolicy, updatedAtColumn: 'updated_at' });
  await createAccount(server.db, USER, PASSWORD);
  return {
    pg,
    server,
    url: server.url,
    sql: (text, params = []) => pgQuery(pg.url, text, params),
    async reset() {
      await pgQuery(pg.url, 'TRUNCATE clinic_vaccination, clinic_pet, clinic_owner, clinic_species RESTART IDENTITY');
    },
    async close() {
      await server.close();
      await pg.drop();
    },
  };
}

/** Creates a fresh desktop database file (WAL, as the Vet Portal app keeps it) and returns its path. */
export function createDesktopDb(dir = mkdtempSync(join(tmpdir(), 'eps-sync-'))): string {
  const path = join(dir, 'db.sqlite3');
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.exec(SQLITE_SCHEMA);
  db.close();
  return path;
}

/** Opens a desktop database the way the engine wants it: read-write, integers as bigint. */
export function openDesktop(path: string): Database.Database {
  const db = new Database(path, { timeout: 5000 });
  db.defaultSafeIntegers(true);
  return db;
}

/** Creates a client for one node. */
export function clientFor(remote: Remote, nodeId = 'desk-1'): RemoteDatabaseClient {
  return new RemoteDatabaseClient({ url: remote.url, username: USER, password: PASSWORD, nodeId, retries: { retries: 2, baseDelayMs: 20, maxDelayMs: 50 } });
}
