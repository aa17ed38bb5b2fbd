/**
 * The chaos bed: the real parts of an epetsync deployment, set up in one call for the reliability
 * suite (docs/reliability.md). A fresh PostgreSQL database with a schema, the real `epetsync serve`
 * process behind the fault proxy (so a restarted server keeps the URL clients know), a sync
 * account with a random, registered password, a desktop SQLite file, a config.json pointing at the
 * proxy, and helpers to spawn and SIGKILL the built binary. Every file (databases, config, logs,
 * captured stdout/stderr) lives under one {@link chaosWorkDir}, so the long run greps it.
 *
 * {@link compareSides} reads both databases row by row through the project's own conversion rules
 * (src/sync/convert.ts and src/server/values.ts) and counts lost, duplicated and differing rows;
 * {@link ClinicWorkload} writes a continuous random stream of inserts, updates and deletes on one
 * side and keeps a ledger of what it meant, so lost rows are counted against intent, not assumed.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { quoteIdent } from '../../src/db/sql.js';
import { TEXT_TYPE_OIDS } from '../../src/server/sql.js';
import { toWire as serverToWire } from '../../src/server/values.js';
import { canonical, toWire as clientToWire, type SqliteValue, type WireValue } from '../../src/sync/convert.js';
import { parsePgType, type PgType } from '../../src/sync/pg-type.js';
import { BIN } from '../helpers/cli.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { createTestDatabase, pgQuery, type TestDatabase } from '../helpers/pg.js';
import { createSyncAccount, startServeProcess, type ServeProcess } from '../helpers/server.js';
import { PG_SCHEMA, SQLITE_SCHEMA } from '../sync/fixture.js';
import { chaosWorkDir, registerSecret } from './kit.js';

/** Names the sync account every bed creates. */
export const CHAOS_USER = 'frontdesk';

/** Lists the tables of the small clinic schema ({@link PG_SCHEMA}) the workload writes, with the column that is unique per write. */
export const CLINIC_BUSINESS_KEYS: Record<string, string> = { clinic_owner: 'email', clinic_pet: 'name', clinic_species: 'code' };

/** Resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every `everyMs` until it holds; returns false after `ms` (never throws for time). */
export async function until(check: () => boolean | Promise<boolean>, ms: number, everyMs = 50): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > end) return false;
    await sleep(everyMs);
  }
}

