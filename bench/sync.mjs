// `npm run bench -- sync`: real-time latency both ways with `epetsync monitor` and real_time_sync on,
// and the time for a batch of changes made while the monitor was offline to converge.
// For profiling, not for published runs: EPETSYNC_BENCH_CPU_PROF=<dir> writes a V8 CPU profile of each
// monitor run there; EPETSYNC_BENCH_BATCH_SIZE=<n> sets the clinic config's sync.batch_size.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { BIN, PASSWORD, createBenchAccount, createBenchDatabase, dist, median, peakRssOf, pgQuery, quantile, startServer } from './lib.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The desktop side, as the Vet Portal writes: its own process, Python's sqlite3, one transaction per command line.
// Each line on stdin is "one <email>" (insert one owner) or "bulk <n>" (insert n owners in one transaction);
// it answers with the epoch milliseconds read right after COMMIT.
const WRITER = `
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
sql = "INSERT INTO clinic_owner (first_name, last_name, email, phone, is_active, balance, created_at) VALUES ('Bench', 'Writer', ?, NULL, 1, '0.00', '2026-11-25 04:00:00')"
for line in sys.stdin:
    kind, arg = line.split()
    con.execute("BEGIN")
    if kind == "one":
        con.execute(sql, [arg])
    else:
        con.executemany(sql, (["offline-%d@bench.invalid" % i] for i in range(int(arg))))
    con.execute("COMMIT")
    print(time.time() * 1000, flush=True)
`;

/** Starts the desktop writer process; write(line) resolves with the commit time it reports. */
function startWriter(dbPath) {
  const child = spawn('python3', ['-c', WRITER, dbPath], { stdio: ['pipe', 'pipe', 'pipe'] });
  let buffer = '';
  let waiting = null;
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  child.stdout.on('data', (d) => {
    buffer += d;
    const nl = buffer.indexOf('\n');
    if (nl >= 0 && waiting) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      const w = waiting;
      waiting = null;
      w(Number(line));
    }
  });
  return {
    write(line) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { if (waiting) reject(new Error(`desktop writer did not answer: ${stderr}`)); }, 120_000);
        waiting = (at) => { clearTimeout(timer); resolve(at); };
        child.stdin.write(`${line}\n`);
      });
    },
    stop() { child.stdin.end(); child.kill('SIGTERM'); },
  };
}

