import { existsSync, statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { requireLocalPath } from '../../config/index.js';
import { foreignKeyCheck, integrityCheck, journalMode, listBackups, quickCheck, restoreDatabase, verifyCopy } from '../../db/index.js';
import { isEpetsyncError } from '../../errors.js';
import { CAPTURE_VERSION, captureVersion, installedTriggers, markForSyncReplay, pendingSummary, INTERNAL_PREFIX } from '../../sync/local-capture.js';
import type { DiagnoseContext } from '../context.js';
import type { Check, CheckFix, CheckOutcome } from '../types.js';

/** Sets the WAL size above which it counts as oversized: checkpoints are being blocked or never run. */
export const WAL_WARN_BYTES = 32 * 1024 * 1024;

/** Returns a duration in seconds as a short phrase: `45 s`, `12 min`, `3 h`, `10 days`. */
export function formatAge(seconds: number): string {
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172_800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86_400)} days`;
}

/** Restores the newest backup that passes integrity_check; the damaged file is moved aside, never deleted. */
const restoreFix: CheckFix = {
  applies: (outcome) => outcome.data?.corrupt === true,
  confirm: 'Replace the corrupt database with the newest good backup (the damaged file is kept beside it)?',
  async apply(ctx) {
    const config = ctx.config();
    await ctx.reset();
    for (const backup of listBackups(config.database.path, config.database.backupDir)) {
      let ok = false;
      try {
        ok = verifyCopy(backup.path, config.database.busyTimeoutMs).integrity.ok;
      } catch {
        ok = false;
      }
      if (!ok) continue;
      const result = restoreDatabase({ databasePath: config.database.path, backupPath: backup.path, busyTimeoutMs: config.database.busyTimeoutMs });
      const aside = result.replaced.find((r) => r.from === config.database.path)?.to;
      const marked = markForSyncReplay(config.database.path, config.database.busyTimeoutMs);
      return `restored ${backup.file} (taken ${backup.takenAt}); the damaged file was kept as ${aside ?? 'a .replaced copy'}${marked ? '; the next monitor cycle brings back what this desktop sent after the backup' : ''}`;
    }
    throw new Error(`no backup in ${config.database.backupDir} passes integrity_check`);
  },
};

function corruptOutcome(error: unknown): CheckOutcome {
  if (isEpetsyncError(error)) {
    const corrupt = error.code === 'EPS_DB_CORRUPT' || error.code === 'EPS_DB_NOT_SQLITE';
    return { status: 'fail', found: error.message, remedy: corrupt ? 'Run "epetsync diagnose --fix --yes" to restore the newest good backup (the damaged file is kept), or "epetsync restore --latest".' : error.hint, data: { code: error.code, corrupt } };
  }
  throw error;
}

/** Lists the local database group: exists, opens, integrity, foreign keys, journal mode, WAL size, change capture, pending changes. */
export const LOCAL_CHECKS: Check[] = [
  {
    id: 'db.exists',
    group: 'local',
    title: 'database file exists',
    needs: ['config.valid'],
    async run(ctx) {
      const config = ctx.config();
      let path: string;
      try {
        path = requireLocalPath(config.database.path, 'database.path', ctx.options.platform);
      } catch (error) {
        if (isEpetsyncError(error)) return { status: 'fail', found: error.message, remedy: error.hint };
        throw error;
      }
      if (!existsSync(path)) {
        const backups = listBackups(path, config.database.backupDir);
        return {
          status: 'fail',
          found: `${path} does not exist`,
          remedy: backups.length > 0 ? 'Check database.path; if the file was lost, "epetsync restore --latest" puts the newest backup back.' : 'Check database.path in config.json (or EPETSYNC_DB): it must name the Vet Portal .sqlite3 file.',
          data: { path },
        };
      }
      const stats = statSync(path);
      if (!stats.isFile()) return { status: 'fail', found: `${path} is not a file`, remedy: 'Point database.path at the .sqlite3 file itself, not its folder.' };
      return { status: 'ok', found: `${path} (${stats.size} bytes)`, data: { path, sizeBytes: stats.size } };
    },
  },
  {
    id: 'db.opens',
    group: 'local',
    title: 'database opens',
    needs: ['db.exists'],
    async run(ctx) {
      try {
        ctx.db();
        return { status: 'ok', found: 'opens as an SQLite database' };
      } catch (error) {
        return corruptOutcome(error);
      }
    },
    fix: restoreFix,
  },
  {
    id: 'db.integrity',
    group: 'local',
    title: 'database integrity',
    needs: ['db.opens'],
    async run(ctx) {
      let result;
      try {
        result = ctx.deep ? integrityCheck(ctx.db()) : quickCheck(ctx.db());
      } catch (error) {
        return corruptOutcome(error);
      }
      if (result.ok) return { status: 'ok', found: `${result.check} ok` };
      return {
        status: 'fail',
        found: `${result.check}: database disk image is malformed (${result.messages.length}${result.truncated ? '+' : ''} problem(s), first: ${result.messages[0]?.replace(/\s+/g, ' ').slice(0, 160) ?? '?'})`,
        remedy: 'Run "epetsync diagnose --fix --yes" to restore the newest good backup (the damaged file is kept), or "epetsync restore --latest".',
        data: { check: result.check, problems: result.messages.slice(0, 10), tables: result.tables, corrupt: true },
      };
    },
    fix: restoreFix,
  },
  {
    id: 'db.foreign-keys',
    group: 'local',
    title: 'foreign keys',
    needs: ['db.integrity'],
    async run(ctx) {
      const r = foreignKeyCheck(ctx.db());
      if (r.error) return { status: 'warn', found: `foreign_key_check could not run: ${r.error}`, remedy: 'A foreign key names a table that does not exist; check the desktop app\'s migrations.' };
      if (r.ok) return { status: 'ok', found: 'no row points at a missing parent' };
      const tables = Object.entries(r.byTable).map(([t, n]) => `${t}: ${n}`).join(', ');
      return { status: 'warn', found: `${r.count} row(s) point at a missing parent (${tables})`, remedy: 'These rows will be refused by PostgreSQL; fix or delete them in the desktop app (epetsync migrate --check-only lists them).', data: { count: r.count, byTable: r.byTable } };
    },
  },
  {
    id: 'db.journal-mode',
    group: 'local',
    title: 'journal mode',
    needs: ['db.opens'],
    async run(ctx) {
      const mode = journalMode(ctx.db());
      if (mode === 'wal' || mode === 'delete' || mode === 'truncate' || mode === 'persist') return { status: 'ok', found: mode, data: { mode } };
      return { status: 'warn', found: `${mode}: a crash can corrupt the database`, remedy: 'Let the desktop app set WAL mode (PRAGMA journal_mode=WAL).', data: { mode } };
    },
  },
  {
    id: 'db.wal-size',
    group: 'local',
    title: 'WAL size',
    needs: ['db.opens'],
    async run(ctx) {
      const wal = `${ctx.config().database.path}-wal`;
      const size = existsSync(wal) ? statSync(wal).size : 0;
      if (size <= WAL_WARN_BYTES) return { status: 'ok', found: size === 0 ? 'no write-ahead log pending' : `${size} bytes`, data: { walBytes: size } };
      return {
        status: 'warn',
        found: `the write-ahead log is ${(size / 1048576).toFixed(1)} MiB: checkpoints are not keeping up (a long-running reader blocks them)`,
        remedy: 'Run "epetsync diagnose --fix" to checkpoint it; if it grows back, see desktop.readers for the process holding the file.',
        data: { walBytes: size },
      };
    },
    fix: {
      async apply(ctx) {
        const config = ctx.config();
        await ctx.reset();
        const db = new Database(config.database.path, { fileMustExist: true, timeout: config.database.busyTimeoutMs });
        try {
          const [row] = db.pragma('wal_checkpoint(TRUNCATE)') as Array<{ busy: number; log: number; checkpointed: number }>;
          if (row && row.busy !== 0) throw new Error(`a reader blocked the checkpoint (${row.checkpointed} of ${row.log} pages copied); close the program holding the database and run it again`);
          return `checkpointed the write-ahead log (${row?.checkpointed ?? 0} pages) and truncated it`;
        } finally {
          db.close();
        }
      },
    },
  },
  {
    id: 'db.capture',
    group: 'local',
    title: 'change-capture triggers',
    needs: ['db.integrity'],
    async run(ctx) {
      const db = ctx.db();
      const version = captureVersion(db);
      if (version === null) {
        return { status: 'warn', found: 'change capture is not installed: desktop edits are not recorded for sync', remedy: 'Run "epetsync diagnose --fix" (or epetsync monitor --once) to install the triggers.', data: { installed: false } };
      }
      const triggers = installedTriggers(db);
      const incomplete = [...triggers.entries()].filter(([, names]) => names.length !== 3).map(([t]) => t);
      const captured = (db.prepare(`SELECT DISTINCT table_name FROM ${INTERNAL_PREFIX}changelog`).pluck().all() as string[]);
      // Tables that have had changes recorded but have no trigger any more lost theirs.
      const lost = captured.filter((t) => !triggers.has(t));
      const expected = ctx.memo.get('api.tables') as string[] | undefined;
      const missing = expected ? expected.filter((t) => !triggers.has(t)) : [];
      const data = { installed: true, version, tables: [...triggers.keys()].sort(), missing: [...new Set([...incomplete, ...lost, ...missing])] };
      if (version < CAPTURE_VERSION) return { status: 'warn', found: `triggers are version ${version}, this epetsync installs ${CAPTURE_VERSION}`, remedy: 'Run "epetsync diagnose --fix" to upgrade them.', data };
      if (data.missing.length > 0) {
        return { status: 'fail', found: `capture triggers are missing on ${data.missing.join(', ')}: desktop edits there are not synced`, remedy: 'Run "epetsync diagnose --fix" to reinstall them (edits made meanwhile are found by comparing both sides: epetsync diagnose sync.drift).', data };
      }
      if (triggers.size === 0) return { status: 'fail', found: 'capture is installed but no trigger is left', remedy: 'Run "epetsync diagnose --fix" to reinstall them.', data };
      return { status: 'ok', found: `version ${version} on ${triggers.size} table(s)`, data };
    },
    fix: {
      async apply(ctx) {
        // The scope comes from the server: install exactly what the engine would.
        await ctx.reset();
        const config = ctx.config();
        const client = ctx.client();
        const [{ acquireLock }, { SyncEngine }, { openDatabase }] = await Promise.all([import('../../sync/lock.js'), import('../../sync/engine.js'), import('../../db/index.js')]);
        const lock = acquireLock(config.database.path, 'diagnose --fix');
        try {
          const db = openDatabase(config.database.path, { mode: 'write', busyTimeoutMs: config.database.busyTimeoutMs });
          try {
            db.defaultSafeIntegers(true);
            const engine = new SyncEngine({ db, remote: client, policy: config.sync.conflictPolicy, updatedAtColumn: config.sync.updatedAtColumn, batchSize: config.sync.batchSize, timezone: config.database.timezone, include: config.sync.include, exclude: config.sync.exclude, logger: ctx.options.logger });
            const prepared = await engine.prepare(ctx.options.signal);
            return `installed capture triggers (version ${CAPTURE_VERSION}) on ${prepared.tables.length} table(s)`;
          } finally {
            db.close();
          }
        } finally {
          lock.release();
        }
      },
    },
  },
  {
    id: 'db.pending',
    group: 'local',
    title: 'pending local changes',
    needs: ['db.integrity'],
    async run(ctx) {
      const db = ctx.db();
      if (captureVersion(db) === null) return { status: 'skipped', found: 'change capture is not installed' };
      const p = pendingSummary(db);
      if (p.count === 0) return { status: 'ok', found: 'none waiting', data: { count: 0, oldest: null } };
      const seconds = (ctx.now().getTime() - Date.parse(p.oldest ?? '')) / 1000;
      const limit = Math.max(3600, 10 * ctx.config().remote.syncInterval);
      const data = { count: p.count, oldest: p.oldest, oldestAgeSeconds: Math.round(seconds) };
      if (Number.isFinite(seconds) && seconds > limit) {
        return { status: 'warn', found: `${p.count} change(s) waiting, the oldest for ${formatAge(seconds)}`, remedy: 'Sync is not running or keeps failing: run "epetsync monitor --once" and read its error.', data };
      }
      return { status: 'ok', found: `${p.count} change(s) waiting, the oldest for ${Number.isFinite(seconds) ? formatAge(seconds) : '?'}`, data };
    },
  },
];
