import { spawn } from 'node:child_process';
import type { CommandContext } from '../cli/context.js';
import type { Output } from '../cli/output.js';
import type { CommandModule } from '../cli/spec.js';
import { loadConfig, type EpetsyncConfig } from '../config/index.js';
import type { DiagnoseReport } from '../diagnose/index.js';
import { isEpetsyncError } from '../errors.js';
import { ExitCode, type ExitCodeValue } from '../exit-codes.js';
import { renderChecks } from './diagnose.js';

/** Lists the options `epetsync fix` takes. */
export interface FixCommandOptions {
  config?: string;
  yes?: boolean;
}

/** Names the steps of `fix`, in order. */
export type FixStepName = 'diagnose' | 'backup' | 'migrate' | 'sync' | 'verify' | 'restart';

/** Reports one step of `fix`: `changed` when it altered something, `ok` when there was nothing to do. */
export interface FixStep {
  step: FixStepName;
  status: 'ok' | 'changed' | 'skipped' | 'failed';
  detail: string;
  remedy?: string | undefined;
  /** Exit code of a failed step. */
  exitCode?: number | undefined;
}

/** Reports `epetsync fix` (the `--json` result; documented in docs/diagnose.md). */
export interface FixResult {
  ok: boolean;
  steps: FixStep[];
  /** The first failing step with its remedy, or null. */
  failed: { step: FixStepName; detail: string; remedy: string | null } | null;
  /** The diagnose --fix report of the first step. */
  diagnose: DiagnoseReport | null;
  /** The diagnose report of the verify step. */
  verify: DiagnoseReport | null;
  exitCode: number;
}

/** Groups whose failure stops `fix`: nothing after them can work. Sync findings are what the later steps repair. */
const BLOCKING_GROUPS = new Set(['config', 'local', 'backups', 'network', 'api', 'auth']);
/** Maps the group of the check that stopped `fix` to the exit code of that kind of failure. */
const GROUP_EXIT: Record<string, number> = { config: ExitCode.USAGE, local: ExitCode.LOCAL_DATABASE, backups: ExitCode.LOCAL_DATABASE, network: ExitCode.REMOTE_UNREACHABLE, api: ExitCode.REMOTE_PROTOCOL, auth: ExitCode.AUTH };
/** A backup younger than this, with nothing repaired, is the safety copy of this run (a scheduled fix must not pile up backups). */
const FRESH_BACKUP_MS = 3600_000;

