import { unlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { remoteChecksum, remoteCounts } from '../../client/migrate-api.js';
import { quoteIdent } from '../../db/index.js';
import { TableChecksum } from '../../sync/checksum.js';
import { toWire, type SqliteValue } from '../../sync/convert.js';
import { META, captureVersion, installedTriggers, readMeta } from '../../sync/local-capture.js';
import { isProcessAlive, lockPath, readLock } from '../../sync/lock.js';
import { META_LAST_CYCLE } from '../../sync/monitor.js';
import { parsePgType } from '../../sync/pg-type.js';
import { listQuarantine } from '../../sync/store.js';
import type { ServerInfo } from '../../client/index.js';
import type { DiagnoseContext } from '../context.js';
import type { Check } from '../types.js';
import { LOCAL_CHECKS, formatAge } from './local.js';
import { serverInfo } from './remote.js';

/** Sets the clock difference with the server above which a warning is given (newest-wins compares times). */
export const CLOCK_SKEW_WARN_SECONDS = 60;

/** Returns the synced tables that exist locally with their shared columns: the engine's scope, read-only. */
function scope(ctx: DiagnoseContext, info: ServerInfo): Array<{ name: string; columns: Array<{ name: string; type: string }> }> {
  const db = ctx.db();
  const config = ctx.config();
  const local = new Set(db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).pluck().all() as string[]);
  return info.tables
    .filter((t) => local.has(t.name) && (!config.sync.include || config.sync.include.includes(t.name)) && !config.sync.exclude.includes(t.name))
    .map((t) => {
      const cols = new Set(db.prepare('SELECT name FROM pragma_table_info(?)').pluck().all(t.name) as string[]);
      return { name: t.name, columns: t.columns.filter((c) => cols.has(c.name)).map((c) => ({ name: c.name, type: c.type })) };
    });
}

function localChecksum(ctx: DiagnoseContext, table: string, columns: Array<{ name: string; type: string }>): string {
  const types = columns.map((c) => parsePgType(c.type));
  const sum = new TableChecksum(types);
  const stmt = ctx.db().prepare(`SELECT ${columns.map((c) => quoteIdent(c.name)).join(', ')} FROM ${quoteIdent(table)}`).raw(true).safeIntegers(true);
  for (const row of stmt.iterate() as Iterable<SqliteValue[]>) {
    const values = row.map((v, i) => {
      const c = toWire(v, types[i]!, { timezone: ctx.config().database.timezone });
      return c.ok ? c.value : `\u0000unconvertible:${String(v)}`;
    });
    sum.add(values);
  }
  return sum.digest();
}

const captureFix = LOCAL_CHECKS.find((c) => c.id === 'db.capture')!.fix!;

