/**
 * Reliability part 3 (docs/reliability.md): PostgreSQL restarts. A private cluster (initdb in a
 * temp folder, its own port) is stopped and started again while the real `epetsync serve` and a
 * real `epetsync monitor` sync a stream of writes made on both sides. Nobody touches the server
 * or the monitor: the pool must reconnect, the LISTEN connection must listen again, `/readyz`
 * must go 503 and back to 200, the monitor must say clearly what is wrong and carry on, and at
 * the end both databases hold the same rows, none lost and none twice.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { startPrivatePg, type PrivatePg } from '../helpers/private-pg.js';
import { createSyncAccount, startServeProcess, type ServeProcess } from '../helpers/server.js';
import { createDesktopDb, PG_SCHEMA, USER } from '../sync/fixture.js';
import { CHAOS_SEED, chaosWorkDir, prng, recordFigures, registerSecret, scaled, startMonitorProcess, waitUntil, type MonitorProcess, saveServeOutput } from './kit.js';

const SEED = CHAOS_SEED + 3;
const RESTARTS = scaled(1, 8);
/** In the long run one outage outlasts the client's own retries (4 × Retry-After 5 s), so a whole monitor cycle fails and is retried by the loop. */
const LONG_OUTAGE = scaled(-1, 3);
const started = Date.now();

let work: string;
let cluster: PrivatePg;
let dbUrl: string;
let serve: ServeProcess;
let dbPath: string;
let config: string;
const password = `pg-restart-${randomBytes(12).toString('base64url')}`;
const streams: WriteStream[] = [];

beforeAll(async () => {
  registerSecret(password);
  work = chaosWorkDir('postgres-restart');
  cluster = await startPrivatePg({ prefix: 'epetsync-chaos-pg' });
  dbUrl = await cluster.createDatabase('clinic');
  await cluster.query(PG_SCHEMA, [], 'clinic');
  await createSyncAccount(dbUrl, USER, password);
  serve = await startServeProcess({ databaseUrl: dbUrl, args: ['--log-file', join(work, 'serve.log')] });
  dbPath = createDesktopDb(work);
  config = join(work, 'config.json');
  writeFileSync(
    config,
    JSON.stringify({
      database: { path: 'db.sqlite3', backup_dir: 'backups', real_time_sync: true },
      remote_database: { enabled: true, url: serve.url, username: USER, sync_interval: 5, auto_sync: true },
      sync: { node_id: 'chaos-pg-desk' },
      logging: { file: join(work, 'monitor.log') },
    }),
  );
});

afterAll(async () => {
  if (serve) {
    await serve.stop();
    saveServeOutput(serve, work);
  }
  if (cluster) {
    // The cluster's own log holds no secret (trust authentication); keep it with the part's files.
    try {
      writeFileSync(join(work, 'postgres.log'), readFileSync(cluster.logFile, 'utf8'));
    } catch {
      // No log written.
    }
    await cluster.remove();
  }
  // Kept for the secret grep in a long run (and on request); a normal test run leaves nothing behind.
  for (const s of streams) await new Promise((r) => s.close(r));
  if (work && !process.env.EPETSYNC_CHAOS_OUT && !process.env.EPETSYNC_CHAOS_KEEP) rmSync(work, { recursive: true, force: true });
});

function startMonitor(name: string): Promise<MonitorProcess> {
  return startMonitorProcess({ config, cwd: work, password, dir: work, name, streams, seed: SEED });
}

const until = (check: () => boolean | Promise<boolean>, ms: number, describe?: () => string): Promise<number> => waitUntil(check, ms, describe, SEED);