/** Runs diagnose --fix, a backup, migrate or one sync cycle, verify and a desktop-app restart; stops at the first failing step. */
async function run(ctx: CommandContext, options: FixCommandOptions): Promise<FixResult> {
  const { CHECKS, runDiagnose } = await import('../diagnose/index.js');
  const steps: FixStep[] = [];
  const result: FixResult = { ok: false, steps, failed: null, diagnose: null, verify: null, exitCode: ExitCode.OK };
  const fail = (step: FixStepName, detail: string, remedy: string | null, exitCode: number): FixResult => {
    steps.push({ step, status: 'failed', detail, remedy: remedy ?? undefined, exitCode });
    result.failed = { step, detail, remedy };
    result.exitCode = exitCode;
    return result;
  };
  const caught = (step: FixStepName, error: unknown): FixResult => {
    if (isEpetsyncError(error)) return fail(step, error.message, error.hint ?? null, error.exitCode);
    throw error;
  };
  const diagnoseOptions = { configPath: options.config, env: ctx.env, cwd: ctx.cwd, logger: ctx.logger, signal: ctx.signal };
  let changedData = false;

  // 1. diagnose --fix
  const activity = await ctx.out.activity('Diagnosing and repairing');
  const report = await runDiagnose(CHECKS, { ...diagnoseOptions, fix: true, confirm: async (q) => options.yes === true || (await ctx.out.confirm(q)) });
  activity.stop();
  result.diagnose = report;
  const repaired = report.fixes.filter((f) => f.outcome === 'fixed');
  if (repaired.some((f) => f.id.startsWith('db.') || f.id === 'sync.scope')) changedData = true;
  const blocking = report.checks.find((c) => c.status === 'fail' && BLOCKING_GROUPS.has(c.group));
  if (blocking) return fail('diagnose', `${blocking.id}: ${blocking.found}`, blocking.remedy, GROUP_EXIT[blocking.group] ?? ExitCode.PROBLEMS);
  steps.push({ step: 'diagnose', status: repaired.length > 0 ? 'changed' : 'ok', detail: repaired.length > 0 ? `repaired ${repaired.map((f) => f.id).join(', ')}` : `${report.summary.ok} check(s) ok, nothing to repair` });

  // Repairs may have rewritten config.json: read it afresh for the remaining steps.
  let config: EpetsyncConfig;
  try {
    config = loadConfig({ configPath: options.config, env: ctx.env, cwd: ctx.cwd });
  } catch (error) {
    return caught('diagnose', error);
  }
  const fresh: CommandContext = { ...ctx, config: () => config, hasConfig: () => true };

  // 2. backup, unless nothing was repaired and a backup from the last hour exists
  try {
    const { listBackups, takeBackup } = await import('../db/index.js');
    const newest = listBackups(config.database.path, config.database.backupDir)[0];
    if (newest && repaired.length === 0 && newest.ageSeconds * 1000 < FRESH_BACKUP_MS) {
      steps.push({ step: 'backup', status: 'ok', detail: `${newest.file} was taken ${Math.round(newest.ageSeconds / 60)} min ago` });
    } else {
      const b = await takeBackup({ databasePath: config.database.path, backupDir: config.database.backupDir, keep: config.database.backupKeep, busyTimeoutMs: config.database.busyTimeoutMs });
      steps.push({ step: 'backup', status: 'changed', detail: `took a verified backup ${b.backup.file}` });
    }
  } catch (error) {
    return caught('backup', error);
  }

  // 3. migrate when the remote is empty, otherwise one sync cycle
  let migrated = false;
  try {
    if (config.remote.url === undefined) {
      steps.push({ step: 'sync', status: 'skipped', detail: 'remote sync is not configured' });
    } else {
      const empty = await remoteIsEmpty(config, ctx);
      if (empty) {
        const migrate = (await import('./migrate.js')).default;
        const m = await migrate.run(fresh, {}, []);
        if (!m.ok) return fail('migrate', `migrate did not finish: ${m.blocking.map((b) => b.message).join('; ') || m.mismatched.join(', ') || 'see the log'}`, 'Run "epetsync migrate --check-only" to see why.', ExitCode.PROBLEMS);
        const rows = m.tables.reduce((n, t) => n + t.loaded, 0);
        steps.push({ step: 'migrate', status: 'changed', detail: `the remote was empty: migrated ${m.tables.length} table(s), ${rows} row(s), verified` });
        migrated = true;
      } else {
        steps.push({ step: 'migrate', status: 'skipped', detail: 'the remote already holds data: synced instead' });
      }
      const monitor = (await import('./monitor.js')).default;
      const cycle = await monitor.run(fresh, { once: true }, []);
      if (cycle.action !== 'ran') throw new Error(`unexpected monitor result ${cycle.action}`);
      if (cycle.failures > 0) return fail('sync', 'the sync cycle failed (see the log file)', 'Run "epetsync monitor --once" to see the error.', ExitCode.PROBLEMS);
      if (cycle.pulled > 0) changedData = true;
      const moved = cycle.pushed + cycle.pulled > 0;
      steps.push({ step: 'sync', status: moved ? 'changed' : 'ok', detail: `one cycle: pushed ${cycle.pushed}, pulled ${cycle.pulled}${cycle.quarantine > 0 ? `, ${cycle.quarantine} in the quarantine` : ''}` });
    }
  } catch (error) {
    return caught(steps.some((s) => s.step === 'migrate') ? 'sync' : 'migrate', error);
  }
  if (migrated) changedData = true;

  // 4. verify
  const verify = await runDiagnose(CHECKS, { ...diagnoseOptions, groups: ['config', 'local', 'backups', 'network', 'api', 'auth', 'sync', 'ids'] });
  result.verify = verify;
  const bad = verify.checks.find((c) => c.status === 'fail');
  if (bad) return fail('verify', `${bad.id}: ${bad.found}`, bad.remedy, ExitCode.PROBLEMS);
  steps.push({ step: 'verify', status: 'ok', detail: `${verify.summary.ok} check(s) ok, ${verify.summary.warn} warning(s)` });

  // 5. restart the desktop app, only when its database changed under it
  const commands = config.app.restartCommand !== undefined ? [config.app.restartCommand] : config.app.stopCommand !== undefined && config.app.startCommand !== undefined ? [config.app.stopCommand, config.app.startCommand] : [];
  if (!changedData) {
    steps.push({ step: 'restart', status: 'skipped', detail: 'the database did not change: the desktop app keeps running' });
  } else if (commands.length === 0) {
    steps.push({ step: 'restart', status: 'skipped', detail: 'no app.restart_command (or app.stop_command and app.start_command) configured', remedy: 'Restart the Vet Portal app by hand so it reopens the repaired database.' });
  } else {
    for (const command of commands) {
      const code = await shell(command, config.dir, ctx.env);
      if (code !== 0) return fail('restart', `"${command}" exited with ${code}`, 'Check app.restart_command in config.json; restart the Vet Portal app by hand.', ExitCode.PROBLEMS);
    }
    steps.push({ step: 'restart', status: 'changed', detail: `ran ${commands.map((c) => `"${c}"`).join(' then ')}` });
  }
  result.ok = true;
  return result;
}

