/**
 * Reliability part 4 (docs/reliability.md): faults in the desktop's own SQLite file under a real
 * `epetsync monitor` process, with the real `epetsync serve` over PostgreSQL and writes on both
 * sides. (a) corruption injected at random moments while `monitor --fix` runs: the newest backup
 * is restored, the damaged file kept, and every row that had reached the server ends up in the
 * desktop file again; (b) another process holds a long write transaction: the monitor waits it
 * out without surfacing an error; (c) the database file deleted, or replaced by another file,
 * under the monitor: it stops with EPS_DB_REPLACED (exit 5), naming the path and the fix, and
 * neither recreates the file nor writes into the new one.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, renameSync, rmSync, unlinkSync, writeFileSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { corruptTablePage, hashFile } from '../db/fixtures.js';
import { runCli } from '../helpers/cli.js';
import { createTestDatabase, pgQuery, type TestDatabase } from '../helpers/pg.js';
import { createSyncAccount, startServeProcess, type ServeProcess } from '../helpers/server.js';
import { createDesktopDb, PG_SCHEMA, SQLITE_SCHEMA, USER } from '../sync/fixture.js';
import { CHAOS_SEED, chaosWorkDir, prng, recordFigures, registerSecret, scaled, startMonitorProcess, waitUntil, type MonitorProcess, saveServeOutput } from './kit.js';

const SEED = CHAOS_SEED + 4;
const CORRUPTIONS = scaled(1, 4);
const HOLDS = scaled(1, 4);
/** The default database.busy_timeout_ms: holds shorter than it are waited out inside the cycle. */
const BUSY_TIMEOUT_MS = 5000;
/** In the long run one hold outlasts the busy timeout: the cycle fails with SQLITE_BUSY and the loop retries it. */
const HOLD_PAST_TIMEOUT = scaled(-1, 2);
const SWAPS = scaled(['delete', 'rename-over'] as const, ['delete', 'rename-over', 'delete', 'rename-over', 'rename-over'] as const);
const started = Date.now();
/** Per case: generous, since the machine is shared; the short version normally takes seconds. */
const TIMEOUT = scaled(120_000, 300_000);

let pgdb: TestDatabase;
let serve: ServeProcess;
let serveDir: string;
const password = `local-faults-${randomBytes(12).toString('base64url')}`;
const streams: WriteStream[] = [];
/** Every work folder this file made. */
const dirs: string[] = [];
const children: ChildProcessWithoutNullStreams[] = [];
const figures = {
  faults: {} as Record<string, number>,
  rows: { desktop_written: 0, web_written: 0, lost: 0, duplicated: 0 },
  checks: {} as Record<string, number | string | boolean>,
};
const count = (kind: string): void => {
  figures.faults[kind] = (figures.faults[kind] ?? 0) + 1;
};

beforeAll(async () => {
  registerSecret(password);
  serveDir = chaosWorkDir('local-faults-serve');
  dirs.push(serveDir);
  pgdb = await createTestDatabase('eps_chaos_local');
  await pgQuery(pgdb.url, PG_SCHEMA);
  await createSyncAccount(pgdb.url, USER, password);
  serve = await startServeProcess({ databaseUrl: pgdb.url, args: ['--log-file', join(serveDir, 'serve.log')] });
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (serve) {
    await serve.stop();
    saveServeOutput(serve, serveDir);
  }
  for (const s of streams) await new Promise((r) => s.close(r));
  await pgdb?.drop();
  // Kept for the secret grep in a long run (and on request); a normal test run leaves nothing behind.
  if (!process.env.EPETSYNC_CHAOS_OUT && !process.env.EPETSYNC_CHAOS_KEEP) for (const d of dirs) rmSync(d, { recursive: true, force: true });
  recordFigures({
    part: 'local-faults',
    title: `desktop SQLite faults under monitor: ${CORRUPTIONS} corruption(s) with --fix, ${HOLDS} long write lock(s), ${SWAPS.length} file delete/replace`,
    seconds: Math.round((Date.now() - started) / 1000),
    faults: figures.faults,
    rows: figures.rows,
    checks: figures.checks,
  });
});

beforeEach(async () => {
  // Each case starts from empty tables; its fresh desktop file starts at the server's head.
  await pgQuery(pgdb.url, 'TRUNCATE clinic_vaccination, clinic_pet, clinic_owner, clinic_species RESTART IDENTITY');
});

/** A desktop folder: the SQLite file, its config (password from the environment) and its log, under a chaos work folder. */
interface Desk {
  dir: string;
  db: string;
  config: string;
  cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }>;
}