/** Spawns `epetsync monitor` and resolves once its first cycle line is printed. */
async function startMonitor(config, folder) {
  const profile = process.env.EPETSYNC_BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.EPETSYNC_BENCH_CPU_PROF}`] : [];
  const child = spawn(process.execPath, [...profile, BIN, '--config', config, 'monitor'], { cwd: folder, env: { ...process.env, NO_COLOR: '1', CI: 'true', EPETSYNC_PASSWORD: PASSWORD }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const exited = new Promise((resolve) => child.on('close', resolve));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(killer);
  };
  return { child, out: () => out, stop, started: Date.now() };
}

/** Returns the CPU seconds (user + system) a live process has used, or 0 when it is gone. */
function cpuSecondsOf(pid) {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    // utime and stime are fields 14 and 15 of /proc/<pid>/stat, in clock ticks (100 per second on Linux).
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/** Polls check every 10 ms; resolves with Date.now() when it holds, or null after timeoutMs. */
async function until(check, timeoutMs) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return Date.now();
    await sleep(10);
  }
  return null;
}

/** Summarises latencies (ms) as p50/p95/max, counting the ones that never arrived. */
function summary(samples) {
  const ok = samples.filter((s) => s !== null);
  return { n: samples.length, missed: samples.length - ok.length, p50: quantile(ok, 0.5), p95: quantile(ok, 0.95), max: ok.length ? Math.max(...ok) : null };
}

/** Runs the sync benchmark and returns its results. */
export async function benchSync({ commits, offlineRows, seed, log }) {
  const { DJANGO_POSTGRES_SCHEMA, generateClinicDatabase } = await dist('sync/generate.js');
  const db = await createBenchDatabase('sync');
  const folder = mkdtempSync(join(tmpdir(), 'epetsync-bench-sync-'));
  let server;
  let monitor;
  let writer;
  let local;
  try {
    for (const sql of DJANGO_POSTGRES_SCHEMA) await pgQuery(db.url, sql);
    await createBenchAccount(db.url);
    server = await startServer(db.url);
    const dbPath = join(folder, 'db.sqlite3');
    generateClinicDatabase(dbPath, { scale: 200, seed });
    const config = join(folder, 'config.json');
    writeFileSync(config, `${JSON.stringify({ database: { path: 'db.sqlite3', backup_dir: 'backups', real_time_sync: true }, remote_database: { enabled: true, url: server.url, username: 'frontdesk' }, ...(process.env.EPETSYNC_BENCH_BATCH_SIZE ? { sync: { batch_size: Number(process.env.EPETSYNC_BENCH_BATCH_SIZE) } } : {}), logging: { file: join(folder, 'epetsync.log') } }, null, 2)}\n`);
    const env = { ...process.env, NO_COLOR: '1', CI: 'true', EPETSYNC_PASSWORD: PASSWORD };
    const { execFileSync } = await import('node:child_process');
    execFileSync(process.execPath, [BIN, '--config', config, 'migrate'], { env, stdio: 'ignore', timeout: 120_000 });
    execFileSync(process.execPath, [BIN, '--config', config, 'monitor', '--once'], { env, stdio: 'ignore', timeout: 120_000 });

    monitor = await startMonitor(config, folder);
    if ((await until(() => /start\s+pushed/.test(monitor.out()), 20_000)) === null) throw new Error(`monitor did not complete its first cycle: ${monitor.out()}`);
    writer = startWriter(dbPath);
    const pgClient = new pg.Client({ connectionString: db.url });
    await pgClient.connect();
    local = new Database(dbPath, { readonly: true, timeout: 5000 });
    const seen = (sql, p) => { try { return local.prepare(sql).get(p) !== undefined; } catch { return false; } };
    try {
      log(`sync: ${commits} single-row commits desktop -> PostgreSQL`);
      const push = [];
      for (let i = 0; i < commits; i += 1) {
        const email = `rt-${i}@bench.invalid`;
        const committedAt = await writer.write(`one ${email}`);
        const at = await until(async () => (await pgClient.query('SELECT 1 FROM clinic_owner WHERE email = $1', [email])).rowCount === 1, 10_000);
        push.push(at === null ? null : at - committedAt);
      }
      log(`sync: ${commits} single-row commits PostgreSQL -> desktop`);
      const pull = [];
      for (let i = 0; i < commits; i += 1) {
        const email = `web-${i}@bench.invalid`;
        await pgClient.query(`INSERT INTO clinic_owner (id, first_name, last_name, email, phone, is_active, balance, created_at) VALUES ($1, 'Bench', 'Web', $2, NULL, true, 0, now())`, [900_000_000 + i, email]);
        const committedAt = Date.now();
        const at = await until(() => seen('SELECT 1 FROM clinic_owner WHERE email = ?', email), 10_000);
        pull.push(at === null ? null : at - committedAt);
      }
      const monitorRss = peakRssOf(monitor.child.pid);
      await monitor.stop();
      monitor = undefined;

      log(`sync: ${offlineRows} rows inserted on the desktop while the monitor is stopped`);
      await writer.write(`bulk ${offlineRows}`);
      monitor = await startMonitor(config, folder);
      // CPU each part spends on the catch-up (a shared machine's load stretches wall time, not this).
      const backends = async () => (await pgClient.query(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)).rows.map((r) => r.pid);
      const serverCpu0 = cpuSecondsOf(server.pid);
      const pgCpu0 = new Map((await backends()).map((pid) => [pid, cpuSecondsOf(pid)]));
      const arrived = async () => Number((await pgClient.query(`SELECT count(*)::int AS n FROM clinic_owner WHERE email LIKE 'offline-%'`)).rows[0].n);
      // How far it got by the 10 s target, then how long the whole batch takes (bounded).
      await until(async () => (await arrived()) === offlineRows || Date.now() - monitor.started >= 10_000, 15_000);
      const arrivedAt10s = await arrived();
      const converged = await until(async () => (await arrived()) === offlineRows, 300_000);
      const arrivedAtEnd = await arrived();
      const pgCpu = (await backends()).reduce((sum, pid) => sum + cpuSecondsOf(pid) - (pgCpu0.get(pid) ?? 0), 0);
      log(`sync: catch-up CPU seconds: monitor ${cpuSecondsOf(monitor.child.pid).toFixed(1)} (start-up included), server ${(cpuSecondsOf(server.pid) - serverCpu0).toFixed(1)}, PostgreSQL backends of the server ${pgCpu.toFixed(1)}`);
      if (converged === null) log(`monitor output at give-up (last 20 lines):\n${monitor.out().trim().split('\n').slice(-20).join('\n')}`);
      const catchUpRss = peakRssOf(monitor.child.pid);
      return {
        commits,
        offlineRows,
        push: summary(push),
        pull: summary(pull),
        arrivedAt10s,
        arrivedAtEnd,
        catchUpSeconds: converged === null ? null : (converged - monitor.started) / 1000,
        rss: { monitor: monitorRss, catchUpMonitor: catchUpRss, server: server.peakRssMb() },
        medianPush: median(push),
      };
    } finally {
      await pgClient.end();
    }
  } finally {
    local?.close();
    writer?.stop();
    await monitor?.stop();
    await server?.stop();
    await db.drop();
    rmSync(folder, { recursive: true, force: true });
  }
}
