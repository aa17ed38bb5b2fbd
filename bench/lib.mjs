// Shared plumbing of the benchmark harness: measured child processes, fresh PostgreSQL databases, statistics.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

/** Absolute path of the repository root. */
export const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Absolute path of the built launcher, run as a user would run it. */
export const BIN = join(ROOT, 'bin', 'epetsync.js');

/** Returns the admin connection string from the standard PG* variables (default 127.0.0.1:5432, user postgres). */
export function pgUrl(database = 'postgres') {
  const host = process.env.PGHOST ?? '127.0.0.1';
  const port = process.env.PGPORT ?? '5432';
  const user = process.env.PGUSER ?? 'postgres';
  return `postgres://${encodeURIComponent(user)}@${host}:${port}/${database}`;
}

/** Runs one query on a short-lived connection. */
export async function pgQuery(url, text, params = []) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(text, params)).rows;
  } finally {
    await c.end();
  }
}

/** Creates a fresh bench_* database and returns its name, url and a drop function. */
export async function createBenchDatabase(label) {
  const name = `bench_${label}_${Date.now().toString(36)}_${randomBytes(2).toString('hex')}`;
  await pgQuery(pgUrl(), `CREATE DATABASE "${name}"`);
  return { name, url: pgUrl(name), drop: () => pgQuery(pgUrl(), `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`) };
}

/** Parses GNU time's -v report into wall seconds and peak RSS in MB. */
function parseTimeReport(path) {
  const text = readFileSync(path, 'utf8');
  const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(text);
  return { peakRssMb: rss ? Number(rss[1]) / 1024 : null };
}

/**
 * Runs a command under /usr/bin/time -v, bounded by timeoutMs, and resolves with its exit code, output,
 * wall seconds (measured here, around the whole child) and peak RSS (from the kernel via time -v).
 */
export function measure(command, args, { env, timeoutMs = 30 * 60_000, input } = {}) {
  const report = join(tmpdir(), `bench-time-${process.pid}-${randomBytes(4).toString('hex')}.txt`);
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn('/usr/bin/time', ['-v', '-o', report, command, ...args], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    // Killing /usr/bin/time alone would orphan the measured process, so kill its children first.
    const timer = setTimeout(() => {
      let children = [];
      try { children = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch { /* already gone */ }
      for (const pid of children) { try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ } }
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const wallSeconds = Number(process.hrtime.bigint() - started) / 1e9;
      let peak = { peakRssMb: null };
      try { peak = parseTimeReport(report); } catch { /* no report when killed */ }
      rmSync(report, { force: true });
      resolve({ code, stdout, stderr, wallSeconds, ...peak });
    });
    child.stdin.end(input ?? '');
  });
}

/** Returns the peak RSS in MB a live process reached so far (VmHWM), or null when it is gone. */
export function peakRssOf(pid) {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

/** Spawns `epetsync serve` on 127.0.0.1 for a database and resolves once it listens; stop() ends it (SIGKILL after 15 s). */
export function startServer(databaseUrl, { timeoutMs = 30_000, nodeArgs = [] } = {}) {
  const child = spawn(process.execPath, [...nodeArgs, BIN, 'serve', '--host', '127.0.0.1', '--port', '0', '--database-url', databaseUrl], {
    env: { ...process.env, NO_COLOR: '1', CI: 'true' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on('close', resolve));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(killer);
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { void stop(); reject(new Error(`serve did not listen within ${timeoutMs} ms: ${stderr}`)); }, timeoutMs);
    child.stdout.on('data', () => {
      const m = /Listening on (http:\/\/\S+)/.exec(stdout);
      if (!m) return;
      clearTimeout(timer);
      resolve({ url: m[1], pid: child.pid, stop, peakRssMb: () => peakRssOf(child.pid), output: () => ({ stdout, stderr }) });
    });
    void exited.then((code) => { clearTimeout(timer); reject(new Error(`serve exited with ${code} before listening: ${stderr}`)); });
  });
}

/** Returns the median of a list of numbers (null entries ignored), or null for none. */
export function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** Returns the q-quantile (0..1) of a list of numbers by nearest rank. */
export function quantile(values, q) {
  const v = [...values].sort((a, b) => a - b);
  if (v.length === 0) return null;
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil(q * v.length) - 1))];
}

/** Returns the first line of a command's --version style output, or 'not installed'. */
export function versionOf(command, args = ['--version']) {
  const r = spawnSync(command, args, { encoding: 'utf8' });
  if (r.error || r.status !== 0) return 'not installed';
  return (r.stdout || r.stderr).trim().split('\n')[0];
}

/** Installs pgloader from Debian when it is missing, saying so on stderr; throws when it cannot. */
export function ensurePgloader() {
  if (spawnSync('sh', ['-c', 'command -v pgloader'], { stdio: 'ignore' }).status === 0) return;
  process.stderr.write('pgloader is missing: installing it with apt-get update && apt-get install -y pgloader\n');
  const sudo = process.getuid?.() === 0 ? [] : ['sudo'];
  const run = (args) => {
    const r = spawnSync(sudo[0] ?? args[0], sudo.length ? args : args.slice(1), { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    if (r.status !== 0) throw new Error(`${args.join(' ')} failed (exit ${r.status})`);
  };
  run(['apt-get', 'update']);
  run(['apt-get', 'install', '-y', 'pgloader']);
  process.stderr.write(`pgloader installed: ${versionOf('pgloader')}\n`);
}

/** Imports a module of the built epetsync (dist/), e.g. `dist('server/auth/index.js')`. */
export const dist = (p) => import(new URL(`../dist/${p}`, import.meta.url).href);

/** The bench account's password (loopback-only throwaway databases). */
export const PASSWORD = 'bench horse battery staple';

/** Installs epetsync's account tables in the database at `url` and creates the bench account `frontdesk`. */
export async function createBenchAccount(url) {
  const { installAuthSchema, createAccount } = await dist('server/auth/index.js');
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const executor = { async query(text, params) { const r = await c.query(text, params); return { rows: r.rows, rowCount: r.rowCount ?? 0 }; } };
    await installAuthSchema(executor);
    await createAccount(executor, 'frontdesk', PASSWORD);
  } finally {
    await c.end();
  }
}

