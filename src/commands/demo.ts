import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { CommandContext } from '../cli/context.js';
import type { Output } from '../cli/output.js';
import type { CommandModule } from '../cli/spec.js';
import { UsageError, isEpetsyncError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';
import type { SyncServer } from '../server/index.js';

/** Lists the options `epetsync demo` takes. */
export interface DemoCommandOptions {
  dir?: string;
  keep?: boolean;
  scale?: number;
}

/** Names the steps of the demo, in order. */
export type DemoStepName = 'generate' | 'serve' | 'diagnose' | 'migrate' | 'monitor' | 'desktop-change' | 'web-change' | 'sync' | 'stop';

/** Reports one step of the demo. */
export interface DemoStep {
  step: DemoStepName;
  status: 'ok' | 'failed' | 'skipped';
  detail: string;
  seconds: number;
}

/** Describes one change made on one side and whether it arrived on the other. */
export interface DemoChange {
  /** Where the change was made. */
  from: 'desktop' | 'web';
  table: string;
  id: number;
  column: string;
  value: string;
  /** True when the other side held the new value after the sync cycle. */
  arrived: boolean;
}

/** Reports `epetsync demo` (the `--json` result; documented in README.md). */
export interface DemoResult {
  ok: boolean;
  /** The demo folder (deleted at the end unless kept). */
  dir: string;
  kept: boolean;
  /** Address the embedded server listened on (stopped by the end of the run). */
  server: string | null;
  steps: DemoStep[];
  /** Rows generated in the sample desktop database. */
  rowsGenerated: number;
  /** Rows migrate loaded into the embedded PostgreSQL. */
  rowsMigrated: number;
  changes: DemoChange[];
  seconds: number;
  /** Always false: the demo password lives in memory only, never in the demo's config.json. */
  passwordStored: false;
  nextSteps: string[];
}

const DEMO_USER = 'demo';
/** Owners in the sample clinic: about 9 rows each, a few hundred rows in all, migrated in seconds. */
const DEFAULT_SCALE = 25;
/** Environment overrides that would point the demo's config at the user's real setup. */
const OVERRIDES = ['EPETSYNC_CONFIG', 'EPETSYNC_URL', 'EPETSYNC_USERNAME', 'EPETSYNC_PASSWORD', 'EPETSYNC_TOKEN', 'EPETSYNC_DB'];

const NEXT_STEPS = [
  'epetsync init --db <path to db.sqlite3> --url <web app URL> --username <sync account>   # write config.json for your clinic',
  'EPETSYNC_PASSWORD=… epetsync diagnose                                                  # check every link',
  'epetsync migrate --check-only                                                          # see what a first migrate would do',
  'epetsync monitor --background                                                          # keep both sides in step',
];

/** Runs the whole tool on a sample clinic: generate, serve in-process, diagnose, migrate, sync both ways, stop, clean up. */
async function run(ctx: CommandContext, options: DemoCommandOptions): Promise<DemoResult> {
  const started = Date.now();
  const dir = prepareFolder(ctx, options.dir);
  const keep = options.keep === true;
  const result: DemoResult = {
    ok: false,
    dir,
    kept: keep,
    server: null,
    steps: [],
    rowsGenerated: 0,
    rowsMigrated: 0,
    changes: [],
    seconds: 0,
    passwordStored: false,
    nextSteps: NEXT_STEPS,
  };
  const note = (text: string): void => ctx.out.note(text);
  let failed = false;
  const step = async (name: DemoStepName, title: string, work: () => Promise<string>): Promise<void> => {
    if (failed || ctx.signal.aborted) {
      failed = true;
      result.steps.push({ step: name, status: 'skipped', detail: ctx.signal.aborted ? 'interrupted' : 'an earlier step failed', seconds: 0 });
      return;
    }
    const t0 = Date.now();
    const activity = await ctx.out.activity(title);
    try {
      const detail = await work();
      activity.succeed(`${title}: ${detail}`);
      if (!ctx.out.interactive) note(`✓ ${title}: ${detail}`);
      result.steps.push({ step: name, status: 'ok', detail, seconds: seconds(t0) });
    } catch (error) {
      failed = true;
      const detail = isEpetsyncError(error) ? `${error.message}${error.hint ? ` (${error.hint})` : ''}` : (error as Error).message;
      activity.fail(`${title}: ${detail}`);
      if (!ctx.out.interactive) note(`✗ ${title}: ${detail}`);
      ctx.logger.info({ err: error, step: name }, 'demo step failed');
      result.steps.push({ step: name, status: 'failed', detail, seconds: seconds(t0) });
    }
  };

  const dbPath = join(dir, 'db.sqlite3');
  const configPath = join(dir, 'config.json');
  // Held in memory only; loadConfig registers it as a secret, so it is scrubbed from every log line.
  const password = randomBytes(18).toString('base64url');
  const env: NodeJS.ProcessEnv = { ...ctx.env, EPETSYNC_PASSWORD: password };
  for (const key of OVERRIDES.filter((k) => k !== 'EPETSYNC_PASSWORD')) delete env[key];
  let server: SyncServer | undefined;
  let demoCtx: CommandContext | undefined;
  try {
    note(`Demo folder: ${dir}`);
    await step('generate', 'Generate a sample clinic database', async () => {
      const { generateClinicDatabase } = await import('../sync/generate.js');
      const g = generateClinicDatabase(dbPath, { scale: options.scale ?? DEFAULT_SCALE, seed: 1 });
      result.rowsGenerated = g.totalRows;
      return `${g.totalRows} rows in ${Object.keys(g.rows).length} tables (db.sqlite3)`;
    });

    await step('serve', 'Start the sync server (embedded PostgreSQL, in memory)', async () => {
      const { startSyncServer } = await import('../server/index.js');
      const { createAccount } = await import('../server/auth/index.js');
      const { DJANGO_POSTGRES_SCHEMA } = await import('../sync/generate.js');
      server = await startSyncServer({ memory: true, port: 0, host: '127.0.0.1', schemaRefreshSeconds: 0, logger: ctx.logger });
      result.server = server.url;
      // The web app's tables, as Django's migrations would have created them on PostgreSQL.
      for (const sql of DJANGO_POSTGRES_SCHEMA) await server.db.query(sql);
      await server.refreshSchema();
      await createAccount(server.db, DEMO_USER, password);
      writeFileSync(configPath, `${JSON.stringify(demoConfig(server.url), null, 2)}\n`);
      const { loadConfig } = await import('../config/index.js');
      const loaded = loadConfig({ configPath, env, cwd: dir });
      demoCtx = { ...ctx, config: () => loaded, hasConfig: () => true, env, cwd: dir };
      return `${server.url}, ${server.schema.tables.length} synced tables, account "${DEMO_USER}"`;
    });

    await step('diagnose', 'Diagnose config, database, network, API and login', async () => {
      const { CHECKS, runDiagnose } = await import('../diagnose/index.js');
      const report = await runDiagnose(CHECKS, { configPath, env, cwd: dir, logger: ctx.logger, signal: ctx.signal, groups: ['config', 'local', 'network', 'api', 'auth'] });
      const failures = report.checks.filter((c) => c.status === 'fail');
      if (failures.length > 0) throw new Error(`${failures.length} check(s) failed: ${failures.map((c) => `${c.id} (${c.found})`).join('; ')}`);
      return `${report.summary.ok} ok, ${report.summary.warn} warning(s), 0 failed`;
    });

    await step('migrate', 'Migrate the desktop database into PostgreSQL', async () => {
      const migrate = (await import('./migrate.js')).default;
      const m = await migrate.run(demoCtx!, {}, []);
      if (!m.ok) throw new Error(`migrate did not finish: ${m.blocking.map((b) => b.message).join('; ') || m.mismatched.join(', ') || 'see the log'}`);
      result.rowsMigrated = m.tables.reduce((n, t) => n + t.loaded, 0);
      return `${result.rowsMigrated} rows in ${m.tables.length} tables, verified`;
    });

    const monitor = (await import('./monitor.js')).default;
    await step('monitor', 'Run one sync cycle (monitor --once)', async () => {
      const r = await monitor.run(demoCtx!, { once: true }, []);
      if (r.action !== 'ran' || r.failures > 0) throw new Error('the sync cycle failed (see the log)');
      return `pushed ${r.pushed}, pulled ${r.pulled}: both sides already agree`;
    });

    const desktopChange: DemoChange = { from: 'desktop', table: 'clinic_pet', id: 0, column: 'name', value: 'Biscuit (edited on the desktop)', arrived: false };
    const webChange: DemoChange = { from: 'web', table: 'clinic_owner', id: 0, column: 'phone', value: '555-0100 (web)', arrived: false };
    await step('desktop-change', 'Edit a pet in the desktop database', async () => {
      const { default: Database } = await import('better-sqlite3');
      // A separate connection, as the desktop app writes: the capture triggers record the change.
      const desktop = new Database(dbPath);
      try {
        desktopChange.id = Number((desktop.prepare('SELECT min(id) AS id FROM clinic_pet').get() as { id: number }).id);
        desktop.prepare('UPDATE clinic_pet SET name = ? WHERE id = ?').run(desktopChange.value, desktopChange.id);
      } finally {
        desktop.close();
      }
      return `clinic_pet ${desktopChange.id}: name = "${desktopChange.value}"`;
    });
    await step('web-change', 'Edit an owner in PostgreSQL, as the web app would', async () => {
      const rows = await server!.db.query<{ id: string }>('SELECT min(id)::text AS id FROM public.clinic_owner');
      webChange.id = Number(rows.rows[0]!.id);
      await server!.db.query('UPDATE public.clinic_owner SET phone = $1 WHERE id = $2', [webChange.value, webChange.id]);
      return `clinic_owner ${webChange.id}: phone = "${webChange.value}"`;
    });
    await step('sync', 'Sync again and look on the other side', async () => {
      const r = await monitor.run(demoCtx!, { once: true }, []);
      if (r.action !== 'ran' || r.failures > 0) throw new Error('the sync cycle failed (see the log)');
      const remote = await server!.db.query<{ name: string }>('SELECT name FROM public.clinic_pet WHERE id = $1', [desktopChange.id]);
      desktopChange.arrived = remote.rows[0]?.name === desktopChange.value;
      const { default: Database } = await import('better-sqlite3');
      const desktop = new Database(dbPath, { readonly: true });
      try {
        const local = desktop.prepare('SELECT phone FROM clinic_owner WHERE id = ?').get(webChange.id) as { phone: string | null } | undefined;
        webChange.arrived = local?.phone === webChange.value;
      } finally {
        desktop.close();
      }
      result.changes = [desktopChange, webChange];
      const missing = result.changes.filter((c) => !c.arrived).map((c) => `the ${c.from} edit of ${c.table} ${c.id}`);
      if (missing.length > 0) throw new Error(`did not arrive: ${missing.join(', ')}`);
      return `pushed ${r.pushed}, pulled ${r.pulled}: the desktop edit is in PostgreSQL, the web edit is in db.sqlite3`;
    });
  } finally {
    const t0 = Date.now();
    if (server) {
      try {
        await server.close();
        result.steps.push({ step: 'stop', status: 'ok', detail: 'server stopped', seconds: seconds(t0) });
      } catch (error) {
        failed = true;
        result.steps.push({ step: 'stop', status: 'failed', detail: (error as Error).message, seconds: seconds(t0) });
      }
    }
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
  result.ok = !failed && result.steps.every((s) => s.status === 'ok');
  result.seconds = seconds(started);
  return result;
}

/** Returns the demo folder: a new temp folder, or --dir (created; refused when it holds files already). */
function prepareFolder(ctx: CommandContext, dirOption: string | undefined): string {
  if (dirOption === undefined) return mkdtempSync(join(tmpdir(), 'epetsync-demo-'));
  const dir = resolve(ctx.cwd, dirOption);
  if (existsSync(dir) && readdirSync(dir).length > 0) {
    throw new UsageError('EPS_USAGE', `--dir ${dir} is not empty`, { hint: 'Pass a new or empty folder, or leave --dir out to use a temporary one.' });
  }
  mkdirSync(dir, { recursive: true });
  return dir;
}

function demoConfig(url: string): Record<string, unknown> {
  return {
    database: { path: 'db.sqlite3', backup_dir: 'backups' },
    remote_database: { enabled: true, url, username: DEMO_USER, sync_interval: 30 },
  };
}

function seconds(since: number): number {
  return Math.round((Date.now() - since) / 100) / 10;
}

function render(result: DemoResult, out: Output): void {
  const c = out.color;
  out.line(c.bold('epetsync demo'));
  for (const s of result.steps) {
    const mark = s.status === 'ok' ? c.green('✓') : s.status === 'failed' ? c.red('✗') : c.gray('-');
    out.line(`  ${mark} ${s.step.padEnd(15)} ${s.detail}`);
  }
  out.line('');
  out.line(`Rows migrated: ${result.rowsMigrated} (generated ${result.rowsGenerated}; Django's own django_* tables are not synced)`);
  for (const ch of result.changes) {
    out.line(`${ch.from === 'desktop' ? 'Desktop -> web' : 'Web -> desktop'}: ${ch.table} ${ch.id} ${ch.column} = "${ch.value}" ${ch.arrived ? c.green('arrived') : c.red('did NOT arrive')}`);
  }
  out.line(`Took ${result.seconds} s. The server is stopped; nothing is left running.`);
  out.line(result.kept ? `The demo folder is kept: ${result.dir} (config.json holds no password; the demo account's password was never written).` : 'The demo folder was deleted (pass --keep to explore it).');
  out.line('');
  out.line(result.ok ? c.green('Demo passed: both sides stayed in step.') : c.red('Demo FAILED: see the failed step above.'));
  out.line('');
  out.line('Next steps for your own clinic:');
  for (const n of result.nextSteps) out.line(`  ${n}`);
}

/** Implements `epetsync demo [--dir D] [--keep]`: exit 0 when every step passed, 1 otherwise. */
const demo: CommandModule<DemoCommandOptions, DemoResult> = {
  run,
  render,
  exitCode: (r) => (r.ok ? ExitCode.OK : ExitCode.PROBLEMS),
};

export default demo;