async function remoteIsEmpty(config: EpetsyncConfig, ctx: CommandContext): Promise<boolean> {
  const [{ RemoteDatabaseClient }, { remoteCounts }, { openDatabase, listTables }] = await Promise.all([import('../client/index.js'), import('../client/migrate-api.js'), import('../db/index.js')]);
  const db = openDatabase(config.database.path, { busyTimeoutMs: config.database.busyTimeoutMs });
  let local: Set<string>;
  try {
    local = new Set(listTables(db));
  } finally {
    db.close();
  }
  const client = RemoteDatabaseClient.fromConfig(config, { logger: ctx.logger, signal: ctx.signal });
  try {
    // Only the tables both sides hold: the web app's own tables (auth_user…) are never migrated.
    const counts = await remoteCounts(client);
    return counts.tables.filter((t) => local.has(t.table)).every((t) => t.rows === 0);
  } finally {
    await client.close();
  }
}

/** Runs a configured command line through the system shell (cmd.exe on Windows) with a time limit. */
function shell(command: string, cwd: string, env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(command, { shell: true, cwd, env, stdio: 'ignore', windowsHide: true });
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', () => resolve(127));
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve(code ?? 1);
    });
  });
}

const MARK: Record<FixStep['status'], string> = { ok: '✓', changed: '✓', skipped: '-', failed: '✗' };

function render(result: FixResult, out: Output): void {
  if (result.diagnose && (result.failed?.step === 'diagnose' || result.diagnose.fixes.length > 0)) {
    renderChecks(result.diagnose.checks.filter((c) => c.status !== 'ok' && c.status !== 'skipped'), out);
    for (const f of result.diagnose.fixes) out.line(`  repair ${f.id}: ${f.action} (${f.before} → ${f.after})`);
    out.line('');
  }
  for (const s of result.steps) {
    const paint = s.status === 'failed' ? out.color.red : s.status === 'skipped' ? out.color.gray : out.color.green;
    out.line(`${paint(MARK[s.status])} ${s.step.padEnd(9)} ${s.detail}`);
    if (s.remedy) out.line(`    → ${s.remedy}`);
  }
  out.line('');
  if (result.failed) out.line(out.color.red(`Stopped at ${result.failed.step}: ${result.failed.remedy ?? result.failed.detail}`));
  else out.line(out.color.green(result.steps.some((s) => s.status === 'changed') ? 'Repaired: everything is in step.' : 'Healthy: nothing needed changing.'));
}

/** Implements `epetsync fix [--yes]`: exit 0 when every step worked, else the failing step's code (1 for problems found, 3 unreachable, 4 auth, 5 local database…). */
const fix: CommandModule<FixCommandOptions, FixResult> = {
  run,
  render,
  exitCode: (r) => r.exitCode as ExitCodeValue,
};

export default fix;