/** Lists the sync group: capture scope, last cycle, cursor, drift, clock skew, monitor lock, quarantine. */
export const SYNC_CHECKS: Check[] = [
  {
    id: 'sync.scope',
    group: 'sync',
    title: 'every synced table is captured',
    needs: ['auth.permission', 'db.capture'],
    async run(ctx) {
      const info = serverInfo(ctx)!;
      const db = ctx.db();
      if (captureVersion(db) === null) return { status: 'skipped', found: 'change capture is not installed (see db.capture)' };
      const triggers = installedTriggers(db);
      const missing = scope(ctx, info).map((t) => t.name).filter((t) => !triggers.has(t));
      if (missing.length > 0) return { status: 'fail', found: `synced table(s) without capture triggers: ${missing.join(', ')}`, remedy: 'Run "epetsync diagnose --fix" to install them.', data: { missing } };
      return { status: 'ok', found: `${triggers.size} synced table(s) captured` };
    },
    fix: captureFix,
  },
  {
    id: 'sync.last-cycle',
    group: 'sync',
    title: 'last successful sync cycle',
    needs: ['db.integrity'],
    async run(ctx) {
      const text = readMeta(ctx.db(), META_LAST_CYCLE);
      const interval = ctx.config().remote.syncInterval;
      if (text === null) return { status: 'warn', found: 'no sync cycle has completed on this database', remedy: 'Run "epetsync fix" (or epetsync monitor --once), then schedule epetsync monitor.', data: { lastCycle: null } };
      let at: number;
      try {
        at = Date.parse((JSON.parse(text) as { at: string }).at);
      } catch {
        at = Number.NaN;
      }
      if (!Number.isFinite(at)) return { status: 'warn', found: 'the last cycle record is unreadable', remedy: 'Run "epetsync monitor --once" to write a new one.' };
      const seconds = (ctx.now().getTime() - at) / 1000;
      const data = { lastCycleAt: new Date(at).toISOString(), ageSeconds: Math.round(seconds), intervalSeconds: interval };
      if (seconds > 3 * interval + 60) {
        return { status: 'warn', found: `the last successful cycle was ${formatAge(seconds)} ago (interval ${interval} s)`, remedy: 'Start the monitor (epetsync monitor --background, or the scheduled task) and check its log.', data };
      }
      return { status: 'ok', found: `${formatAge(seconds)} ago (interval ${interval} s)`, data };
    },
  },
  {
    id: 'sync.cursor',
    group: 'sync',
    title: 'pull cursor valid',
    needs: ['auth.permission'],
    async run(ctx) {
      const info = serverInfo(ctx)!;
      const db = ctx.db();
      const cursor = readMeta(db, META.pullCursor);
      if (cursor === null) return { status: 'skipped', found: 'no cursor yet (nothing pulled)' };
      const parse = (c: string): [bigint, bigint] | null => {
        const m = /^c1\.(\d+)\.(\d+)$/.exec(c);
        return m ? [BigInt(m[1]!), BigInt(m[2]!)] : null;
      };
      const mine = parse(cursor);
      const head = parse(info.head_cursor);
      if (mine === null) return { status: 'fail', found: `the cursor ${JSON.stringify(cursor.slice(0, 60))} is not one this server issues`, remedy: 'The database was synced with another server: run "epetsync migrate --verify" before syncing.' };
      if (head !== null && (mine[1] > head[1])) return { status: 'fail', found: `the cursor ${cursor} is ahead of the server's head ${info.head_cursor}: the server was reset or replaced`, remedy: 'Run "epetsync migrate --verify" and then "epetsync fix".', data: { cursor, head: info.head_cursor } };
      return { status: 'ok', found: cursor === info.head_cursor ? `${cursor} (at the head)` : `${cursor} (head ${info.head_cursor})`, data: { cursor, head: info.head_cursor } };
    },
  },
  {
    id: 'sync.drift',
    group: 'sync',
    title: 'both sides hold the same rows',
    needs: ['auth.permission', 'db.integrity'],
    async run(ctx) {
      const info = serverInfo(ctx)!;
      const tables = scope(ctx, info);
      if (tables.length === 0) return { status: 'skipped', found: 'no synced table exists locally' };
      const counts = await remoteCounts(ctx.client(), tables.map((t) => t.name), { signal: ctx.options.signal });
      const remote = new Map(counts.tables.map((t) => [t.table, t.rows]));
      const db = ctx.db();
      const differ: Array<{ table: string; local: number; remote: number; checksum?: boolean }> = [];
      for (const t of tables) {
        const local = Number(db.prepare(`SELECT count(*) FROM ${quoteIdent(t.name)}`).pluck().safeIntegers(false).get());
        const r = remote.get(t.name) ?? 0;
        if (local !== r) differ.push({ table: t.name, local, remote: r });
        else if (ctx.deep) {
          const answer = await remoteChecksum(ctx.client(), t.name, t.columns.map((c) => c.name), { signal: ctx.options.signal });
          if (answer.checksum !== localChecksum(ctx, t.name, t.columns)) differ.push({ table: t.name, local, remote: r, checksum: true });
        }
      }
      const method = ctx.deep ? 'row counts and checksums' : 'row counts';
      if (differ.length === 0) return { status: 'ok', found: `${tables.length} table(s) agree (${method})`, data: { method, differ } };
      const pending = captureVersion(db) === null ? 0 : Number(db.prepare('SELECT count(*) FROM _epetsync_changelog').pluck().safeIntegers(false).get());
      const cursor = readMeta(db, META.pullCursor);
      const list = differ.map((d) => (d.checksum ? `${d.table} (same count, different contents)` : `${d.table} (local ${d.local}, remote ${d.remote})`)).join(', ');
      const data = { method, differ, pending, cursor, head: counts.head_cursor };
      if (pending > 0 || cursor !== counts.head_cursor) {
        return { status: 'warn', found: `${list}; ${pending} local change(s) and the remote feed since ${cursor ?? 'the start'} are still to sync`, remedy: 'Run "epetsync monitor --once" and diagnose again.', data };
      }
      return {
        status: 'fail',
        found: `the two sides differ with nothing left to sync: ${list}`,
        remedy: 'A side was written past epetsync (a direct SQL write or restore): run "epetsync migrate --verify" to see the rows, then "epetsync migrate --force" from the side that is right.',
        data,
      };
    },
  },
  {
    id: 'sync.clock-skew',
    group: 'sync',
    title: 'clock agrees with the server',
    needs: ['auth.permission'],
    async run(ctx) {
      const info = serverInfo(ctx)!;
      const server = Date.parse(info.server_time);
      if (!Number.isFinite(server)) return { status: 'skipped', found: 'the server did not say its time' };
      const skew = (ctx.now().getTime() - server) / 1000;
      const data = { skewSeconds: Math.round(skew * 10) / 10, serverTime: info.server_time };
      if (Math.abs(skew) > CLOCK_SKEW_WARN_SECONDS) {
        return { status: 'warn', found: `this clock is ${Math.abs(Math.round(skew))} s ${skew > 0 ? 'ahead of' : 'behind'} the server`, remedy: 'Turn on automatic time (Windows: Settings → Time → Set time automatically); newest-wins and token expiry compare times.', data };
      }
      return { status: 'ok', found: `${Math.abs(Math.round(skew))} s apart`, data };
    },
  },
  {
    id: 'sync.monitor',
    group: 'sync',
    title: 'monitor running, no stale lock',
    needs: ['db.exists'],
    async run(ctx) {
      const path = ctx.config().database.path;
      const owner = readLock(path);
      if (owner === null) return { status: 'ok', found: 'no monitor holds the database (none running)', data: { running: false } };
      const sameHost = owner.host === '' || owner.host === hostname();
      if (!sameHost) return { status: 'ok', found: `held by epetsync pid ${owner.pid} on ${owner.host}`, data: { running: true, pid: owner.pid, host: owner.host } };
      if (isProcessAlive(owner.pid)) return { status: 'ok', found: `running: ${owner.command || 'epetsync'} (pid ${owner.pid}) since ${owner.startedAt}`, data: { running: true, pid: owner.pid } };
      return {
        status: 'warn',
        found: `a stale lock ${lockPath(path)} was left by pid ${owner.pid || '?'} (${owner.command || 'unknown'}), which is no longer running`,
        remedy: 'Run "epetsync diagnose --fix" to remove it (a new monitor also takes it over).',
        data: { running: false, stale: true, pid: owner.pid },
      };
    },
    fix: {
      applies: (outcome) => outcome.data?.stale === true,
      async apply(ctx) {
        const path = ctx.config().database.path;
        const owner = readLock(path);
        if (owner === null) return 'the lock was already gone';
        if (isProcessAlive(owner.pid)) throw new Error(`pid ${owner.pid} holds the lock and is running`);
        unlinkSync(lockPath(path));
        return `removed the stale lock left by pid ${owner.pid}`;
      },
    },
  },
  {
    id: 'sync.quarantine',
    group: 'sync',
    title: 'no quarantined changes',
    needs: ['db.integrity'],
    async run(ctx) {
      const q = listQuarantine(ctx.db());
      if (q.length === 0) return { status: 'ok', found: 'none', data: { count: 0 } };
      const tables = [...new Set(q.map((r) => r.table))].join(', ');
      return { status: 'warn', found: `${q.length} change(s) the server refused wait in the quarantine (${tables}; first: ${q[0]!.reason.slice(0, 120)})`, remedy: 'Run "epetsync queue" to see them, then "epetsync queue retry ID" or "discard ID".', data: { count: q.length } };
    },
  },
];