function makeDesk(name: string, node: string): Desk {
  const dir = chaosWorkDir(`local-faults-${name}`);
  dirs.push(dir);
  const db = createDesktopDb(dir);
  const config = join(dir, 'config.json');
  writeFileSync(
    config,
    JSON.stringify({
      database: { path: 'db.sqlite3', backup_dir: 'backups', real_time_sync: true },
      remote_database: { enabled: true, url: serve.url, username: USER, sync_interval: 5, auto_sync: true },
      sync: { node_id: node },
      logging: { file: join(dir, 'epetsync.log') },
    }),
  );
  let runs = 0;
  return {
    dir,
    db,
    config,
    async cli(args) {
      const r = await runCli(['--config', config, ...args], { cwd: dir, env: { EPETSYNC_PASSWORD: password } });
      runs += 1;
      writeFileSync(join(dir, `cli-${runs}-${args.join('_').replace(/[^\w-]/g, '')}.out`), r.stdout);
      writeFileSync(join(dir, `cli-${runs}-${args.join('_').replace(/[^\w-]/g, '')}.err`), r.stderr);
      return r;
    },
  };
}

function startMonitor(desk: Desk, args: string[] = []): Promise<MonitorProcess> {
  return startMonitorProcess({ config: desk.config, cwd: desk.dir, password, dir: desk.dir, name: 'monitor', streams, args, seed: SEED, track: (c) => children.push(c) });
}

const until = (check: () => boolean | Promise<boolean>, ms: number, describe?: () => string): Promise<number> => waitUntil(check, ms, describe, SEED);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const stamp = (): string => new Date().toISOString().slice(0, 19).replace('T', ' ');

/**
 * Writes owners on both sides until paused or stopped: the desktop through its own SQLite
 * connection (another process than the monitor, like the desktop app), the web app straight into
 * PostgreSQL. Each row carries a unique name, so lost and duplicated rows can be counted.
 */
class Writers {
  readonly desktop = new Set<string>();
  readonly web = new Set<string>();
  /** Desktop tags written while the file stayed healthy, with the time each was committed. */
  readonly desktopAt = new Map<string, number>();
  private desk: Database.Database | undefined;
  private n = 0;
  private running = true;
  private deskPaused = false;
  private webPaused = false;
  private loop: Promise<void>;

  constructor(private readonly dbPath: string, private readonly rand: () => number, private readonly tag: string) {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    while (this.running) {
      this.n += 1;
      const desktop = this.rand() < 0.5;
      if (desktop && !this.deskPaused) {
        this.desk ??= new Database(this.dbPath, { timeout: 15_000 });
        const name = `${this.tag}-desk-${this.n}`;
        this.desk.prepare('INSERT INTO clinic_owner (name, email, updated_at) VALUES (?, ?, ?)').run(name, `${name}@example.org`, stamp());
        this.desktop.add(name);
        this.desktopAt.set(name, Date.now());
        figures.rows.desktop_written += 1;
      } else if (!desktop && !this.webPaused) {
        const name = `${this.tag}-web-${this.n}`;
        try {
          await pgQuery(pgdb.url, 'INSERT INTO clinic_owner (name, email) VALUES ($1, $2)', [name, `${name}@example.org`]);
          this.web.add(name);
          figures.rows.web_written += 1;
        } catch (error) {
          // The web app's nextval raced a desktop row uploaded with the same id (the server moves the
          // sequence past it only as the upload commits): the web insert fails and writes nothing.
          if ((error as { code?: string }).code !== '23505') throw error;
          figures.checks['web inserts refused: id just taken by an uploaded desktop row'] = ((figures.checks['web inserts refused: id just taken by an uploaded desktop row'] as number | undefined) ?? 0) + 1;
        }
      }
      await sleep(50 + this.rand() * 150);
    }
  }

  /** Stops desktop writes and closes the connection (it must not keep the old file open across a restore). */
  pauseDesktop(): void {
    this.deskPaused = true;
    this.desk?.close();
    this.desk = undefined;
  }

  resumeDesktop(): void {
    this.deskPaused = false;
  }

  pauseWeb(): void {
    this.webPaused = true;
  }

  resumeWeb(): void {
    this.webPaused = false;
  }

  /** Waits until the loop is between two writes (a paused side writes nothing after this). */
  async settle(): Promise<void> {
    await sleep(250);
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    this.desk?.close();
    this.desk = undefined;
  }
}