async function readyz(): Promise<number> {
  try {
    const res = await fetch(new URL('/readyz', serve.url), { signal: AbortSignal.timeout(10_000) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

/** Counts the server's connections whose last statement was its LISTEN (the connection that wakes long polls). */
async function listeners(): Promise<number> {
  const rows = await cluster.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'epetsync-serve' AND query ILIKE 'LISTEN%'`,
  );
  return rows[0]!.n;
}

/** What each side wrote: the values a row may hold at the end (an ambiguous web write may or may not have committed). */
interface Written {
  /** tag → acceptable final emails; absent = the row must not exist */
  desktop: Map<string, Set<string>>;
  web: Map<string, Set<string>>;
  /** Web tags whose INSERT failed with an unknown outcome: they must be on both sides or on neither. */
  webMaybe: Set<string>;
  desktopWrites: number;
  webWrites: number;
  webFailures: number;
}

/**
 * Writes owners on both sides until stopped: the desktop through its own SQLite connection (a
 * separate process from the monitor), the web app straight into PostgreSQL, inserts and edits of
 * its own rows only, so the expected end state is known without conflict rules.
 */
function startWriters(rand: () => number, written: Written): { stop(): Promise<void> } {
  const desk = new Database(dbPath, { timeout: 10_000 });
  let web: pg.Client | undefined;
  let stopped = false;
  let n = 0;
  const webClient = async (): Promise<pg.Client> => {
    if (web) return web;
    const c = new pg.Client({ connectionString: dbUrl, connectionTimeoutMillis: 2000 });
    c.on('error', () => {
      // The server went away under an idle client: the next write reconnects.
      if (web === c) web = undefined;
    });
    await c.connect();
    web = c;
    return c;
  };
  const stamp = (): string => new Date().toISOString().slice(0, 19).replace('T', ' ');
  const loop = (async () => {
    while (!stopped) {
      n += 1;
      const side = rand() < 0.5 ? 'desktop' : 'web';
      const own = side === 'desktop' ? written.desktop : written.web;
      const edit = own.size > 3 && rand() < 0.3;
      const tag = edit ? [...own.keys()][Math.floor(rand() * own.size)]! : `${side === 'desktop' ? 'desk' : 'web'}-${n}`;
      const email = `${tag}.${n}@example.org`;
      if (side === 'desktop') {
        if (edit) desk.prepare('UPDATE clinic_owner SET email = ?, updated_at = ? WHERE name = ?').run(email, stamp(), tag);
        else desk.prepare('INSERT INTO clinic_owner (name, email, updated_at) VALUES (?, ?, ?)').run(tag, email, stamp());
        written.desktop.set(tag, new Set([email]));
        written.desktopWrites += 1;
      } else {
        try {
          const c = await webClient();
          if (edit) await c.query('UPDATE clinic_owner SET email = $1, updated_at = now() WHERE name = $2', [email, tag]);
          else await c.query('INSERT INTO clinic_owner (name, email) VALUES ($1, $2)', [tag, email]);
          written.web.set(tag, new Set([email]));
          written.webMaybe.delete(tag);
          written.webWrites += 1;
        } catch {
          // The outcome is unknown when the connection died around the commit: both endings are acceptable.
          written.webFailures += 1;
          if (edit) written.web.get(tag)!.add(email);
          else written.webMaybe.add(tag);
          const c = web;
          web = undefined;
          await c?.end().catch(() => {});
        }
      }
      await new Promise((r) => setTimeout(r, 60 + rand() * 140));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      desk.close();
      await web?.end().catch(() => {});
    },
  };
}

type OwnerRow = { id: string; name: string; email: string | null; updated_at: string };

async function remoteOwners(): Promise<OwnerRow[]> {
  return cluster.query<OwnerRow>(
    `SELECT id::text AS id, name, email, to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS updated_at FROM clinic_owner ORDER BY id`,
    [],
    'clinic',
  );
}

function localOwners(): OwnerRow[] {
  const db = new Database(dbPath, { readonly: true, timeout: 10_000 });
  try {
    const rows = db.prepare('SELECT CAST(id AS TEXT) AS id, name, email, updated_at FROM clinic_owner ORDER BY id').all() as OwnerRow[];
    // SQLite keeps Django's spelling (fraction only when present); PostgreSQL's text always has six digits.
    return rows.map((r) => ({ ...r, updated_at: /\.\d+$/.test(r.updated_at) ? r.updated_at.replace(/\.(\d+)$/, (_m, f: string) => `.${f.padEnd(6, '0')}`) : `${r.updated_at}.000000` }));
  } finally {
    db.close();
  }
}

/** Compares the two sides row for row and against what was written; returns the counts the report needs. */
function compare(local: OwnerRow[], remote: OwnerRow[], written: Written): { equal: boolean; lost: string[]; duplicated: string[]; wrong: string[] } {
  const key = (r: OwnerRow): string => JSON.stringify(r);
  const remoteKeys = new Set(remote.map(key));
  const localKeys = new Set(local.map(key));
  const equal = local.length === remote.length && local.every((r) => remoteKeys.has(key(r))) && remote.every((r) => localKeys.has(key(r)));
  const lost: string[] = [];
  const duplicated: string[] = [];
  const wrong: string[] = [];
  for (const [side, rows] of [['desktop', local], ['web', remote]] as const) {
    const byName = new Map<string, OwnerRow[]>();
    for (const r of rows) byName.set(r.name, [...(byName.get(r.name) ?? []), r]);
    for (const [name, list] of byName) if (list.length > 1) duplicated.push(`${name} ×${list.length} on the ${side}`);
    for (const [tag, emails] of [...written.desktop, ...written.web]) {
      const found = byName.get(tag);
      if (!found) lost.push(`${tag} missing on the ${side}`);
      else if (!found.some((r) => r.email !== null && emails.has(r.email))) wrong.push(`${tag} on the ${side} holds ${found.map((r) => r.email).join(',')}`);
    }
    for (const name of byName.keys()) {
      if (!written.desktop.has(name) && !written.web.has(name) && !written.webMaybe.has(name)) wrong.push(`${name} on the ${side} was never written`);
    }
  }
  return { equal, lost, duplicated, wrong };
}

describe('PostgreSQL restarts', () => {
  it(`serve and monitor recover by themselves from ${RESTARTS} PostgreSQL restart(s) mid-sync; both sides end equal`, async () => {
    const rand = prng(SEED);
    // The first cycle installs change capture and starts the cursor at the server's head.
    const first = await runCli(['--config', config, 'monitor', '--once'], { cwd: work, env: { EPETSYNC_PASSWORD: password } });
    expect(first, `seed ${SEED}: ${first.stderr}`).toMatchObject({ code: 0 });
    const monitor = await startMonitor('monitor');
    await until(async () => (await listeners()) === 1, 15_000, () => 'the server never issued its LISTEN');
    expect(await readyz()).toBe(200);

    const written: Written = { desktop: new Map(), web: new Map(), webMaybe: new Set(), desktopWrites: 0, webWrites: 0, webFailures: 0 };
    const writers = startWriters(prng(SEED + 1), written);
    const restarts = { fast: 0, immediate: 0 };
    const outages: Array<{ mode: string; downMs: number; readyzBackMs: number; relistenMs: number }> = [];
    try {
      for (let i = 0; i < RESTARTS; i += 1) {
        // Let sync run (and rows flow both ways) before each outage.
        await new Promise((r) => setTimeout(r, 1500 + rand() * 2500));
        const mode = i === 0 ? 'fast' : rand() < 0.5 ? 'fast' : 'immediate';
        const stderrBefore = monitor.stderr().length;
        const stdoutBefore = monitor.stdout().length;
        await cluster.stop(mode);
        restarts[mode] += 1;
        const down = Date.now();
        await until(async () => (await readyz()) === 503, 15_000, () => `readyz did not answer 503 with PostgreSQL down (${mode})`);
        // Down long enough for the monitor's requests and the server's reconnects to fail.
        const downFor = i === LONG_OUTAGE ? 28_000 : 2000 + rand() * 3000;
        await new Promise((r) => setTimeout(r, Math.max(0, downFor - (Date.now() - down))));
        // The monitor said what is wrong and is still running.
        await until(() => /DATABASE_UNAVAILABLE|PostgreSQL/.test(monitor.stderr().slice(stderrBefore) + monitor.stdout().slice(stdoutBefore)), 15_000, () => monitor.stdout() + monitor.stderr());
        expect(monitor.child.exitCode, `seed ${SEED}: the monitor exited while PostgreSQL was down`).toBeNull();
        await cluster.start();
        const back = Date.now();
        const readyzBackMs = await until(async () => (await readyz()) === 200, 30_000, () => 'readyz did not come back to 200');
        const relistenMs = await until(async () => (await listeners()) === 1, 30_000, () => 'the server did not LISTEN again after the restart');
        outages.push({ mode, downMs: back - down, readyzBackMs, relistenMs });
        if (i === LONG_OUTAGE) {
          // The cycle that outlived the client's retries is reported as failed and retried, not fatal.
          await until(() => /failed EPS_SERVER_ERROR: The server answered 503 DATABASE_UNAVAILABLE .*\(retry in \d+ s\)/.test(monitor.stdout()), 30_000, () => monitor.stdout());
        }
      }
      // Keep writing a little after the last restart: sync must have carried on, not merely caught up once.
      await new Promise((r) => setTimeout(r, 2000));
    } finally {
      await writers.stop();
    }

    // Converged: equal row for row, with what each side wrote.
    let last = compare([], [], written);
    await until(async () => {
      last = compare(localOwners(), await remoteOwners(), written);
      return last.equal && last.lost.length === 0 && last.wrong.length === 0;
    }, 120_000, () => JSON.stringify({ ...last, monitor: monitor.stdout().slice(-2000) }));
    expect(monitor.child.exitCode, `seed ${SEED}`).toBeNull();
    expect(last.duplicated, `seed ${SEED}`).toEqual([]);

    // What the monitor said while PostgreSQL was down: the server's own words, no stack trace, no secret.
    const said = monitor.stdout() + monitor.stderr();
    expect(said).toMatch(/503 DATABASE_UNAVAILABLE|cannot reach its PostgreSQL/);
    expect(said).not.toMatch(/\n\s+at [\w.<>]+ \(/);
    expect(said).not.toContain(password);
    expect(serve.child.exitCode, `seed ${SEED}: serve exited`).toBeNull();

    monitor.child.kill('SIGTERM');
    expect(await monitor.exited).toBe(0);

    const local = localOwners();
    const remote = await remoteOwners();
    const final = compare(local, remote, written);
    const ambiguous = [...written.webMaybe].filter((t) => remote.some((r) => r.name === t));
    const figures = {
      part: 'postgres-restart',
      title: `PostgreSQL stopped and started ${RESTARTS}× under serve + monitor, writes on both sides`,
      seconds: Math.round((Date.now() - started) / 1000),
      faults: { 'postgres-stop-fast': restarts.fast, 'postgres-stop-immediate': restarts.immediate },
      restarts: { postgresql: RESTARTS },
      rows: { desktop_written: written.desktopWrites, web_written: written.webWrites + ambiguous.length, lost: final.lost.length, duplicated: final.duplicated.length },
      checks: {
        'rows at the end (each side)': remote.length,
        'readyz 503 while down, 200 after': `${outages.length}/${RESTARTS}`,
        'LISTEN re-issued after restart': `${outages.length}/${RESTARTS}`,
        'web writes refused while down': written.webFailures,
        'monitor cycles failed and retried': (said.match(/ failed EPS_/g) ?? []).length,
        'longest outage ms': Math.max(...outages.map((o) => o.downMs)),
        'slowest readyz recovery ms': Math.max(...outages.map((o) => o.readyzBackMs)),
        'slowest re-LISTEN ms': Math.max(...outages.map((o) => o.relistenMs)),
      },
    };
    recordFigures(figures);
    console.log(`postgres-restart (seed ${SEED}): ${JSON.stringify({ outages, rows: figures.rows })}`);
    expect(final, `seed ${SEED}`).toMatchObject({ equal: true, lost: [], duplicated: [], wrong: [] });
  });
});
