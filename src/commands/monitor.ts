import { spawn } from 'node:child_process';
import { mkdirSync, openSync, readFileSync, closeSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { CommandContext } from '../cli/context.js';
import type { Output } from '../cli/output.js';
import type { CommandModule } from '../cli/spec.js';
import type { EpetsyncConfig } from '../config/index.js';
import { EpetsyncError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';
import type { MonitorSummary } from '../sync/monitor.js';

/** Lists the options `epetsync monitor` takes. */
export interface MonitorCommandOptions {
  interval?: number;
  once?: boolean;
  fix?: boolean;
  background?: boolean;
  stop?: boolean;
  uninstall?: boolean;
}

/** Describes how a `monitor` run ended (the `--json` result). */
export type MonitorResult =
  | (MonitorSummary & {
      action: 'ran';
      mode: 'once' | 'loop';
      /** Changes waiting in the quarantine when the run ended. */
      quarantine: number;
    })
  | { action: 'started'; pid: number; pidFile: string; logFile: string }
  | { action: 'stopped'; pid: number }
  | { action: 'not-running'; pidFile: string }
  | { action: 'uninstalled'; triggersRemoved: number };

/** Returns the pidfile of a background monitor: `.epetsync/monitor.pid` beside the config. */
export function monitorPidFile(config: EpetsyncConfig): string {
  return join(config.dir, '.epetsync', 'monitor.pid');
}

/** Returns the pid of the running background monitor, or null (a stale pidfile counts as none). */
export async function runningMonitorPid(config: EpetsyncConfig): Promise<number | null> {
  const { isProcessAlive } = await import('../sync/lock.js');
  let pid: number;
  try {
    pid = Number(readFileSync(monitorPidFile(config), 'utf8').trim());
  } catch {
    return null;
  }
  return isProcessAlive(pid) ? pid : null;
}

async function run(ctx: CommandContext, options: MonitorCommandOptions): Promise<MonitorResult> {
  const config = ctx.config();
  if (options.interval !== undefined && options.interval < 1) throw new EpetsyncError('EPS_USAGE', '--interval must be at least 1 second', { hint: 'Pass --interval 30, or leave it out to use remote_database.sync_interval.' });
  if ([options.background, options.stop, options.once, options.uninstall].filter(Boolean).length > 1) {
    throw new EpetsyncError('EPS_USAGE', '--background, --stop, --once and --uninstall cannot be combined', { hint: 'Pick one of them.' });
  }
  if (options.uninstall) return uninstall(config);
  if (options.stop) return stop(config, ctx.signal);
  if (options.background) return startBackground(ctx, config, options);
  return runForeground(ctx, config, options);
}

async function stop(config: EpetsyncConfig, signal: AbortSignal): Promise<MonitorResult> {
  const pidFile = monitorPidFile(config);
  const { readLock } = await import('../sync/lock.js');
  const alive = await runningMonitorPid(config);
  // A recycled pid must not be signalled: the monitor we started holds the database lock.
  const pid = alive !== null && readLock(config.database.path)?.pid === alive ? alive : null;
  if (pid === null) {
    try {
      unlinkSync(pidFile);
    } catch {
      // No pidfile at all.
    }
    return { action: 'not-running', pidFile };
  }
  process.kill(pid, 'SIGTERM');
  const { isProcessAlive } = await import('../sync/lock.js');
  const deadline = Date.now() + 60_000;
  while (isProcessAlive(pid)) {
    if (Date.now() > deadline || signal.aborted) {
      throw new EpetsyncError('EPS_INTERRUPTED', `The monitor (pid ${pid}) did not stop within 60 s of SIGTERM`, { hint: `It may be waiting for a slow server; run --stop again, or end pid ${pid}.` });
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  try {
    unlinkSync(pidFile);
  } catch {
    // Removed by the monitor itself.
  }
  return { action: 'stopped', pid };
}

/** Removes the capture triggers under the lock; refused while local changes wait, since they would never be sent. */
async function uninstall(config: EpetsyncConfig): Promise<MonitorResult> {
  const [{ acquireLock }, { openDatabase }, { removeCapture }, { readSyncStatus }] = await Promise.all([
    import('../sync/lock.js'),
    import('../db/index.js'),
    import('../sync/local-capture.js'),
    import('../sync/status.js'),
  ]);
  const path = config.database.path;
  const lock = acquireLock(path, 'monitor --uninstall');
  try {
    const db = openDatabase(path, { mode: 'write', busyTimeoutMs: config.database.busyTimeoutMs });
    try {
      const status = readSyncStatus(db, path, monitorPidFile(config));
      if (status.pending > 0 || status.unacknowledgedBatches > 0) {
        throw new EpetsyncError('EPS_USAGE', `${status.pending} local change(s) and ${status.unacknowledgedBatches} batch(es) have not reached the server yet`, {
          hint: 'Run "epetsync monitor --once" until nothing is pending, then --uninstall.',
        });
      }
      // The conflicts log, quarantine and cursor stay: they are the record of what sync did.
      return { action: 'uninstalled', triggersRemoved: removeCapture(db).removed };
    } finally {
      db.close();
    }
  } finally {
    lock.release();
  }
}

async function startBackground(ctx: CommandContext, config: EpetsyncConfig, options: MonitorCommandOptions): Promise<MonitorResult> {
  const { readLock, isProcessAlive } = await import('../sync/lock.js');
  const existing = await runningMonitorPid(config);
  if (existing !== null) {
    throw new EpetsyncError('EPS_LOCKED', `A background monitor is already running (pid ${existing})`, { hint: 'Stop it with "epetsync monitor --stop" first.', details: { pid: existing } });
  }
  const pidFile = monitorPidFile(config);
  const logFile = join(dirname(config.logging.file), 'monitor.out');
  mkdirSync(dirname(pidFile), { recursive: true, mode: 0o700 });
  mkdirSync(dirname(logFile), { recursive: true });
  const fd = openSync(logFile, 'a');
  const args = [process.argv[1]!, '--config', config.file, 'monitor'];
  if (options.interval !== undefined) args.push('--interval', String(options.interval));
  if (options.fix) args.push('--fix');
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', fd, fd], env: ctx.env, cwd: ctx.cwd, windowsHide: true });
  closeSync(fd);
  const pid = child.pid;
  if (pid === undefined) throw new EpetsyncError('EPS_INTERNAL', 'Could not start the background monitor process', { hint: `See ${logFile}.` });
  child.unref();
  writeFileSync(pidFile, `${pid}\n`, { mode: 0o600 });
  // Confirmed only once it holds the database lock; an early exit (bad config, lock taken) is reported.
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (readLock(config.database.path)?.pid === pid) break;
    if (!isProcessAlive(pid) || Date.now() > deadline) {
      const tail = safeTail(logFile);
      try {
        unlinkSync(pidFile);
      } catch {
        // Already gone.
      }
      throw new EpetsyncError('EPS_INTERNAL', `The background monitor (pid ${pid}) ${isProcessAlive(pid) ? 'did not take the database lock in time' : 'exited at start'}${tail ? `: ${tail}` : ''}`, {
        hint: `See ${logFile} and the log file ${config.logging.file}.`,
      });
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { action: 'started', pid, pidFile, logFile };
}

function safeTail(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-2).join(' | ').slice(0, 400);
  } catch {
    return '';
  }
}

async function runForeground(ctx: CommandContext, config: EpetsyncConfig, options: MonitorCommandOptions): Promise<MonitorResult> {
  const [{ acquireLock }, { openDatabase, toLocalDatabaseError, listBackups, restoreDatabase }, { RemoteDatabaseClient }, { SyncEngine }, { runMonitor }, { listQuarantine }] = await Promise.all([
    import('../sync/lock.js'),
    import('../db/index.js'),
    import('../client/index.js'),
    import('../sync/engine.js'),
    import('../sync/monitor.js'),
    import('../sync/store.js'),
  ]);
  const path = config.database.path;
  const lock = acquireLock(path, options.once ? 'monitor --once' : 'monitor');
  if (lock.takenOver) ctx.logger.warn(`took over a stale lock left by pid ${lock.takenOver.pid} (no longer running)`);
  let db: ReturnType<typeof openDatabase> | undefined;
  // Not tied to ctx.signal: a stop request must let the batch in flight finish.
  const client = RemoteDatabaseClient.fromConfig(config, { logger: ctx.logger, onWarning: (m) => ctx.out.warn(m) });
  try {
    db = openDatabase(path, { mode: 'write', busyTimeoutMs: config.database.busyTimeoutMs });
    const engineFor = (handle: NonNullable<typeof db>): InstanceType<typeof SyncEngine> => new SyncEngine({
      db: handle,
      remote: client,
      policy: config.sync.conflictPolicy,
      updatedAtColumn: config.sync.updatedAtColumn,
      batchSize: config.sync.batchSize,
      timezone: config.database.timezone,
      include: config.sync.include,
      exclude: config.sync.exclude,
      logger: ctx.logger,
      hooks: crashHooks(ctx.env),
    });
    const engine = engineFor(db);
    /** --fix on a corrupt file: stop writing, restore the newest backup that verifies, keep the damaged files, reopen. */
    const recover = async (): Promise<InstanceType<typeof SyncEngine>> => {
      db?.close();
      db = undefined;
      const failures: string[] = [];
      for (const backup of listBackups(path, config.database.backupDir)) {
        try {
          const restored = restoreDatabase({ databasePath: path, backupPath: backup.path, busyTimeoutMs: config.database.busyTimeoutMs });
          const kept = restored.replaced.map((r) => r.to).join(', ');
          ctx.logger.warn({ backup: backup.path, kept }, `restored ${backup.path}; the damaged files are kept as ${kept}; local changes made after ${backup.takenAt} are only in them`);
          if (!ctx.json) ctx.out.line(`Restored ${backup.path} over the corrupt database (damaged files kept: ${kept}); re-pulling from the backup's cursor.`);
          db = openDatabase(path, { mode: 'write', busyTimeoutMs: config.database.busyTimeoutMs });
          const restoredEngine = engineFor(db);
          // A backup from before the first sync has no cursor: a snapshot re-pulls what it lacks.
          await restoredEngine.prepare(ctx.signal, { snapshotWhenNoCursor: true });
          // What this desktop sent after the backup is on the server only: the next cycle replays it first.
          restoredEngine.markRestored();
          return restoredEngine;
        } catch (error) {
          failures.push(`${backup.path}: ${error instanceof Error ? error.message : String(error)}`);
        }
      }
      throw new EpetsyncError('EPS_BACKUP_NOT_FOUND', `The database ${path} is corrupt and no backup could be restored${failures.length > 0 ? ` (${failures.join('; ')})` : ` (none in ${config.database.backupDir})`}`, {
        hint: 'Nothing was written to the damaged file. Restore a copy by hand (epetsync restore FILE), then run the monitor again.',
      });
    };
    const interval = options.interval ?? config.remote.syncInterval;
    const realTime = config.database.realTimeSync && !options.once;
    if (!options.once) {
      const how = `every ${interval} s${realTime ? ', real-time on' : ''}`;
      if (ctx.json) ctx.out.stdout.write(`${JSON.stringify({ event: 'started', database: path, server: client.url.origin, interval, real_time: realTime, pid: process.pid })}\n`);
      else ctx.out.line(`Monitoring ${path} <-> ${client.url.origin} ${how} (pid ${process.pid})`);
    }
    const summary = await runMonitor({
      engine,
      remote: client,
      dbPath: path,
      intervalSeconds: interval,
      realTime,
      once: options.once === true,
      fix: options.fix === true,
      recover,
      signal: ctx.signal,
      logger: ctx.logger,
      onCycle: (report) => {
        if (options.once) return;
        if (ctx.json) ctx.out.stdout.write(`${JSON.stringify({ event: 'cycle', ...report })}\n`);
        else ctx.out.line(cycleLine(report));
      },
    }).catch((error: unknown) => {
      throw error instanceof EpetsyncError || !(error instanceof Error && 'code' in error) ? error : toLocalDatabaseError(error, path, { action: 'sync' });
    });
    return { action: 'ran', mode: options.once ? 'once' : 'loop', ...summary, quarantine: db ? listQuarantine(db).length : 0 };
  } finally {
    db?.close();
    await client.close();
    lock.release();
  }
}

/** Returns the crash points tests use to kill the process as a power cut would (EPETSYNC_TEST_CRASH). */
function crashHooks(env: NodeJS.ProcessEnv): { afterUpload?(): void; beforePullCommit?(): void } {
  const at = env.EPETSYNC_TEST_CRASH;
  const die = (): void => {
    process.kill(process.pid, 'SIGKILL');
  };
  if (at === 'after-upload') return { afterUpload: die };
  if (at === 'during-apply') return { beforePullCommit: die };
  return {};
}

/** Returns the one line a cycle prints on a terminal. */
export function cycleLine(report: import('../sync/monitor.js').CycleReport): string {
  const time = report.at.slice(11, 19);
  if (!report.ok) return `${time}  ${report.trigger.padEnd(8)} failed ${report.code}: ${report.message} (retry in ${Math.round(report.retryInMs / 1000)} s)`;
  const r = report.result;
  const conflicts = r.conflicts + r.collisions;
  const extra = r.quarantined > 0 ? `  quarantined ${r.quarantined}` : '';
  return `${time}  ${report.trigger.padEnd(8)} pushed ${r.pushed}  pulled ${r.pulled}  conflicts ${conflicts}${extra}  pending ${r.pending}  lag ${r.lagSeconds} s  ${r.durationMs} ms`;
}

function render(result: MonitorResult, out: Output): void {
  switch (result.action) {
    case 'started':
      out.line(`Monitor started in the background (pid ${result.pid}).`);
      out.line(`Output: ${result.logFile}; stop it with "epetsync monitor --stop".`);
      return;
    case 'stopped':
      out.line(`Monitor (pid ${result.pid}) stopped.`);
      return;
    case 'not-running':
      out.line('No background monitor is running.');
      return;
    case 'uninstalled':
      out.line(`Removed ${result.triggersRemoved} change-capture trigger(s); desktop edits are no longer recorded until the next monitor run (use migrate to catch up).`);
      return;
    case 'ran': {
      const what = `pushed ${result.pushed}, pulled ${result.pulled}, conflicts ${result.conflicts}`;
      if (result.mode === 'once') out.line(`Synced once: ${what}.`);
      else out.line(`Stopped after ${result.cycles} cycle(s): ${what}${result.failures > 0 ? `, ${result.failures} failed cycle(s) retried` : ''}.`);
      if (result.quarantine > 0) out.warn(`${result.quarantine} change(s) are quarantined: see "epetsync queue list".`);
    }
  }
}

/** Implements `epetsync monitor`: two-way sync on an interval and in real time; exits 1 after --once when changes are quarantined. */
const monitor: CommandModule<MonitorCommandOptions, MonitorResult> = {
  run,
  render,
  exitCode: (result) => (result.action === 'ran' && result.mode === 'once' && result.quarantine > 0 ? ExitCode.PROBLEMS : ExitCode.OK),
};

export default monitor;
