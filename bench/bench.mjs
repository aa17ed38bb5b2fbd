// The benchmark harness (issue 8): `npm run bench -- migrate --scale N [--repeat 3] [--no-report]`.
// Runs against the BUILT binary (`npm run build` first) and a real PostgreSQL on 127.0.0.1.
// Every contender gets a fresh bench_* database per repetition; every child is ended in a finally.
import { execSync } from 'node:child_process';
import { appendFileSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, freemem, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { BIN, PASSWORD, ROOT, createBenchAccount, createBenchDatabase, dist, ensurePgloader, measure, median, pgQuery, pgUrl, startServer, versionOf } from './lib.mjs';

const ROWS_PER_BENCH_SCALE = 20_000;

const USAGE = `Usage: npm run bench -- <migrate|sync> [options]

  migrate   epetsync migrate (through epetsync serve) vs raw CSV + psql \\copy vs pgloader,
            plus --help and diagnose start-up times
  sync      epetsync monitor in real time: single-row commits each way, time until visible on the
            other side (p50/p95/max); rows changed while offline, time to converge

Options:
  --scale <n>     data size: scale 1 is about 20k rows, 100 about 2M (default 1)
  --repeat <n>    repetitions per contender, medians reported (default 3, at least 3)
  --seed <n>      generator seed (default 1)
  --commits <n>   sync: single-row commits per direction (default 200)
  --offline <n>   sync: rows inserted while the monitor is stopped (default 100000)
  --no-report     print the table but do not append it to docs/benchmarks.md
  --only <list>   migrate: run only these contenders (comma-separated: copy,epetsync,pgloader);
                  a partial run is never appended to docs/benchmarks.md
  --cpu-prof <d>  migrate: write V8 CPU profiles of the epetsync client and server into folder d
`;

/** Parses argv into the subcommand and its options. */
function parseArgs(argv) {
  const opts = { command: argv[0], scale: 1, repeat: 3, seed: 1, report: true, commits: 200, offline: 100_000, only: null, cpuProf: null };
  for (let i = 1; i < argv.length; i += 1) {
    const a = argv[i];
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1) throw new Error(`${a} needs a whole number >= 1`);
      return v;
    };
    if (a === '--scale') opts.scale = num();
    else if (a === '--repeat') opts.repeat = num();
    else if (a === '--seed') opts.seed = num();
    else if (a === '--commits') opts.commits = num();
    else if (a === '--offline') opts.offline = num();
    else if (a === '--no-report') opts.report = false;
    else if (a === '--only') {
      opts.only = new Set(String(argv[++i] ?? '').split(',').filter(Boolean));
      const unknown = [...opts.only].filter((c) => !['copy', 'epetsync', 'pgloader'].includes(c));
      if (opts.only.size === 0 || unknown.length > 0) throw new Error(`--only takes copy, epetsync and/or pgloader, comma-separated${unknown.length ? ` (not ${unknown.join(', ')})` : ''}`);
    } else if (a === '--cpu-prof') {
      opts.cpuProf = argv[++i];
      if (!opts.cpuProf) throw new Error('--cpu-prof needs a folder');
    }
    else throw new Error(`unknown option ${a}`);
  }
  if (opts.repeat < 3) throw new Error('--repeat must be at least 3: medians of fewer runs say little');
  // A partial or profiled run measures something else than the published comparison.
  if (opts.only || opts.cpuProf) opts.report = false;
  return opts;
}