type OwnerRow = { id: string; name: string; email: string | null };

async function remoteOwners(): Promise<OwnerRow[]> {
  return pgQuery<OwnerRow>(pgdb.url, 'SELECT id::text AS id, name, email FROM clinic_owner ORDER BY id');
}

function localOwners(path: string): OwnerRow[] {
  const db = new Database(path, { readonly: true, timeout: 15_000 });
  try {
    return db.prepare('SELECT CAST(id AS TEXT) AS id, name, email FROM clinic_owner ORDER BY id').all() as OwnerRow[];
  } finally {
    db.close();
  }
}

function pendingLocal(path: string): number {
  const db = new Database(path, { readonly: true, timeout: 15_000 });
  try {
    return Number((db.prepare('SELECT (SELECT count(*) FROM _epetsync_changelog) + (SELECT count(*) FROM _epetsync_outbox) AS n').get() as { n: number }).n);
  } finally {
    db.close();
  }
}

/** Compares both sides row for row; `expected` tags must be on both, nothing may appear twice. */
function compare(local: OwnerRow[], remote: OwnerRow[], expected: Iterable<string>): { equal: boolean; lost: string[]; duplicated: string[]; onlyLocal: string[]; onlyRemote: string[] } {
  const key = (r: OwnerRow): string => JSON.stringify(r);
  const l = new Set(local.map(key));
  const r = new Set(remote.map(key));
  const equal = local.length === remote.length && [...l].every((k) => r.has(k));
  const onlyLocal = [...l].filter((k) => !r.has(k)).slice(0, 10);
  const onlyRemote = [...r].filter((k) => !l.has(k)).slice(0, 10);
  const lost: string[] = [];
  const duplicated: string[] = [];
  for (const [side, rows] of [['desktop', local], ['web', remote]] as const) {
    const names = new Map<string, number>();
    for (const row of rows) names.set(row.name, (names.get(row.name) ?? 0) + 1);
    for (const [name, n] of names) if (n > 1) duplicated.push(`${name} ×${n} on the ${side}`);
    for (const tag of expected) if (!names.has(tag)) lost.push(`${tag} missing on the ${side}`);
  }
  return { equal, lost, duplicated, onlyLocal, onlyRemote };
}

/** Waits until both sides are equal row for row and hold every expected tag; returns the final comparison. */
async function converge(dbPath: string, expected: () => Iterable<string>, describe: () => string): Promise<ReturnType<typeof compare>> {
  let last = compare([], [], []);
  await until(async () => {
    last = compare(localOwners(dbPath), await remoteOwners(), expected());
    return last.equal && last.lost.length === 0;
  }, 90_000, () => `${JSON.stringify(last).slice(0, 1500)}\n${describe()}`);
  return last;
}