/** Describes a spawned epetsync process whose stdout and stderr go to `<label>.out` / `<label>.err` in the bed folder. */
export interface CliProcess {
  label: string;
  child: ChildProcessWithoutNullStreams;
  /** stdout and stderr so far, interleaved as they arrived. */
  output(): string;
  stdout(): string;
  /** Resolves with the exit code (null when killed by a signal) once the process ended and its output is on disk. */
  exited: Promise<number | null>;
  /** True once the process ended. */
  done(): boolean;
  /** How it ended, e.g. "exit 0" or "signal SIGKILL" (empty while it runs). */
  ending(): string;
  /** SIGKILLs the process (a power cut) and waits for it; returns false when it had already ended by itself. */
  kill(): Promise<boolean>;
  /** Sends SIGTERM (graceful stop) and waits; SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<number | null>;
}

/** Configures {@link startChaosBed}. */
export interface ChaosBedOptions {
  /** Names the work folder and the database. */
  name: string;
  /** PostgreSQL DDL: one string with several statements, or a list (default: the small clinic of test/sync/fixture.ts). */
  pgSchema?: string | readonly string[];
  /** Creates the desktop file at the given path (default: the small clinic's SQLite schema, WAL). */
  makeDesktop?: (path: string) => void;
  /** `database.real_time_sync` (default true). */
  realTime?: boolean;
  /** Extra config keys merged into `sync` (e.g. batch_size). */
  sync?: Record<string, unknown>;
}

/** Describes a running chaos bed; see the module comment. */
export interface ChaosBed {
  dir: string;
  pg: TestDatabase;
  dbPath: string;
  config: string;
  password: string;
  proxy: FaultProxy;
  /** The serve process running now. */
  server(): ServeProcess;
  /** Starts of the serve process so far (1 after the bed starts). */
  serveStarts(): number;
  /** SIGKILLs the serve process (the URL behind the proxy stops answering). */
  killServe(): Promise<void>;
  /** Starts a new serve process over the same database and points the proxy at it. */
  startServe(): Promise<void>;
  /** Spawns `epetsync --config <config> ...args` with the password in the environment. */
  spawn(label: string, args: string[]): CliProcess;
  /** Starts `epetsync monitor` and resolves once its first cycle line is printed (throws with its output if it exits first). */
  startMonitor(extraArgs?: string[]): Promise<CliProcess>;
  /** Runs `epetsync ...args` to the end and returns its exit code and output. */
  run(label: string, args: string[], timeoutMs?: number): Promise<{ code: number | null; stdout: string; output: string }>;
  /** Changes waiting on the desktop: changelog entries plus unacknowledged batches (0 when the tables do not exist yet). */
  pending(): number;
  sql<R = Record<string, unknown>>(text: string, params?: unknown[]): Promise<R[]>;
  /** Registers the token the client cached in its state file (it travels in headers; it must reach no log). */
  registerCachedToken(): void;
  close(): Promise<void>;
}

/** Starts a bed; see the module comment. */
export async function startChaosBed(options: ChaosBedOptions): Promise<ChaosBed> {
  const dir = chaosWorkDir(options.name);
  const db = await createTestDatabase(`eps_chaos_${options.name.replace(/\W/g, '_')}`);
  const schema = options.pgSchema ?? PG_SCHEMA;
  for (const statement of typeof schema === 'string' ? [schema] : schema) await pgQuery(db.url, statement);
  const password = `chaos-${randomBytes(12).toString('base64url')}`;
  registerSecret(password);
  await createSyncAccount(db.url, CHAOS_USER, password);

  const dbPath = join(dir, 'db.sqlite3');
  if (options.makeDesktop) options.makeDesktop(dbPath);
  else {
    const desktop = new Database(dbPath);
    desktop.pragma('journal_mode = WAL');
    desktop.exec(SQLITE_SCHEMA);
    desktop.close();
  }

  let starts = 0;
  let server: ServeProcess | undefined;
  const saveServeOutput = (s: ServeProcess, n: number): void => {
    const { stdout, stderr } = s.output();
    writeFileSync(join(dir, `serve-${n}.out`), stdout);
    writeFileSync(join(dir, `serve-${n}.err`), stderr);
  };
  const launchServe = async (): Promise<ServeProcess> => {
    starts += 1;
    const s = await startServeProcess({ databaseUrl: db.url, args: ['--log-file', join(dir, `serve-${starts}.log`)], cwd: dir });
    const n = starts;
    void new Promise((r) => s.child.on('close', r)).then(() => saveServeOutput(s, n));
    return s;
  };
  server = await launchServe();
  const proxy = await startFaultProxy(server.url);

  const config = join(dir, 'config.json');
  writeFileSync(
    config,
    `${JSON.stringify(
      {
        database: { path: 'db.sqlite3', backup_dir: 'backups', real_time_sync: options.realTime ?? true },
        remote_database: { enabled: true, url: proxy.url, username: CHAOS_USER, sync_interval: 5 },
        sync: { node_id: `chaos-${options.name}`, ...options.sync },
        logging: { file: join(dir, 'epetsync.log'), level: 'debug' },
      },
      null,
      2,
    )}\n`,
  );

  const spawned = new Map<string, number>();
  const children: CliProcess[] = [];
  const spawnCli = (label: string, args: string[]): CliProcess => {
    const n = (spawned.get(label) ?? 0) + 1;
    spawned.set(label, n);
    const name = `${label}-${n}`;
    const child = spawn(process.execPath, [BIN, '--config', config, ...args], {
      cwd: dir,
      env: { ...process.env, NO_COLOR: '1', CI: 'true', EPETSYNC_PASSWORD: password },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    child.stdin.end();
    let out = '';
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      out += d.toString();
    });
    let ended = false;
    let ending = '';
    const exited = new Promise<number | null>((resolve) =>
      child.on('close', (code, signal) => {
        ended = true;
        ending = signal ? `signal ${signal}` : `exit ${String(code)}`;
        writeFileSync(join(dir, `${name}.out`), stdout);
        writeFileSync(join(dir, `${name}.err`), stderr);
        resolve(code);
      }),
    );
    const handle: CliProcess = {
      label: name,
      child,
      output: () => out,
      stdout: () => stdout,
      exited,
      done: () => ended,
      ending: () => ending,
      async kill() {
        if (ended || child.exitCode !== null || child.signalCode !== null) {
          await exited;
          return false;
        }
        child.kill('SIGKILL');
        await exited;
        return true;
      },
      async stop(graceMs = 30_000) {
        if (!ended && child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        const code = await exited;
        clearTimeout(killer);
        return code;
      },
    };
    children.push(handle);
    return handle;
  };

  const bed: ChaosBed = {
    dir,
    pg: db,
    dbPath,
    config,
    password,
    proxy,
    server: () => server!,
    serveStarts: () => starts,
    async killServe() {
      const s = server!;
      if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
      await new Promise<void>((r) => (s.child.exitCode !== null || s.child.signalCode !== null ? r() : s.child.once('close', () => r())));
    },
    async startServe() {
      server = await launchServe();
      proxy.retarget(server.url);
    },
    spawn: spawnCli,
    async startMonitor(extraArgs = []) {
      const m = spawnCli('monitor', ['monitor', ...extraArgs]);
      const started = await until(() => m.done() || /\d\d:\d\d:\d\d\s+start\s+pushed/.test(m.stdout()), 60_000);
      if (m.done() || !started) {
        await m.kill();
        throw new Error(`epetsync monitor did not complete its first cycle (exit ${String(m.child.exitCode)}):\n${m.output()}`);
      }
      return m;
    },
    async run(label, args, timeoutMs = 120_000) {
      const p = spawnCli(label, args);
      const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
      const code = await p.exited;
      clearTimeout(timer);
      return { code, stdout: p.stdout(), output: p.output() };
    },
    pending() {
      const local = new Database(dbPath, { readonly: true, fileMustExist: true, timeout: 5000 });
      try {
        const has = (t: string): boolean => local.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(t) !== undefined;
        const count = (t: string): number => (has(t) ? Number((local.prepare(`SELECT count(*) AS n FROM ${quoteIdent(t)}`).get() as { n: number }).n) : 0);
        return count('_epetsync_changelog') + count('_epetsync_outbox');
      } finally {
        local.close();
      }
    },
    sql: (text, params) => pgQuery(db.url, text, params),
    registerCachedToken() {
      const state = join(dir, '.epetsync', 'state.json');
      if (!existsSync(state)) return;
      try {
        const token = (JSON.parse(readFileSync(state, 'utf8')) as { token?: { value?: string } }).token?.value;
        if (token) registerSecret(token);
      } catch {
        // Being rewritten right now (temp file + rename): the next call reads it.
      }
    },
    async close() {
      bed.registerCachedToken();
      await Promise.all(children.map((c) => c.kill()));
      await server?.stop();
      await proxy.close();
      await db.drop();
      // In the normal test run the folder is in the system temp folder: removed unless EPETSYNC_CHAOS_KEEP asks to look at it.
      if (!process.env.EPETSYNC_CHAOS_OUT && !process.env.EPETSYNC_CHAOS_KEEP) rmSync(dir, { recursive: true, force: true });
    },
  };
  return bed;
}

/** One row as canonical text per column (the text the verify checksums hash), keyed by column name. */
export type CanonicalRow = Record<string, string>;

/** Both sides of one table: rows keyed by the canonical text of their primary key. */
export interface TableSides {
  columns: string[];
  key: string[];
  desktop: Map<string, CanonicalRow>;
  web: Map<string, CanonicalRow>;
}

const KEY_SEP = '\u0001';

/** Reads every row of `tables` from both databases, converted to canonical text by the project's conversion rules (columns both sides have). */
export async function readSides(dbPath: string, pgUrl: string, tables: readonly string[]): Promise<Map<string, TableSides>> {
  const textOids = new Set(TEXT_TYPE_OIDS);
  const client = new pg.Client({
    connectionString: pgUrl,
    types: { getTypeParser: ((oid: number, format?: 'text' | 'binary') => (textOids.has(oid) ? (v: string) => v : pg.types.getTypeParser(oid, format))) as typeof pg.types.getTypeParser },
  });
  await client.connect();
  const local = new Database(dbPath, { readonly: true, fileMustExist: true, timeout: 10_000 });
  local.defaultSafeIntegers(true);
  try {
    await client.query(`SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'`);
    // One snapshot of the web side for all tables, like the desktop read below.
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    local.exec('BEGIN');
    const out = new Map<string, TableSides>();
    for (const table of tables) {
      const cols = (
        await client.query<{ name: string; type: string }>(
          `SELECT attname AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
          [quoteIdent(table)],
        )
      ).rows;
      const key = (
        await client.query<{ name: string }>(
          `SELECT a.attname AS name FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)`,
          [quoteIdent(table)],
        )
      ).rows.map((r) => r.name);
      const localCols = new Set((local.prepare(`SELECT name FROM pragma_table_info(?)`).all(table) as Array<{ name: string }>).map((r) => r.name));
      const shared = cols.filter((c) => localCols.has(c.name));
      const types = new Map<string, PgType>(shared.map((c) => [c.name, parsePgType(c.type)]));
      const keyOf = (row: CanonicalRow): string => key.map((k) => row[k]).join(KEY_SEP);
      const list = shared.map((c) => quoteIdent(c.name)).join(', ');

      const web = new Map<string, CanonicalRow>();
      for (const r of (await client.query<Record<string, unknown>>(`SELECT ${list} FROM ${quoteIdent(table)}`)).rows) {
        const row: CanonicalRow = {};
        for (const c of shared) {
          const type = types.get(c.name)!;
          row[c.name] = canonical(serverToWire(type.kind, r[c.name]) as WireValue, type);
        }
        web.set(keyOf(row), row);
      }
      const desktop = new Map<string, CanonicalRow>();
      for (const r of local.prepare(`SELECT ${list} FROM ${quoteIdent(table)}`).all() as Array<Record<string, SqliteValue>>) {
        const row: CanonicalRow = {};
        for (const c of shared) {
          const type = types.get(c.name)!;
          const wire = clientToWire(r[c.name] ?? null, type, { timezone: 'UTC' });
          row[c.name] = wire.ok ? canonical(wire.value, type) : `unconvertible: ${String(r[c.name])}`;
        }
        desktop.set(keyOf(row), row);
      }
      out.set(table, { columns: shared.map((c) => c.name), key, desktop, web });
    }
    return out;
  } finally {
    if (local.inTransaction) local.exec('COMMIT');
    local.close();
    await client.query('COMMIT').catch(() => {});
    await client.end();
  }
}

/** What a row-by-row comparison found; every count must be 0 for equal databases. */
export interface Comparison {
  /** Rows present on one side only (written on one side, absent on the other), plus ledger rows missing on a side. */
  lost: number;
  /** Extra copies of one logical row (the same business key twice on one side). */
  duplicated: number;
  /** Rows on both sides whose values differ, plus ledger rows whose values or parent differ from what was written, or that came back after a delete. */
  differing: number;
  desktopRows: number;
  webRows: number;
  /** The first problems, each naming table, key and side (for assertion messages). */
  problems: string[];
}

/** Compares both sides row by row (primary key and every shared column) and counts duplicates of each table's business key. */
export function compareSides(sides: Map<string, TableSides>, businessKeys: Record<string, string> = {}): Comparison {
  const result: Comparison = { lost: 0, duplicated: 0, differing: 0, desktopRows: 0, webRows: 0, problems: [] };
  const note = (text: string): void => {
    if (result.problems.length < 20) result.problems.push(text);
  };
  for (const [table, s] of sides) {
    result.desktopRows += s.desktop.size;
    result.webRows += s.web.size;
    for (const [key, row] of s.desktop) {
      const other = s.web.get(key);
      if (!other) {
        result.lost += 1;
        note(`${table} ${key.replaceAll(KEY_SEP, ',')}: on the desktop only ${JSON.stringify(row)}`);
      } else if (s.columns.some((c) => row[c] !== other[c])) {
        result.differing += 1;
        note(`${table} ${key.replaceAll(KEY_SEP, ',')}: desktop ${JSON.stringify(row)} != web ${JSON.stringify(other)}`);
      }
    }
    for (const [key, row] of s.web) {
      if (!s.desktop.has(key)) {
        result.lost += 1;
        note(`${table} ${key.replaceAll(KEY_SEP, ',')}: on the web only ${JSON.stringify(row)}`);
      }
    }
    const business = businessKeys[table];
    if (business) {
      for (const [side, rows] of [['desktop', s.desktop], ['web', s.web]] as const) {
        const seen = new Map<string, number>();
        for (const row of rows.values()) seen.set(row[business]!, (seen.get(row[business]!) ?? 0) + 1);
        for (const [value, n] of seen) {
          if (n > 1) {
            result.duplicated += n - 1;
            note(`${table}: ${business} ${value} ${n} times on the ${side}`);
          }
        }
      }
    }
  }
  return result;
}

/** Runs statements on one side in one transaction and returns the rows they changed. */
export type Executor = (statements: Array<[string, unknown[]]>) => Promise<number>;

/** Starts the desktop writer: a separate Python process writing with its own sqlite3 connection, as the Vet Portal app does. */
export function startDesktopWriter(dbPath: string, errFile: string): { exec: Executor; close(): Promise<void> } {
  const script = `
import json, sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
for line in sys.stdin:
    tx = json.loads(line)
    try:
        con.execute("BEGIN")
        changed = 0
        for sql, params in tx:
            changed += max(con.execute(sql, params).rowcount, 0)
        con.execute("COMMIT")
        print(json.dumps({"ok": True, "changed": changed}), flush=True)
    except Exception as e:
        if con.in_transaction:
            con.execute("ROLLBACK")
        print(json.dumps({"ok": False, "error": str(e)}), flush=True)
`;
  const child = spawn('python3', ['-c', script, dbPath], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<void>((r) => child.on('close', () => {
    writeFileSync(errFile, stderr);
    r();
  }));
  let buffer = '';
  const waiting: Array<(line: string) => void> = [];
  child.stdout.on('data', (d: Buffer) => {
    buffer += d.toString();
    for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      waiting.shift()?.(line);
    }
  });
  return {
    exec(statements) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`the desktop writer did not answer within 60 s: ${stderr}`)), 60_000);
        waiting.push((line) => {
          clearTimeout(timer);
          const answer = JSON.parse(line) as { ok: boolean; changed?: number; error?: string };
          if (answer.ok) resolve(answer.changed ?? 0);
          else reject(new Error(`desktop write failed: ${answer.error} (${JSON.stringify(statements)})`));
        });
        child.stdin.write(`${JSON.stringify(statements)}\n`);
      });
    },
    async close() {
      child.stdin.end();
      await exited;
    },
  };
}

/** Web transactions run again, by cause. */
export interface WebRetries {
  /** PostgreSQL aborted the transaction to break a deadlock (against the server applying an upload). */
  deadlock: number;
  /** An insert's id from the web app's sequence was taken meanwhile by a row the desktop uploaded (the server moves the sequence past uploaded ids only at the end of the upload's transaction). */
  duplicateKey: number;
}

/**
 * Starts the web writer: a PostgreSQL connection of its own, as the Django web app has. A
 * transaction refused for a reason a web app retries (a deadlock victim, or an insert whose
 * sequence id an upload took meanwhile) is run again and counted in {@link retries}.
 */
export async function startWebWriter(pgUrl: string): Promise<{ exec: Executor; retries(): WebRetries; close(): Promise<void> }> {
  const client = new pg.Client({ connectionString: pgUrl, application_name: 'chaos-web-app' });
  await client.connect();
  const retries: WebRetries = { deadlock: 0, duplicateKey: 0 };
  return {
    async exec(statements) {
      for (let attempt = 1; ; attempt += 1) {
        await client.query('BEGIN');
        try {
          let changed = 0;
          for (const [sql, params] of statements) changed += (await client.query(sql, params)).rowCount ?? 0;
          await client.query('COMMIT');
          return changed;
        } catch (error) {
          await client.query('ROLLBACK').catch(() => {});
          const { code, constraint } = error as { code?: unknown; constraint?: unknown };
          const insert = statements.every(([sql]) => sql.startsWith('INSERT'));
          if (attempt < 5 && (code === '40P01' || code === '40001')) retries.deadlock += 1;
          else if (attempt < 5 && code === '23505' && insert && typeof constraint === 'string' && constraint.endsWith('_pkey')) retries.duplicateKey += 1;
          else throw error;
        }
      }
    },
    retries: () => ({ ...retries }),
    close: () => client.end(),
  };
}

interface OwnerIntent {
  name: string;
  pets: Set<string>;
}
interface PetIntent {
  owner: string;
  weight: string;
  neutered: boolean;
}

/**
 * A random stream of clinic writes on one side (owners, their pets, species) with a ledger of
 * what each write meant. Each side edits and deletes only rows it created, by business key (an id
 * may be moved by sync's collision re-keying), so the end state is known without conflict rules.
 */
export class ClinicWorkload {
  /** Rows changed by successful writes. */
  written = 0;
  /** Write transactions committed. */
  commits = 0;
  /** Owner deletes PostgreSQL refused because a desktop row pointed at the owner (web side only). */
  refusedDeletes = 0;
  private n = 0;
  private readonly owners = new Map<string, OwnerIntent>();
  private readonly deletedOwners = new Set<string>();
  private readonly pets = new Map<string, PetIntent>();
  private readonly deletedPets = new Set<string>();
  private readonly species = new Set<string>();
  private readonly deletedSpecies = new Set<string>();

  constructor(
    readonly side: 'desktop' | 'web',
    private readonly tag: string,
    private readonly random: () => number,
    private readonly exec: Executor,
  ) {}

  private pick<T>(items: Iterable<T>): T | undefined {
    const list = [...items];
    return list.length === 0 ? undefined : list[Math.floor(this.random() * list.length)];
  }

  private ts(): string {
    const s = Math.floor(this.random() * 86_400);
    const t = `2026-11-25 ${String(Math.floor(s / 3600)).padStart(2, '0')}:${String(Math.floor(s / 60) % 60).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
    return this.side === 'web' ? `${t}+00` : t;
  }

  private bool(v: boolean): boolean | number {
    return this.side === 'web' ? v : v ? 1 : 0;
  }

  /** Returns the i-th placeholder; PostgreSQL gets the type too, which it cannot infer inside INSERT … SELECT. */
  private p(i: number, cast?: string): string {
    if (this.side === 'desktop') return '?';
    return cast ? `$${i}::${cast}` : `$${i}`;
  }

  /** Makes one random write (a transaction of one or two statements) and records it in the ledger. */
  async step(): Promise<void> {
    this.n += 1;
    const id = `${this.side[0]}${this.tag}-${this.n}`;
    const r = this.random();
    const owner = this.pick(this.owners.keys());
    const pet = this.pick(this.pets.keys());
    const p = this.p.bind(this);
    if (r < 0.3 || owner === undefined) {
      const email = `${id}@chaos.invalid`;
      const name = `Owner ${id} ‘${this.side}’`;
      await this.commit([[`INSERT INTO clinic_owner (name, email, updated_at) VALUES (${p(1)}, ${p(2)}, ${p(3)})`, [name, email, this.ts()]]]);
      this.owners.set(email, { name, pets: new Set() });
    } else if (r < 0.5) {
      const name = `${id}-pet`;
      const weight = (Math.floor(this.random() * 8000) / 100).toFixed(2);
      const neutered = this.random() < 0.5;
      await this.commit([[`INSERT INTO clinic_pet (owner_id, name, weight_kg, neutered, updated_at) SELECT id, ${p(1, 'text')}, ${p(2, 'numeric')}, ${p(3, 'boolean')}, ${p(4, 'timestamptz')} FROM clinic_owner WHERE email = ${p(5)}`, [name, weight, this.bool(neutered), this.ts(), owner]]], 1);
      this.pets.set(name, { owner, weight, neutered });
      this.owners.get(owner)!.pets.add(name);
    } else if (r < 0.65) {
      const name = `Owner ${id} renamed`;
      await this.commit([[`UPDATE clinic_owner SET name = ${p(1)}, updated_at = ${p(2)} WHERE email = ${p(3)}`, [name, this.ts(), owner]]], 1);
      this.owners.get(owner)!.name = name;
    } else if (r < 0.75 && pet !== undefined) {
      const weight = (Math.floor(this.random() * 8000) / 100).toFixed(2);
      await this.commit([[`UPDATE clinic_pet SET weight_kg = ${p(1)}, updated_at = ${p(2)} WHERE name = ${p(3)}`, [weight, this.ts(), pet]]], 1);
      this.pets.get(pet)!.weight = weight;
    } else if (r < 0.82 && pet !== undefined) {
      await this.commit([[`DELETE FROM clinic_pet WHERE name = ${p(1)}`, [pet]]], 1);
      this.owners.get(this.pets.get(pet)!.owner)?.pets.delete(pet);
      this.pets.delete(pet);
      this.deletedPets.add(pet);
    } else if (r < 0.88) {
      // An owner leaves with their pets (each by name, not every row pointing at the owner), children first, in one transaction.
      const intent = this.owners.get(owner)!;
      try {
        await this.commit([
          ...[...intent.pets].map((name): [string, unknown[]] => [`DELETE FROM clinic_pet WHERE name = ${p(1)}`, [name]]),
          [`DELETE FROM clinic_owner WHERE email = ${p(1)}`, [owner]],
        ], 1 + intent.pets.size);
      } catch (error) {
        // PostgreSQL refuses the owner's delete while another row points at it (the deferred foreign key, at COMMIT).
        // Only a desktop row can: a child uploaded with its colliding parent points at the web app's row until the
        // parent is moved (the window docs/sync.md describes). Refused, the web app tries another time.
        if ((error as { code?: unknown }).code !== '23503') throw error;
        this.refusedDeletes += 1;
        return;
      }
      for (const name of intent.pets) {
        this.pets.delete(name);
        this.deletedPets.add(name);
      }
      this.owners.delete(owner);
      this.deletedOwners.add(owner);
    } else if (r < 0.95 || this.species.size === 0) {
      const code = `${id}-sp`;
      await this.commit([[`INSERT INTO clinic_species (code, label) VALUES (${p(1)}, ${p(2)})`, [code, `Species “${id}” 🐾`]]]);
      this.species.add(code);
    } else {
      const code = this.pick(this.species)!;
      await this.commit([[`DELETE FROM clinic_species WHERE code = ${p(1)}`, [code]]], 1);
      this.species.delete(code);
      this.deletedSpecies.add(code);
    }
  }

  private async commit(statements: Array<[string, unknown[]]>, expected = 1): Promise<void> {
    const changed = await this.exec(statements);
    // A write that changes fewer rows than meant (an UPDATE finding nothing) would make the ledger lie.
    if (changed !== expected) throw new Error(`${this.side} write changed ${changed} row(s), expected ${expected}: ${JSON.stringify(statements)}`);
    this.written += changed;
    this.commits += 1;
  }

  /** Checks both sides against the ledger: every live row present once with the values written (pets under the right owner), every deleted row gone. */
  check(sides: Map<string, TableSides>): Comparison {
    const result: Comparison = { lost: 0, duplicated: 0, differing: 0, desktopRows: 0, webRows: 0, problems: [] };
    const note = (text: string): void => {
      if (result.problems.length < 20) result.problems.push(`${this.side} ledger: ${text}`);
    };
    for (const sideName of ['desktop', 'web'] as const) {
      const byKey = (table: string, column: string): Map<string, CanonicalRow> => {
        const m = new Map<string, CanonicalRow>();
        for (const row of sides.get(table)![sideName].values()) m.set(row[column]!, row);
        return m;
      };
      const owners = byKey('clinic_owner', 'email');
      const pets = byKey('clinic_pet', 'name');
      const species = byKey('clinic_species', 'code');
      for (const [email, intent] of this.owners) {
        const row = owners.get(email);
        if (!row) {
          result.lost += 1;
          note(`owner ${email} missing on the ${sideName}`);
        } else if (row.name !== intent.name) {
          result.differing += 1;
          note(`owner ${email} on the ${sideName} is named ${row.name}, written ${intent.name}`);
        }
      }
      for (const [name, intent] of this.pets) {
        const row = pets.get(name);
        const ownerId = owners.get(intent.owner)?.id;
        if (!row) {
          result.lost += 1;
          note(`pet ${name} missing on the ${sideName}`);
        } else if (row.owner_id !== ownerId || Number(row.weight_kg) !== Number(intent.weight) || row.neutered !== (intent.neutered ? 't' : 'f')) {
          result.differing += 1;
          note(`pet ${name} on the ${sideName} is ${JSON.stringify(row)}, written owner ${intent.owner} (id ${ownerId}) weight ${intent.weight} neutered ${intent.neutered}`);
        }
      }
      for (const code of this.species) {
        if (!species.has(code)) {
          result.lost += 1;
          note(`species ${code} missing on the ${sideName}`);
        }
      }
      for (const [deleted, present, what] of [[this.deletedOwners, owners, 'owner'], [this.deletedPets, pets, 'pet'], [this.deletedSpecies, species, 'species']] as const) {
        for (const key of deleted) {
          if (present.has(key)) {
            result.differing += 1;
            note(`deleted ${what} ${key} is back on the ${sideName}`);
          }
        }
      }
    }
    return result;
  }
}

/** Adds two comparisons. */
export function addComparisons(a: Comparison, b: Comparison): Comparison {
  return {
    lost: a.lost + b.lost,
    duplicated: a.duplicated + b.duplicated,
    differing: a.differing + b.differing,
    desktopRows: a.desktopRows + b.desktopRows,
    webRows: a.webRows + b.webRows,
    problems: [...a.problems, ...b.problems].slice(0, 30),
  };
}

/** Compares the clinic tables of a bed row by row and against the workloads' ledgers. */
export async function compareClinic(bed: ChaosBed, workloads: ClinicWorkload[]): Promise<Comparison> {
  const sides = await readSides(bed.dbPath, bed.pg.url, Object.keys(CLINIC_BUSINESS_KEYS));
  let result = compareSides(sides, CLINIC_BUSINESS_KEYS);
  for (const w of workloads) result = addComparisons(result, w.check(sides));
  return result;
}

/** Waits (bounded) until nothing is pending on the desktop and both sides agree row by row and with the ledgers; returns the last comparison. */
export async function waitForConvergence(bed: ChaosBed, workloads: ClinicWorkload[], ms: number): Promise<{ converged: boolean; comparison: Comparison; waitedMs: number }> {
  const start = Date.now();
  let comparison = await compareClinic(bed, workloads);
  for (;;) {
    const clean = comparison.lost === 0 && comparison.duplicated === 0 && comparison.differing === 0 && bed.pending() === 0;
    if (clean || Date.now() - start > ms) return { converged: clean, comparison, waitedMs: Date.now() - start };
    await sleep(250);
    comparison = await compareClinic(bed, workloads);
  }
}

/** Runs both workloads continuously (each write followed by a short random pause) until `stop()` says so; resolves when both stopped. */
export async function runWorkloads(workloads: ClinicWorkload[], random: () => number, stop: () => boolean, pauseMs: [number, number] = [10, 120]): Promise<void> {
  await Promise.all(
    workloads.map(async (w) => {
      while (!stop()) {
        await w.step();
        await sleep(pauseMs[0] + random() * (pauseMs[1] - pauseMs[0]));
      }
    }),
  );
}