/** Generates the clinic database once per run; bench scale 1 ≈ 20k rows (the generator's scale counts owners, ~10 rows each). */
async function generateTemplate(dir, scale, seed) {
  const { generateClinicDatabase } = await dist('sync/generate.js');
  const probe = join(dir, 'probe.sqlite3');
  const perOwner = generateClinicDatabase(probe, { scale: 1000, seed }).totalRows / 1000;
  rmSync(probe);
  const owners = Math.round((scale * ROWS_PER_BENCH_SCALE) / perOwner);
  const path = join(dir, 'template.sqlite3');
  const started = Date.now();
  const result = generateClinicDatabase(path, { scale: owners, seed });
  log(`generated ${result.totalRows} rows (${owners} owners, seed ${seed}) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return { path, owners, totalRows: result.totalRows };
}

/** Creates the Django schema in a fresh database. */
async function freshDjangoDatabase(label) {
  const { DJANGO_POSTGRES_SCHEMA } = await dist('sync/generate.js');
  const db = await createBenchDatabase(label);
  for (const sql of DJANGO_POSTGRES_SCHEMA) await pgQuery(db.url, sql);
  return db;
}

/** Counts the clinic tables' rows in PostgreSQL, in all and per table. */
async function countRows(url, tables) {
  const perTable = {};
  for (const t of tables) perTable[t] = Number((await pgQuery(url, `SELECT count(*)::bigint AS n FROM "${t}"`))[0].n);
  return Object.assign(Object.values(perTable).reduce((a, b) => a + b, 0), { perTable });
}

/** Runs `epetsync migrate` against `epetsync serve` on a fresh database; optionally times diagnose on that healthy setup. */
async function runEpetsync(template, tables, work, diagnoseRuns, cpuProf = null) {
  const db = await freshDjangoDatabase('eps');
  let server;
  const folder = mkdtempSync(join(work, 'clinic-'));
  try {
    await createBenchAccount(db.url);
    const profile = cpuProf ? ['--cpu-prof', '--cpu-prof-dir', cpuProf] : [];
    server = await startServer(db.url, { nodeArgs: profile });
    copyFileSync(template, join(folder, 'db.sqlite3'));
    const config = join(folder, 'config.json');
    writeFileSync(config, `${JSON.stringify({ database: { path: 'db.sqlite3', backup_dir: 'backups' }, remote_database: { enabled: true, url: server.url, username: 'frontdesk' }, logging: { file: join(folder, 'epetsync.log') } }, null, 2)}\n`);
    const env = { EPETSYNC_PASSWORD: PASSWORD, NO_COLOR: '1', CI: 'true' };
    const run = await measure(process.execPath, [...profile, BIN, '--config', config, '--json', 'migrate'], { env });
    if (run.code !== 0) throw new Error(`epetsync migrate exited ${run.code}: ${run.stdout.slice(0, 2000)} ${run.stderr.slice(0, 2000)}`);
    const serverRss = server.peakRssMb();
    const counted = await countRows(db.url, tables);
    const rows = Number(counted);
    const diagnose = [];
    for (let i = 0; i < diagnoseRuns; i += 1) {
      const d = await measure(process.execPath, [BIN, '--config', config, 'diagnose'], { env, timeoutMs: 60_000 });
      diagnose.push({ ms: d.wallSeconds * 1000, code: d.code, output: d.stdout + d.stderr });
    }
    return { wallSeconds: run.wallSeconds, rows, rss: { client: run.peakRssMb, server: serverRss }, diagnose };
  } finally {
    await server?.stop();
    await db.drop();
    rmSync(folder, { recursive: true, force: true });
  }
}

/** Runs the raw baseline: each table exported from SQLite as CSV, loaded with psql \copy in one transaction. */
async function runCopy(template, tables, work) {
  const db = await freshDjangoDatabase('copy');
  const dir = mkdtempSync(join(work, 'csv-'));
  try {
    const sqlite = new Database(template, { readonly: true });
    const columns = tables.map((t) => sqlite.prepare(`PRAGMA table_info("${t}")`).all().map((c) => `"${c.name}"`).join(', '));
    sqlite.close();
    const exported = await measure(process.execPath, [join(ROOT, 'bench', 'export-csv.mjs'), template, dir, ...tables]);
    if (exported.code !== 0) throw new Error(`CSV export failed: ${exported.stderr}`);
    const script = join(dir, 'load.psql');
    writeFileSync(script, tables.map((t, i) => `\\copy "${t}" (${columns[i]}) FROM '${join(dir, `${i}.csv`)}' WITH (FORMAT csv)`).join('\n') + '\n');
    const loaded = await measure('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-1', '-f', script, '-d', db.url], { env: { PGTZ: 'UTC' } });
    if (loaded.code !== 0) throw new Error(`psql \\copy failed: ${loaded.stderr.slice(0, 2000)}`);
    const rows = Number(await countRows(db.url, tables));
    return {
      wallSeconds: exported.wallSeconds + loaded.wallSeconds,
      rows,
      rss: { export: exported.peakRssMb, psql: loaded.peakRssMb },
      parts: { export: exported.wallSeconds, load: loaded.wallSeconds },
    };
  } finally {
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs pgloader on the same SQLite file into the same pre-created schema (data only). */
async function runPgloader(template, tables, work) {
  const db = await freshDjangoDatabase('pgl');
  const dir = mkdtempSync(join(work, 'pgl-'));
  try {
    const load = join(dir, 'load.pgl');
    // The untyped balance column holds REALs that pgloader would print as Lisp floats ("0.3d0"), hence the CAST.
    // data only into Django's own schema, as the other two contenders do; FK triggers off because pgloader loads tables in parallel.
    // quote identifiers: without it pgloader's COPY into "clinic vaccine log" (spaces and capitals in its
    // names) fails to start and pgloader stops with "PostgreSQL protocol error: Unexpected message received: Z 90".
    writeFileSync(load, `LOAD DATABASE
  FROM sqlite://${template}
  INTO ${db.url}
WITH data only, create no tables, create no indexes, reset no sequences, include no drop, disable triggers, quote identifiers
CAST column clinic_owner.balance to numeric using float-to-string
INCLUDING ONLY TABLE NAMES LIKE 'clinic%'
SET timezone to 'UTC';
`);
    const run = await measure('pgloader', ['--logfile', join(dir, 'pgloader.log'), load], { env: { TMPDIR: dir } });
    const counted = await countRows(db.url, tables);
    const rows = Number(counted);
    return { wallSeconds: run.wallSeconds, rows, perTable: counted.perTable, rss: { pgloader: run.peakRssMb }, code: run.code, errors: (run.stdout + run.stderr).split('\n').filter((l) => / (ERROR|FATAL) /.test(l)).map((l) => l.slice(0, 300)).slice(0, 5).join('\n') };
  } finally {
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Times `epetsync --help` n times. */
async function timeHelp(n) {
  const ms = [];
  for (let i = 0; i < n; i += 1) {
    const r = await measure(process.execPath, [BIN, '--help'], { timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`epetsync --help exited ${r.code}`);
    ms.push(r.wallSeconds * 1000);
  }
  return ms;
}

/** Prints progress to stderr. */
function log(line) {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

const fmt = (v, d = 2) => (v === null || v === undefined ? 'n/a' : v.toFixed(d));
const mb = (v) => (v === null || v === undefined ? 'n/a' : `${Math.round(v)}`);

/** Runs the migrate benchmark and returns the markdown report. */
async function benchMigrate(opts) {
  if (!opts.only || opts.only.has('pgloader')) ensurePgloader();
  const { CLINIC_TABLES } = await dist('sync/generate.js');
  const tables = [...CLINIC_TABLES];
  const work = mkdtempSync(join(tmpdir(), 'epetsync-bench-'));
  try {
    const template = await generateTemplate(work, opts.scale, opts.seed);
    const sqlite = new Database(template.path, { readonly: true });
    const perTable = Object.fromEntries(tables.map((t) => [t, Number(sqlite.prepare(`SELECT count(*) AS n FROM "${t}"`).get().n)]));
    sqlite.close();
    const expected = Object.values(perTable).reduce((a, b) => a + b, 0);
    log(`clinic tables hold ${expected} rows: ${JSON.stringify(perTable)}`);
    const results = { copy: [], epetsync: [], pgloader: [] };
    for (let rep = 1; rep <= opts.repeat; rep += 1) {
      // Interleaved, so a burst of load from other work on the machine does not hit one contender's runs only.
      const want = (c) => !opts.only || opts.only.has(c);
      if (want('copy')) {
        const c = await runCopy(template.path, tables, work);
        results.copy.push(c);
        log(`rep ${rep} copy: ${fmt(c.wallSeconds)} s (export ${fmt(c.parts.export)} + load ${fmt(c.parts.load)}), ${c.rows}/${expected} rows, RSS export ${mb(c.rss.export)} MB psql ${mb(c.rss.psql)} MB`);
      }
      if (want('epetsync')) {
        const e = await runEpetsync(template.path, tables, work, rep === opts.repeat ? 5 : 0, opts.cpuProf);
        results.epetsync.push(e);
        log(`rep ${rep} epetsync: ${fmt(e.wallSeconds)} s, ${e.rows}/${expected} rows, RSS client ${mb(e.rss.client)} MB server ${mb(e.rss.server)} MB`);
      }
      if (want('pgloader')) {
        const p = await runPgloader(template.path, tables, work);
        results.pgloader.push(p);
        log(`rep ${rep} pgloader: ${fmt(p.wallSeconds)} s, ${p.rows}/${expected} rows, exit ${p.code}, RSS ${mb(p.rss.pgloader)} MB`);
        if (p.rows !== expected) log(`pgloader loaded ${p.rows} of ${expected} rows (per table ${JSON.stringify(p.perTable)}); its first errors:\n${p.errors}`);
      }
    }
    const help = await timeHelp(10);
    const diagnose = results.epetsync.at(-1)?.diagnose ?? [];
    return renderMigrateReport(opts, template, expected, results, help, diagnose);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Renders the migrate results as a dated markdown section. */
async function renderMigrateReport(opts, template, expected, results, help, diagnose) {
  const copyMedian = median(results.copy.map((r) => r.wallSeconds));
  const row = (name, runs, rssCols) => {
    const wall = median(runs.map((r) => r.wallSeconds));
    const rows = median(runs.map((r) => r.rows));
    const runsText = runs.map((r) => fmt(r.wallSeconds)).join(' / ');
    return `| ${name} | ${fmt(wall)} | ${rows === null || wall === null ? 'n/a' : Math.round(rows / wall).toLocaleString('en-US')} | ${rows}/${expected} | ${rssCols(runs)} | ${runs.some((r) => r.rows !== expected) ? 'n/a (incomplete load)' : copyMedian ? `${fmt(wall / copyMedian)}×` : 'n/a'} | ${runsText} |`;
  };
  const rssMedian = (runs, key) => mb(median(runs.map((r) => r.rss[key])));
  const pgVersion = (await pgQuery((await import('./lib.mjs')).pgUrl(), 'SHOW server_version'))[0].server_version;
  const commit = execSync('git rev-parse --short HEAD', { cwd: ROOT, encoding: 'utf8' }).trim();
  const dirty = execSync('git status --porcelain -- src', { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
  const cpu = cpus();
  const pgloaderPackage = versionOf('dpkg-query', ['-W', '-f', '${Version}', 'pgloader']);
  const date = new Date().toISOString().replace(/:\d\d\.\d+Z$/, ' UTC').replace('T', ' ');
  const diagCodes = [...new Set(diagnose.map((d) => d.code))].join(', ');
  return `
## ${date} — migrate, scale ${opts.scale} (${template.totalRows.toLocaleString('en-US')} rows generated, ${expected.toLocaleString('en-US')} in the clinic tables)

Reproduce: \`npm run bench -- migrate --scale ${opts.scale} --repeat ${opts.repeat} --seed ${opts.seed}\`

Machine: ${cpu.length} cores (${cpu[0]?.model ?? 'unknown'}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB memory (${(freemem() / 2 ** 30).toFixed(1)} GiB free at the end), Linux ${release()}.
Versions: epetsync ${commit}${dirty ? ' (src/ had uncommitted changes)' : ''}, Node ${process.version}, PostgreSQL ${pgVersion} (127.0.0.1), ${versionOf('psql')}, ${versionOf('pgloader')} (Debian package ${pgloaderPackage}).

Medians of ${opts.repeat} interleaved repetitions, each contender on a fresh database with Django's schema.
Wall is the client side: epetsync = the \`epetsync migrate\` process (server already listening);
COPY = CSV export process + one \`psql -1\` running \\copy per table; pgloader = the pgloader process.
Peak RSS from \`/usr/bin/time -v\`, the server's from its VmHWM just after the migrate.

| contender | wall s | rows/s | rows loaded | peak RSS MB | ratio to COPY | wall s per run |
|---|---:|---:|---:|---|---:|---|
${row('raw COPY (CSV + psql \\copy)', results.copy, (r) => `export ${rssMedian(r, 'export')}, psql ${rssMedian(r, 'psql')}`)}
${row('epetsync migrate via serve', results.epetsync, (r) => `client ${rssMedian(r, 'client')}, server ${rssMedian(r, 'server')}`)}
${row('pgloader', results.pgloader, (r) => `pgloader ${rssMedian(r, 'pgloader')}`)}

Start-up: \`epetsync --help\` median ${fmt(median(help), 0)} ms (max ${fmt(Math.max(...help), 0)} ms, 10 runs);
\`epetsync diagnose\` against the local server after a migrate median ${fmt(median(diagnose.map((d) => d.ms)), 0)} ms (max ${fmt(Math.max(...diagnose.map((d) => d.ms)), 0)} ms, ${diagnose.length} runs, exit code ${diagCodes}).
`;
}

/** Renders the sync results as a dated markdown section. */
async function renderSyncReport(opts, r) {
  const ms = (v) => (v === null ? 'n/a' : `${Math.round(v)}`);
  const line = (name, s) => `| ${name} | ${s.n} | ${s.missed} | ${ms(s.p50)} | ${ms(s.p95)} | ${ms(s.max)} |`;
  return `
## ${new Date().toISOString().replace(/:\d\d\.\d+Z$/, ' UTC').replace('T', ' ')} — sync (real time)

Reproduce: \`npm run bench -- sync --commits ${opts.commits} --offline ${opts.offline} --seed ${opts.seed}\`

${await machineLine()}

\`epetsync monitor\` with \`database.real_time_sync\` on a small clinic (generator scale 200 owners), migrated first.
Desktop commits come from a separate Python process (its own sqlite3), timed from right after its COMMIT;
web commits are INSERTs through a PostgreSQL client, timed from when the INSERT returned. Visibility is polled every 10 ms.
"missed" counts commits not visible within 10 s.

| direction | commits | missed | p50 ms | p95 ms | max ms |
|---|---:|---:|---:|---:|---:|
${line('desktop SQLite → PostgreSQL', r.push)}
${line('PostgreSQL → desktop SQLite', r.pull)}

Offline catch-up: ${r.offlineRows.toLocaleString('en-US')} owners inserted in one desktop transaction while the monitor was stopped;
${r.catchUpSeconds === null ? `did NOT converge: ${r.arrivedAtEnd.toLocaleString('en-US')} rows in PostgreSQL when the harness gave up, about 310 s after the start` : `all visible in PostgreSQL ${r.catchUpSeconds.toFixed(2)} s after the monitor was started`}
(${r.arrivedAt10s.toLocaleString('en-US')} rows had arrived 10 s after the start).
Peak RSS: monitor ${mb(r.rss.monitor)} MB during the real-time part, ${mb(r.rss.catchUpMonitor)} MB during catch-up; server ${mb(r.rss.server)} MB.
`;
}

/** Returns the machine and versions line shared by every report. */
async function machineLine() {
  const pgVersion = (await pgQuery(pgUrl(), 'SHOW server_version'))[0].server_version;
  const commit = execSync('git rev-parse --short HEAD', { cwd: ROOT, encoding: 'utf8' }).trim();
  const cpu = cpus();
  return `Machine: ${cpu.length} cores (${cpu[0]?.model ?? 'unknown'}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB memory, Linux ${release()}. Versions: epetsync ${commit}, Node ${process.version}, PostgreSQL ${pgVersion} (127.0.0.1).`;
}

/** Entry point: runs one subcommand, prints its report, appends it to docs/benchmarks.md unless --no-report. */
async function main() {
  const argv = process.argv.slice(2);
  if (argv.length === 0 || argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE);
    return 0;
  }
  const opts = parseArgs(argv);
  if (!existsSync(join(ROOT, 'dist', 'sync', 'generate.js'))) throw new Error('dist/ is missing: run npm run build first');
  let report;
  if (opts.command === 'migrate') report = await benchMigrate(opts);
  else if (opts.command === 'sync') report = await renderSyncReport(opts, await (await import('./sync.mjs')).benchSync({ commits: opts.commits, offlineRows: opts.offline, seed: opts.seed, log }));
  else throw new Error(`unknown benchmark ${opts.command}\n${USAGE}`);
  process.stdout.write(report);
  if (opts.report) {
    const file = join(ROOT, 'docs', 'benchmarks.md');
    mkdirSync(join(ROOT, 'docs'), { recursive: true });
    appendFileSync(file, report);
    log(`appended to ${file}`);
  }
  return 0;
}

main().then(
  (code) => { process.exitCode = code; },
  (err) => { process.stderr.write(`bench failed: ${err instanceof Error ? err.message : String(err)}\n`); process.exitCode = 1; },
);