describe('local database faults', () => {
  it(`monitor --fix recovers from ${CORRUPTIONS} corruption(s) at random moments: backup restored, damaged file kept, nothing that reached the server lost`, async () => {
    const rand = prng(SEED);
    const desk = makeDesk('corrupt', 'chaos-corrupt-desk');
    expect((await desk.cli(['monitor', '--once'])).code, `seed ${SEED}`).toBe(0);
    const monitor = await startMonitor(desk, ['--fix']);
    const writers = new Writers(desk.db, prng(SEED + 1), 'c');
    /** Desktop rows that never reached the server before the file was damaged: they live on only in the kept damaged file. */
    const stranded = new Set<string>();
    const kept: string[] = [];
    try {
      for (let i = 0; i < CORRUPTIONS; i += 1) {
        await sleep(800 + rand() * 1500);
        const backup = await desk.cli(['backup']);
        expect(backup.code, `seed ${SEED}: ${backup.stderr}`).toBe(0);
        // Rows written after the backup and pushed before the damage must come back from the server.
        await sleep(800 + rand() * 2000);
        writers.pauseDesktop();
        writers.pauseWeb();
        await writers.settle();
        const table = rand() < 0.5 ? '_epetsync_changelog' : 'clinic_owner';
        const onServer = new Set((await remoteOwners()).map((r) => r.name));
        const restoredBefore = (monitor.stdout().match(/^Restored /gm) ?? []).length;
        corruptTablePage(desk.db, table);
        count(`corrupt-page:${table}`);
        for (const t of writers.desktop) if (!onServer.has(t)) stranded.add(t);
        // The desktop app commits on (a page the damage spared): the monitor's connection re-reads the file.
        const app = new Database(desk.db, { timeout: 15_000 });
        app.pragma(`user_version = ${i + 1}`);
        app.close();
        writers.resumeWeb();
        await until(() => (monitor.stdout().match(/^Restored /gm) ?? []).length > restoredBefore, 60_000, () => monitor.stdout() + monitor.stderr());
        const line = monitor.stdout().split('\n').filter((l) => l.startsWith('Restored ')).at(-1)!;
        const damaged = /damaged files kept: ([^,)]+)/.exec(line)?.[1];
        expect(damaged && existsSync(damaged), `seed ${SEED}: ${line}`).toBe(true);
        kept.push(damaged!);
        // Every row the server held before the damage is back in the desktop file once it re-synced.
        await until(() => {
          const local = new Set(localOwners(desk.db).map((r) => r.name));
          return [...onServer].every((t) => local.has(t));
        }, 60_000, () => `missing locally: ${[...onServer].filter((t) => !new Set(localOwners(desk.db).map((r) => r.name)).has(t)).join(', ')}\n${monitor.stdout().slice(-2000)}`);
        writers.resumeDesktop();
      }
      await sleep(1000);
    } finally {
      await writers.stop();
    }
    const expected = (): string[] => [...writers.web, ...[...writers.desktop].filter((t) => !stranded.has(t))];
    const final = await converge(desk.db, expected, () => monitor.stdout().slice(-2000));
    expect(monitor.child.exitCode, `seed ${SEED}`).toBeNull();
    monitor.child.kill('SIGTERM');
    expect(await monitor.exited).toBe(0);
    expect(monitor.stdout() + monitor.stderr()).not.toContain(password);
    // Stranded rows are in no live database: not resurrected, not half-applied.
    const remoteNames = new Set((await remoteOwners()).map((r) => r.name));
    expect([...stranded].filter((t) => remoteNames.has(t)), `seed ${SEED}`).toEqual([]);
    expect(readdirSync(desk.dir).filter((f) => f.includes('.replaced-') || f.includes('corrupt')).length).toBeGreaterThanOrEqual(kept.length);
    figures.rows.lost += final.lost.length;
    figures.rows.duplicated += final.duplicated.length;
    figures.checks['corruptions recovered from backup'] = kept.length;
    figures.checks['damaged files kept'] = kept.filter((k) => existsSync(k)).length;
    figures.checks['desktop rows only in a damaged file (never reached the server)'] = stranded.size;
    expect(final, `seed ${SEED}`).toMatchObject({ equal: true, lost: [], duplicated: [] });
  }, TIMEOUT);

  it(`waits out ${HOLDS} long write transaction(s) held by another process without surfacing an error`, async () => {
    const rand = prng(SEED + 10);
    const desk = makeDesk('lock', 'chaos-lock-desk');
    expect((await desk.cli(['monitor', '--once'])).code, `seed ${SEED}`).toBe(0);
    const monitor = await startMonitor(desk);
    const writers = new Writers(desk.db, prng(SEED + 11), 'l');
    let heldMs = 0;
    try {
      for (let i = 0; i < HOLDS; i += 1) {
        await sleep(500 + rand() * 1500);
        const holdMs = i === HOLD_PAST_TIMEOUT ? BUSY_TIMEOUT_MS + 3000 : Math.round(2000 + rand() * 2000);
        writers.pauseDesktop();
        // Another program (Python's sqlite3, like the desktop app) takes the write lock, writes, and sits on it.
        const name = `l-held-${i}`;
        const script = `
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
con.execute("BEGIN IMMEDIATE")
con.execute("INSERT INTO clinic_owner (name, email, updated_at) VALUES (?, ?, datetime('now'))", (sys.argv[2], sys.argv[2] + "@example.org"))
print("held", flush=True)
time.sleep(float(sys.argv[3]) / 1000)
con.execute("COMMIT")
con.close()
print("committed", flush=True)
`;
        const holder = spawn('python3', ['-c', script, desk.db, name, String(holdMs)], { stdio: ['ignore', 'pipe', 'pipe'] });
        let said = '';
        holder.stdout.on('data', (d: Buffer) => { said += d.toString(); });
        holder.stderr.on('data', (d: Buffer) => { said += d.toString(); });
        const done = new Promise<number | null>((resolve) => holder.on('close', resolve));
        await until(() => said.includes('held'), 15_000, () => said);
        count('write-lock-held');
        // While the lock is held, the web keeps writing: the monitor must pull and wait for the lock.
        await done;
        expect(said, `seed ${SEED}`).toContain('committed');
        heldMs += holdMs;
        writers.desktop.add(name);
        figures.rows.desktop_written += 1;
        writers.resumeDesktop();
      }
      await sleep(1000);
    } finally {
      await writers.stop();
    }
    const final = await converge(desk.db, () => [...writers.web, ...writers.desktop], () => monitor.stdout().slice(-2000));
    await until(() => pendingLocal(desk.db) === 0, 30_000);
    expect(monitor.child.exitCode, `seed ${SEED}`).toBeNull();
    monitor.child.kill('SIGTERM');
    expect(await monitor.exited).toBe(0);
    // Waited out, not surfaced: no failed cycle, no warning or error on the terminal. Past the busy
    // timeout the cycle fails as busy and is retried; nothing else.
    const failed = monitor.stdout().split('\n').filter((l) => /^\d\d:\d\d:\d\d +\w+ +failed /.test(l));
    if (HOLD_PAST_TIMEOUT < 0) expect(failed, `seed ${SEED}`).toEqual([]);
    else expect(failed.filter((l) => !/ failed (SQLITE_BUSY|EPS_DB_BUSY): /.test(l)), `seed ${SEED}`).toEqual([]);
    const warned = monitor.stderr().split('\n').filter((l) => l !== '' && !/^warn: SIGTERM received/.test(l));
    expect(warned.filter((l) => HOLD_PAST_TIMEOUT < 0 || !/^warn: sync cycle failed: database is locked; retrying$/.test(l)), `seed ${SEED}`).toEqual([]);
    figures.checks['cycles retried after a hold past the busy timeout'] = failed.length;
    figures.rows.lost += final.lost.length;
    figures.rows.duplicated += final.duplicated.length;
    figures.checks['write lock held by another process (s, total)'] = Math.round(heldMs / 1000);
    expect(final, `seed ${SEED}`).toMatchObject({ equal: true, lost: [], duplicated: [] });
  }, TIMEOUT);

  for (const [i, how] of SWAPS.entries()) {
    it(`stops safely when the database file is ${how === 'delete' ? 'deleted' : 'replaced by another file'} under it (${i + 1}/${SWAPS.length})`, async () => {
      const rand = prng(SEED + 20 + i);
      const desk = makeDesk(`swap-${how}`, `chaos-swap-desk-${i}`);
      expect((await desk.cli(['monitor', '--once'])).code, `seed ${SEED}`).toBe(0);
      const monitor = await startMonitor(desk);
      const writers = new Writers(desk.db, prng(SEED + 21 + i), `s${i}`);
      await sleep(1000 + rand() * 2000);
      writers.pauseDesktop();
      await writers.settle();
      let other: string | undefined;
      if (how === 'delete') {
        unlinkSync(desk.db);
      } else {
        // Another database (a copy of an older file) moved over the path, as a careless restore would.
        other = join(desk.dir, 'other.sqlite3');
        const o = new Database(other);
        o.exec(SQLITE_SCHEMA);
        o.prepare(`INSERT INTO clinic_species VALUES ('other', 'Another clinic database')`).run();
        o.close();
        renameSync(other, desk.db);
      }
      const replacedHash = how === 'delete' ? undefined : hashFile(desk.db);
      count(`database-file-${how}`);
      const code = await Promise.race([monitor.exited, sleep(30_000).then(() => 'still running' as const)]);
      await writers.stop();
      const out = monitor.stdout() + monitor.stderr();
      expect(code, `seed ${SEED}: ${out.slice(-2000)}`).toBe(5);
      const what = how === 'delete' ? 'was deleted' : 'was replaced by another file';
      expect(monitor.stderr(), `seed ${SEED}`).toContain(`Error: The database ${desk.db} ${what} while epetsync monitor was syncing it`);
      expect(monitor.stderr(), `seed ${SEED}`).toMatch(/\nTry: .*epetsync (restore|status)/);
      expect(out).not.toContain(password);
      expect(out).not.toMatch(/\n\s+at [\w.<>]+ \(/);
      // Nothing recreated in place of a deleted file; nothing written into the file moved in.
      if (how === 'delete') expect(existsSync(desk.db)).toBe(false);
      else expect(hashFile(desk.db)).toBe(replacedHash);
      expect(existsSync(`${desk.db}.epetsync.lock`)).toBe(false);
      figures.checks[`monitor stopped on ${how} (exit 5)`] = ((figures.checks[`monitor stopped on ${how} (exit 5)`] as number | undefined) ?? 0) + 1;
    }, TIMEOUT);
  }
});
