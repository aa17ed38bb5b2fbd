import { formatAge, formatBytes, type Output } from '../cli/output.js';
import type { CommandContext } from '../cli/context.js';
import type { CommandModule } from '../cli/spec.js';
import { ExitCode } from '../exit-codes.js';
import { readSyncStatus, type SyncStatus } from '../sync/status.js';
import { join } from 'node:path';
import {
  countRows,
  fileSize,
  foreignKeyCheck,
  integrityCheck,
  journalMode,
  listBackups,
  openDatabase,
  quickCheck,
  sqliteCode,
  toLocalDatabaseError,
  type BackupFile,
  type ForeignKeyCheckResult,
  type IntegrityResult,
} from '../db/index.js';

/** Holds the options `epetsync status` accepts. */
export interface StatusOptions {
  deep?: boolean;
}

/** Describes the local database as `epetsync status` reports it (the `--json` result; documented in docs/local-database.md). */
export interface StatusResult {
  database: {
    path: string;
    sizeBytes: number;
    walBytes: number;
    /** Main file plus write-ahead log. */
    totalBytes: number;
    journalMode: string;
    pageSize: number;
    pageCount: number;
    sqliteVersion: string;
  };
  integrity: IntegrityResult;
  foreignKeys: ForeignKeyCheckResult;
  backups: { dir: string; count: number; newest: BackupFile | null };
  tables: Array<{ name: string; rows: number | null; error?: string }>;
  /** The sync side: pending changes, quarantine, conflicts, cursor, last cycle, monitor (docs/sync.md). */
  sync: SyncStatus | null;
}

/** Reads the local database without changing it: size, journal mode, checks, newest backup and row counts. */
async function run(ctx: CommandContext, options: StatusOptions): Promise<StatusResult> {
  const config = ctx.config();
  const path = config.database.path;
  const busyTimeoutMs = config.database.busyTimeoutMs;
  const db = openDatabase(path, { mode: 'read', busyTimeoutMs });
  try {
    const integrity = options.deep === true ? integrityCheck(db) : quickCheck(db);
    const backups = listBackups(path, config.database.backupDir);
    const sizeBytes = fileSize(path);
    const walBytes = fileSize(`${path}-wal`);
    return {
      database: {
        path,
        sizeBytes,
        walBytes,
        totalBytes: sizeBytes + walBytes,
        journalMode: journalMode(db),
        pageSize: Number(db.pragma('page_size', { simple: true })),
        pageCount: Number(db.pragma('page_count', { simple: true })),
        sqliteVersion: String(db.prepare('SELECT sqlite_version()').pluck().get()),
      },
      integrity,
      foreignKeys: foreignKeyCheck(db),
      backups: { dir: config.database.backupDir, count: backups.length, newest: backups[0] ?? null },
      tables: countRows(db).map((t) => ({ name: t.table, rows: t.rows, ...(t.error === undefined ? {} : { error: t.error }) })),
      sync: syncStatus(db, path, join(config.dir, '.epetsync', 'monitor.pid')),
    };
  } catch (error) {
    // A lock taken by the app between two reads, or damage past the schema, still gets a precise error.
    throw sqliteCode(error) === undefined ? error : toLocalDatabaseError(error, path, { busyTimeoutMs, action: 'read' });
  } finally {
    db.close();
  }
}

function render(result: StatusResult, out: Output): void {
  const c = out.color;
  const db = result.database;
  const wal = db.walBytes > 0 ? ` (incl. WAL ${formatBytes(db.walBytes)})` : '';
  out.line(`Database       ${db.path}`);
  out.line(`Size           ${formatBytes(db.totalBytes)}${wal}, ${db.pageCount} pages of ${db.pageSize} B`);
  out.line(`Journal mode   ${db.journalMode}`);
  const integrity = result.integrity;
  if (integrity.ok) {
    out.line(`Integrity      ${c.green('ok')} (${integrity.check})`);
  } else {
    const where = integrity.tables.length > 0 ? ` in ${integrity.tables.join(', ')}` : '';
    out.line(`Integrity      ${c.red('FAILED')} (${integrity.check}): ${integrity.messages.length}${integrity.truncated ? '+' : ''} problem(s)${where}`);
    for (const m of integrity.messages) for (const line of m.split('\n')) out.line(`  ${line}`);
  }
  const fk = result.foreignKeys;
  if (fk.error !== undefined) out.line(`Foreign keys   ${c.yellow('not checked')}: ${fk.error}`);
  else if (fk.ok) out.line(`Foreign keys   ${c.green('ok')}`);
  else {
    const perTable = Object.entries(fk.byTable).map(([t, n]) => `${t}: ${n}`).join(', ');
    out.line(`Foreign keys   ${c.yellow(`${fk.count} row(s) point at missing parents`)} (${perTable})`);
  }
  const newest = result.backups.newest;
  if (newest === null) out.line(`Newest backup  ${c.yellow('none')} in ${result.backups.dir} (take one with "epetsync backup")`);
  else out.line(`Newest backup  ${newest.path}, ${formatAge(newest.ageSeconds)} old, ${formatBytes(newest.sizeBytes)} (${result.backups.count} in all)`);
  renderSync(result.sync, out);
  out.line();
  if (result.tables.length === 0) {
    out.line('No tables.');
    return;
  }
  out.table(['Table', 'Rows'], result.tables.map((t) => [t.name, t.rows === null ? `unreadable: ${t.error ?? ''}` : t.rows]));
}

function syncStatus(db: Parameters<typeof readSyncStatus>[0], path: string, pidFile: string): SyncStatus | null {
  try {
    return readSyncStatus(db, path, pidFile);
  } catch {
    // Damage reaching epetsync's own tables is reported by the integrity line; the rest of status still stands.
    return null;
  }
}

function renderSync(sync: SyncStatus | null, out: Output): void {
  const c = out.color;
  if (sync === null) {
    out.line(`Sync           ${c.yellow('unreadable')} (the sync tables cannot be read)`);
    return;
  }
  if (!sync.captureInstalled) {
    out.line(`Sync           ${c.yellow('not set up')} (run "epetsync monitor --once" to start syncing)`);
    return;
  }
  const monitor = sync.monitor.running ? c.green(`running (pid ${sync.monitor.pid ?? '?'})`) : c.yellow('not running');
  out.line(`Sync monitor   ${monitor}`);
  const oldest = sync.oldestPending ? `, oldest ${formatAge((Date.now() - Date.parse(sync.oldestPending)) / 1000)} old` : '';
  out.line(`Sync queue     ${sync.pending} pending local change(s)${oldest}${sync.unacknowledgedBatches > 0 ? `, ${sync.unacknowledgedBatches} batch(es) awaiting acknowledgement` : ''}`);
  if (sync.quarantined > 0) out.line(`Quarantine     ${c.red(`${sync.quarantined} change(s) refused by the server`)} (see "epetsync queue list")`);
  else out.line(`Quarantine     ${c.green('empty')}`);
  out.line(`Conflicts      ${sync.conflicts} logged${sync.conflicts > 0 ? ' (see "epetsync conflicts")' : ''}`);
  const last = sync.lastCycle as { at?: string; result?: { pushed: number; pulled: number } } | null;
  if (last?.at && last.result) out.line(`Last sync      ${last.at}: pushed ${last.result.pushed}, pulled ${last.result.pulled}`);
}

/** Implements `epetsync status [--deep]`; exits 1 when the integrity check fails. */
const status: CommandModule<StatusOptions, StatusResult> = {
  run,
  render,
  exitCode: (result) => (result.integrity.ok ? ExitCode.OK : ExitCode.PROBLEMS),
};

export default status;
