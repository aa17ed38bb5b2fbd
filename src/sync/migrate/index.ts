import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as setImmediatePromise, setTimeout as sleep } from 'node:timers/promises';
import type { ServerInfo, TableInfo as RemoteTable } from '../../client/index.js';
import { isRetryable, RequestRejectedError, type RemoteDatabaseClient } from '../../client/index.js';
import { createTables, remoteChecksum, remoteCounts, remoteRows, finishLoad, stageRows, replaceTables } from '../../client/migrate-api.js';
import { stateFilePath, readState, updateState } from '../../client/state.js';
import type { EpetsyncConfig } from '../../config/index.js';
import { formatStamp, introspectSchema, openDatabase, quickCheck, takeBackup, type SqliteDatabase, type TableInfo as LocalTable } from '../../db/index.js';
import { AuthError, EpetsyncError, MigrationError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { TableChecksum } from '../checksum.js';
import type { ConvertOptions, NoteKind, WireValue } from '../convert.js';
import { INTERNAL_PREFIX, installCapture, META, readMeta, writeMeta } from '../local-capture.js';
import { acquireLock, type HeldLock } from '../lock.js';
import { parsePgType } from '../pg-type.js';
import { createTableSql, mapTable, type TableSpec } from './schema-map.js';
import { buildMapping, convertRow, localKey, readPages, reportable, type RowProblem, type TableMapping, type ValueProblemKind } from './rows.js';

/**
 * `epetsync migrate`: moves every row of the desktop database into the web app's PostgreSQL
 * through the sync API's bulk load, proves both sides hold the same data, and survives being
 * killed at any moment (each bulk request is one transaction and one checkpoint on the server;
 * a rerun continues after the last key the server acknowledged). docs/migrate.md is the readable
 * version.
 */

/** Django tables migrate never carries (the sync deny list). */
const NEVER_MIGRATED = new Set(['django_migrations', 'django_session', 'django_admin_log', 'django_content_type', 'auth_permission', 'auth_group_permissions', 'auth_user_user_permissions']);
/** Rows per bulk request: one request is one checkpoint. */
const CHUNK_ROWS = 5000;
/** Approximate wire bytes per bulk request (well under the server's 64 MiB body limit). */
const CHUNK_BYTES = 8 * 1024 * 1024;
/** Rows per second assumed for the duration estimate before anything was measured. */
const ESTIMATED_ROWS_PER_SECOND = 15_000;
const SAMPLE_KEYS = 5;
/** Key in the desktop database's `_epetsync_meta` naming the last migrate's reject file (read by `--verify`). */
const REJECT_FILE_KEY = 'migrate_reject_file';

/** Holds the options of one migrate run. */
export interface MigrateOptions {
  checkOnly?: boolean;
  force?: boolean;
  verifyOnly?: boolean;
  tables?: string[] | undefined;
  createSchema?: boolean;
  rejectFile?: string | undefined;
}

/** Describes what a migrate run needs from its surroundings. */
export interface MigrateDeps {
  config: EpetsyncConfig;
  client: RemoteDatabaseClient;
  logger: Logger;
  signal: AbortSignal;
  /** Called as rows go out (at most once per bulk request) and when a table is done. */
  onProgress?: (progress: TableProgress) => void;
  now?: () => Date;
}

/** Describes the progress of one table's load. */
export interface TableProgress {
  table: string;
  rows: number;
  total: number;
  seconds: number;
  done: boolean;
}

/** Counts one kind of value problem in one column, with a few primary keys to look at. */
export interface AuditFinding {
  column: string;
  kind: ValueProblemKind | NoteKind;
  count: number;
  samples: Array<Record<string, WireValue>>;
  /** True when the value cannot be sent as it is (a note is only worth knowing). */
  blocking: boolean;
  /** The reason and the value of the first sample, for problems. */
  example?: string;
  value?: WireValue;
}

/** Describes one column difference between the local and the remote table. */
export interface ColumnIssue {
  column: string;
  kind: 'missing-remotely' | 'required-remotely' | 'missing-locally' | 'type-mismatch';
  message: string;
  blocking: boolean;
}

/** Describes one table in the migrate report. */
export interface TableReport {
  table: string;
  localRows: number;
  remoteRows: number | null;
  /** What migrate does or did with the table. */
  action: 'load' | 'resume' | 'same' | 'differs' | 'replace' | 'missing-remotely' | 'check' | 'create';
  columns: ColumnIssue[];
  audit: AuditFinding[];
  estimatedBytes: number;
  estimatedSeconds: number;
  loaded: number;
  rejected: number;
  seconds: number;
  rowsPerSecond: number;
  verified: boolean | null;
  localChecksum?: string;
  remoteChecksum?: string;
  /** A few primary keys present remotely that the local table lacks or holds differently (refusal report). */
  differingKeys?: Array<Record<string, WireValue>>;
}

/** Describes a blocking problem in plain words. */
export interface BlockingProblem {
  table?: string;
  message: string;
  hint: string;
}

/** Reports one migrate run (the `--json` result; documented in docs/migrate.md). */
export interface MigrateResult {
  mode: 'check' | 'migrate' | 'verify';
  ok: boolean;
  database: string;
  server: { url: string; protocol: number; engine: string; serverVersion: string };
  quickCheck: 'ok' | string;
  tables: TableReport[];
  skipped: Array<{ table: string; reason: string }>;
  blocking: BlockingProblem[];
  backup: string | null;
  remoteBackup: string | null;
  rejectFile: string | null;
  rejected: number;
  cursor: string | null;
  sequences: Array<{ table: string; sequence: string; next_value: string }>;
  resumed: boolean;
  mismatched: string[];
  seconds: number;
  /** With --create-schema: the statements run (or, with --check-only, that would run) and what cannot be carried over. */
  schema: { statements: string[]; created: string[]; notCarried: Array<{ table: string; items: string[] }> } | null;
}

interface Planned {
  report: TableReport;
  mapping: TableMapping;
  remote: RemoteTable;
  local: LocalTable;
}

interface MigrateState {
  loadId: string;
  /** Load ids of tables that started over (their remote table was emptied after a partial load). */
  tableLoadIds?: Record<string, string>;
  url: string;
  database: string;
  mode: 'load' | 'replace';
  cursor: string;
  startedAt: string;
  remoteBackup: string | null;
  /** The reject file rows were set aside in; a continued run must use the same one. */
  rejectFile?: string | null;
}

/** Runs preflight, then (unless --check-only or --verify) the load, finish and verify; returns the report. */
export async function runMigrate(deps: MigrateDeps, options: MigrateOptions): Promise<MigrateResult> {
  const started = performance.now();
  const { config, client, logger } = deps;
  const convert: ConvertOptions = { timezone: config.database.timezone };
  const mode: MigrateResult['mode'] = options.checkOnly ? 'check' : options.verifyOnly ? 'verify' : 'migrate';
  const db = openDatabase(config.database.path, { mode: 'read', busyTimeoutMs: config.database.busyTimeoutMs });
  let lock: HeldLock | undefined;
  try {
    const integrity = quickCheck(db);
    const quick = integrity.ok ? 'ok' : integrity.messages.slice(0, 3).join('; ');
    let info = await client.info({ signal: deps.signal });
    const result: MigrateResult = {
      mode,
      ok: true,
      database: config.database.path,
      server: { url: client.url.href, protocol: info.protocol, engine: info.engine, serverVersion: info.server_version },
      quickCheck: quick,
      tables: [],
      skipped: [],
      blocking: [],
      backup: null,
      remoteBackup: null,
      rejectFile: options.rejectFile ?? null,
      rejected: 0,
      cursor: null,
      sequences: [],
      resumed: false,
      mismatched: [],
      seconds: 0,
      schema: null,
    };
    if (!integrity.ok) {
      result.blocking.push({ message: `The local database fails quick_check: ${quick}`, hint: 'Restore a good backup (epetsync restore --latest) or repair the file before migrating.' });
    }
    let toCreate = new Map<string, TableSpec>();
    if (options.createSchema) {
      toCreate = mapMissingTables(db, info, config, options, result);
      if (toCreate.size > 0 && mode === 'migrate' && integrity.ok) {
        const answer = await createTables(client, [...toCreate.values()], { signal: deps.signal });
        result.schema!.created = answer.created;
        result.schema!.statements = answer.statements;
        logger.info({ tables: answer.created }, 'remote tables created');
        info = await waitForTables(client, answer.created, deps.signal, logger);
        toCreate = new Map();
      }
    }
    const planned = plan(db, info, config, options, result, toCreate);
    const known = new Set(info.tables.map((t) => t.name));
    const counts = await remoteCounts(client, planned.map((p) => p.remote.name).filter((n) => known.has(n)), { signal: deps.signal });
    for (const c of counts.tables) {
      const p = planned.find((x) => x.remote.name === c.table);
      if (p) p.report.remoteRows = c.rows;
    }
    for (const p of planned) {
      p.report.localRows = (db.prepare(`SELECT count(*) AS n FROM main.${quote(p.local.name)}`).safeIntegers(false).get() as { n: number }).n;
    }

    if (mode === 'verify') {
      // The reject file of the last migrate, so rows it set aside (and their children) are not expected remotely.
      const rejectFile = options.rejectFile ?? readMeta(db, REJECT_FILE_KEY);
      result.rejectFile = rejectFile;
      const known = rejectFile && existsSync(rejectFile) ? new RejectLog(rejectFile, true) : null;
      await verifyAll(db, client, planned, convert, deps.signal, result, known);
      return finishResult(result, started);
    }

    for (const p of planned) audit(db, p, convert, deps.signal);
    // Rows an earlier run set aside are not expected remotely.
    const earlierRejects = options.rejectFile && existsSync(options.rejectFile) ? new RejectLog(options.rejectFile, true) : null;
    collectBlocking(planned, options, result);

    // Classify the remote: empty, a load of ours to continue, the same data, or different data.
    const statePath = stateFilePath(config.dir);
    const saved = (readState(statePath).migrate ?? null) as MigrateState | null;
    const state = saved && saved.url === client.url.href && saved.database === config.database.path ? saved : null;
    for (const p of planned) {
      if (p.report.action === 'create' || p.report.action === 'missing-remotely') continue;
      if (p.report.remoteRows === 0) {
        p.report.action = 'load';
        continue;
      }
      if (state) {
        const status = await client.bulkStatus(p.remote.name, tableLoadId(state, p.remote.name), { signal: deps.signal });
        if ((state.mode === 'load' && status.total_rows === p.report.remoteRows) || state.mode === 'replace') {
          p.report.action = state.mode === 'replace' ? 'replace' : 'resume';
          continue;
        }
      }
      const same = await compareTable(db, client, p, convert, deps.signal, earlierRejects);
      p.report.action = same ? 'same' : 'differs';
      if (!same) p.report.differingKeys = await differingKeys(db, client, p, convert, deps.signal);
    }
    const differing = planned.filter((p) => p.report.action === 'differs');
    result.tables = planned.map((p) => p.report);
    if (mode === 'check') {
      for (const p of differing) {
        result.blocking.push({
          table: p.remote.name,
          message: `Remote table "${p.remote.name}" already holds different data (${p.report.remoteRows} rows remotely, ${p.report.localRows} locally${p.report.differingKeys?.length ? `; differing keys ${p.report.differingKeys.map((k) => JSON.stringify(k)).join(', ')}` : ''})`,
          hint: 'Run epetsync migrate --force to replace it (a verified copy of the remote is kept first), or empty it in the web app.',
        });
      }
      return finishResult(result, started);
    }
    if (result.blocking.length > 0) throw blockingError(result);
    if (differing.length > 0 && !options.force) {
      throw new MigrationError('EPS_MIGRATE_REMOTE_NOT_EMPTY', `The remote already holds different data in ${differing.map((p) => `"${p.remote.name}" (${p.report.remoteRows} rows remotely, ${p.report.localRows} locally${p.report.differingKeys?.length ? `; e.g. key ${JSON.stringify(p.report.differingKeys[0])}` : ''})`).join(', ')}`, {
        hint: 'Run epetsync migrate --check-only to see every difference; --force replaces the remote after keeping a verified copy of it in the backup folder.',
        details: { tables: differing.map((p) => ({ table: p.remote.name, local_rows: p.report.localRows, remote_rows: p.report.remoteRows, differing_keys: p.report.differingKeys ?? [] })) },
      });
    }

    const replace = differing.length > 0 || state?.mode === 'replace';
    const now = deps.now ?? (() => new Date());
    // One writer at a time: monitor or another migrate on the same database would race the load.
    lock = acquireLock(config.database.path, 'migrate');
    if (lock.takenOver) logger.warn({ pid: lock.takenOver.pid, command: lock.takenOver.command }, 'took over the lock of an epetsync that ended without releasing it');
    const backup = await takeBackup({ databasePath: config.database.path, backupDir: config.database.backupDir, busyTimeoutMs: config.database.busyTimeoutMs, now });
    result.backup = backup.backup.path;
    logger.info({ backup: result.backup }, 'local backup taken before migrate');

    let current: MigrateState;
    if (state && (state.mode === 'replace') === replace) {
      if (state.rejectFile && state.rejectFile !== (options.rejectFile ?? null)) {
        throw new EpetsyncError('EPS_USAGE', `This migrate was started with --reject-file ${state.rejectFile}: continue it with the same file`, {
          hint: `Run epetsync migrate --reject-file ${state.rejectFile} (rows set aside before the interruption are listed there).`,
        });
      }
      current = options.rejectFile && !state.rejectFile ? { ...state, rejectFile: options.rejectFile } : state;
      if (current !== state) {
        const next = current;
        updateState(statePath, (st) => {
          st.migrate = next;
        });
      }
      result.resumed = true;
      logger.info({ loadId: state.loadId }, 'continuing the interrupted migrate');
    } else {
      current = {
        loadId: `migrate-${formatStamp(now())}-${randomBytes(4).toString('hex')}`,
        url: client.url.href,
        database: config.database.path,
        mode: replace ? 'replace' : 'load',
        // The feed head before any row moves: monitor later replays what the web app changed meanwhile.
        cursor: counts.head_cursor,
        startedAt: now().toISOString(),
        remoteBackup: null,
        rejectFile: options.rejectFile ?? null,
      };
      if (replace) current.remoteBackup = await downloadRemoteCopy(client, info, planned, join(config.database.backupDir, `remote-${formatStamp(now())}`), deps.signal, logger);
      updateState(statePath, (s) => {
        s.migrate = current;
      });
    }
    result.remoteBackup = current.remoteBackup;

    // Capture local writes from now on: rows the desktop app changes during the load are pushed later by monitor.
    const captured = captureScope(db, info, config);
    const writer = openDatabase(config.database.path, { mode: 'write', busyTimeoutMs: config.database.busyTimeoutMs });
    try {
      installCapture(writer, captured);
    } finally {
      writer.close();
    }
    // From here every local write to a captured table leaves a changelog entry after this mark: a table
    // loaded whole and without such an entry still holds exactly the rows the load read (see verifyAll).
    const untouched: LoadChecksums = {
      mark: (db.prepare(`SELECT coalesce(max(seq), 0) AS s FROM main.${quote(`${INTERNAL_PREFIX}changelog`)}`).safeIntegers(false).get() as { s: number }).s,
      captured: new Set(captured.map((t) => t.name)),
      sums: new Map(),
      remote: new Map(),
    };

    const rejects = options.rejectFile ? new RejectLog(options.rejectFile, false) : null;
    try {
      for (const p of planned) {
        // A replace swaps every table at once (children reference parents), so unchanged tables are staged too.
        if (p.report.action === 'same' && !replace) continue;
        await loadTable(db, client, p, current, replace, convert, rejects, deps, untouched, (table, id) => {
          current.tableLoadIds = { ...current.tableLoadIds, [table]: id };
          updateState(statePath, (st) => {
            st.migrate = current;
          });
        });
        if (!replace) {
          // The table's rows are all in now: the server computes its checksum while the next table loads.
          const asked = remoteChecksum(client, p.remote.name, p.mapping.columns.map((c) => c.name), { signal: deps.signal });
          asked.catch(() => {});
          untouched.remote.set(p.remote.name, asked);
        }
      }
    } finally {
      rejects?.close();
    }
    if (replace) {
      try {
        const answer = await replaceTables(client, current.loadId, planned.map((p) => p.remote.name), { signal: deps.signal });
        logger.info({ tables: answer.tables }, 'remote tables replaced');
      } catch (error) {
        if (!(error instanceof RequestRejectedError)) throw error;
        // The server rolled the replace back and dropped the staged rows: the next run starts over.
        updateState(statePath, (s) => {
          delete s.migrate;
        });
        throw new MigrationError('EPS_MIGRATE_REPLACE_FAILED', `The remote refused to replace its tables, and was left exactly as it was: ${error.message}`, {
          hint: `Fix the rows named above in the desktop database (a foreign key to a missing row, a duplicate in a unique column), then run migrate --force again. The remote copy taken first is in ${current.remoteBackup ?? 'the backup folder'}.`,
          cause: error,
          details: { remote_backup: current.remoteBackup, wire_details: error.details ?? {} },
        });
      }
    }
    const finish = await finishLoad(client, planned.map((p) => p.remote.name), { signal: deps.signal });
    result.sequences = finish.sequences;

    const meta = openDatabase(config.database.path, { mode: 'write', busyTimeoutMs: config.database.busyTimeoutMs });
    try {
      result.cursor = meta.transaction(() => {
        // A cursor monitor already holds for this server is older than ours: keep it (replaying the feed
        // is idempotent; skipping past it could lose web-app changes to tables this run did not touch).
        const held = readMeta(meta, META.serverId) === client.url.href ? readMeta(meta, META.pullCursor) : null;
        const cursor = held ?? current.cursor;
        writeMeta(meta, META.pullCursor, cursor);
        writeMeta(meta, META.serverId, client.url.href);
        writeMeta(meta, META.migratedAt, now().toISOString());
        writeMeta(meta, REJECT_FILE_KEY, options.rejectFile ?? null);
        return cursor;
      }).immediate();
    } finally {
      meta.close();
    }
    updateState(statePath, (s) => {
      delete s.migrate;
    });

    result.rejected = planned.reduce((n, p) => n + p.report.rejected, 0);
    await verifyAll(db, client, planned, convert, deps.signal, result, rejects, untouched);
    return finishResult(result, started);
  } finally {
    lock?.release();
    db.close();
  }
}

function finishResult(result: MigrateResult, started: number): MigrateResult {
  result.seconds = round((performance.now() - started) / 1000);
  result.ok = result.blocking.length === 0 && result.mismatched.length === 0;
  return result;
}

function quote(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

/** Matches local tables to remote ones and reports column differences. */
function plan(db: SqliteDatabase, info: ServerInfo, config: EpetsyncConfig, options: MigrateOptions, result: MigrateResult, toCreate: Map<string, TableSpec>): Planned[] {
  const locals = new Map(introspectSchema(db).map((t) => [t.name, t]));
  const remotes = new Map(info.tables.map((t) => [t.name, t]));
  const unsynced = new Map(info.unsynced_tables.map((t) => [t.name, t.reason]));
  if (options.tables) {
    const unknown = options.tables.filter((t) => !locals.has(t));
    if (unknown.length > 0) {
      throw new EpetsyncError('EPS_USAGE', `--tables names ${unknown.map((t) => `"${t}"`).join(', ')}, which the local database does not have`, {
        hint: `Local tables: ${[...locals.keys()].join(', ')}`,
      });
    }
  }
  const wanted = options.tables ? new Set(options.tables) : null;
  const exclude = new Set(config.sync.exclude);
  const include = config.sync.include ? new Set(config.sync.include) : null;
  const out: Planned[] = [];
  for (const local of locals.values()) {
    if (wanted && !wanted.has(local.name)) continue;
    if (!wanted && (NEVER_MIGRATED.has(local.name) || exclude.has(local.name) || (include && !include.has(local.name)))) {
      result.skipped.push({ table: local.name, reason: NEVER_MIGRATED.has(local.name) ? 'Django bookkeeping table, never synced' : 'excluded by sync.tables in config.json' });
      continue;
    }
    const spec = toCreate.get(local.name);
    const remote = remotes.get(local.name) ?? (spec ? specAsRemote(spec) : undefined);
    if (!remote) {
      const why = unsynced.get(local.name);
      if (why === 'excluded' || why === 'not included') {
        result.skipped.push({ table: local.name, reason: `the server does not sync it (${why})` });
        continue;
      }
      result.blocking.push({
        table: local.name,
        message: why ? `Table "${local.name}" exists remotely but cannot be loaded: ${why}` : `Table "${local.name}" does not exist in the remote database`,
        hint: why ? 'Give the remote table a primary key (Django adds an id), then run migrate again.' : "Create it with the web app's migrations (python manage.py migrate), or leave it out with --tables.",
      });
      out.push({ report: emptyReport(local.name, 'missing-remotely'), mapping: { name: local.name, columns: [], primaryKey: [], pkIndex: [] }, remote: { name: local.name, primary_key: ['?'], columns: [] } as unknown as RemoteTable, local });
      continue;
    }
    const localColumns = new Set(local.columns.filter((c) => c.hidden === 0).map((c) => c.name));
    const report = emptyReport(local.name, spec ? 'create' : 'check');
    if (spec) report.remoteRows = 0;
    for (const c of local.columns) {
      if (c.hidden !== 0 || remote.columns.some((r) => r.name === c.name)) continue;
      report.columns.push({ column: c.name, kind: 'missing-remotely', message: `local column "${c.name}" has no remote counterpart: its values would be lost`, blocking: true });
    }
    for (const r of remote.columns) {
      const local_ = local.columns.find((c) => c.name === r.name);
      if (!local_) {
        const required = !r.nullable && (r.default === null || r.default === undefined) && r.identity !== true;
        report.columns.push({
          column: r.name,
          kind: required ? 'required-remotely' : 'missing-locally',
          message: required ? `remote column "${r.name}" is NOT NULL without a default and the local table has no such column` : `remote column "${r.name}" is not in the local table; it gets its default`,
          blocking: required,
        });
        continue;
      }
      const mismatch = typeMismatch(local_.declaredType, r.type);
      if (mismatch) report.columns.push({ column: r.name, kind: 'type-mismatch', message: mismatch, blocking: false });
    }
    const missingKey = remote.primary_key.filter((k) => !localColumns.has(k));
    if (missingKey.length > 0) {
      report.columns.push({ column: missingKey.join(', '), kind: 'required-remotely', message: `the remote primary key (${missingKey.join(', ')}) is not in the local table`, blocking: true });
    }
    const mapping = buildMapping(remote.name, remote.columns.map((c) => ({ name: c.name, type: c.type, nullable: c.nullable })), remote.primary_key, localColumns);
    out.push({ report, mapping, remote, local });
  }
  // Foreign-key order: the server lists its tables parents first.
  const order = new Map(info.tables.map((t, i) => [t.name, i]));
  return out.sort((a, b) => (order.get(a.remote.name) ?? -1) - (order.get(b.remote.name) ?? -1));
}

function emptyReport(table: string, action: TableReport['action']): TableReport {
  return { table, localRows: 0, remoteRows: null, action, columns: [], audit: [], estimatedBytes: 0, estimatedSeconds: 0, loaded: 0, rejected: 0, seconds: 0, rowsPerSecond: 0, verified: null };
}

/** Returns why a local declared type cannot hold what the remote type needs, or null when values decide (the audit checks them). */
function typeMismatch(declared: string, remoteType: string): string | null {
  const d = declared.toUpperCase();
  const kind = parsePgType(remoteType).kind;
  const blob = d === 'BLOB' || d === '';
  if (kind === 'bytea' && !blob && !/BLOB/.test(d)) return `local type "${declared}" holds text or numbers; the remote column is bytea (text is sent as its UTF-8 bytes)`;
  if (/BLOB/.test(d) && !['bytea', 'text', 'uuid', 'other'].includes(kind)) return `local type "${declared}" holds bytes; the remote column is ${remoteType}`;
  return null;
}

/** Reads every local row of the table and records each kind of problem or note with counts and sample keys. */
function audit(db: SqliteDatabase, p: Planned, convert: ConvertOptions, signal: AbortSignal): void {
  if (p.report.action === 'missing-remotely' || p.mapping.pkIndex.some((i) => i < 0)) return;
  const findings = new Map<string, AuditFinding>();
  let bytes = 0;
  const note = (column: string, kind: AuditFinding['kind'], blocking: boolean, pk: Record<string, WireValue>, problem?: RowProblem): void => {
    const key = `${column}\u0000${kind}`;
    let f = findings.get(key);
    if (!f) {
      f = { column, kind, count: 0, samples: [], blocking, ...(problem === undefined ? {} : { example: problem.reason, value: problem.value }) };
      findings.set(key, f);
    }
    f.count += 1;
    if (f.samples.length < SAMPLE_KEYS) f.samples.push(pk);
  };
  for (const page of readPages(db, p.mapping, null)) {
    if (signal.aborted) throw interrupted();
    for (const row of page) {
      const c = convertRow(p.mapping, row, convert);
      if (!c.ok) {
        note(c.problem.column, c.problem.kind, true, c.problem.pk, c.problem);
        continue;
      }
      bytes += wireBytes(c.values) + 1;
      for (const n of c.notes) note(n.column, n.note, false, pkFromValues(p.mapping, c.values));
    }
  }
  p.report.audit = [...findings.values()];
  p.report.estimatedBytes = bytes;
  p.report.estimatedSeconds = round(p.report.localRows / ESTIMATED_ROWS_PER_SECOND + bytes / (20 * 1024 * 1024));
}

function pkFromValues(mapping: TableMapping, values: WireValue[]): Record<string, WireValue> {
  const pk: Record<string, WireValue> = {};
  mapping.pkIndex.forEach((i, k) => {
    pk[mapping.primaryKey[k]!] = values[i]!;
  });
  return pk;
}

function collectBlocking(planned: Planned[], options: MigrateOptions, result: MigrateResult): void {
  for (const p of planned) {
    for (const c of p.report.columns.filter((x) => x.blocking)) {
      result.blocking.push({ table: p.report.table, message: `${p.report.table}: ${c.message}`, hint: 'Make the remote schema match the desktop models (python manage.py migrate on the web app), then run migrate again.' });
    }
    for (const f of p.report.audit.filter((x) => x.blocking)) {
      if (options.rejectFile) continue;
      result.blocking.push({
        table: p.report.table,
        message: `${p.report.table} ${JSON.stringify(f.samples[0])} column "${f.column}": value ${JSON.stringify(f.value ?? null)} cannot be sent (${f.kind}: ${f.example ?? describeKind(f.kind)}); ${f.count} value(s) in this column ${describeKind(f.kind)}`,
        hint: 'Correct the values in the desktop app, or pass --reject-file FILE to set those rows aside and migrate the rest.',
      });
    }
  }
}

/** Returns a few words a clinic IT person understands for each problem kind. */
export function describeKind(kind: AuditFinding['kind']): string {
  const words: Record<string, string> = {
    'nul-in-text': 'contain a NUL character PostgreSQL cannot store',
    'invalid-utf8': 'hold bytes that are not valid UTF-8 text',
    'too-long': 'are longer than the remote column allows',
    'not-an-integer': 'are not whole numbers',
    'integer-out-of-range': 'are out of the remote integer range',
    'not-a-number': 'are not numbers',
    'numeric-overflow': 'have too many digits for the remote decimal column',
    'not-a-boolean': 'are not booleans (0 or 1)',
    'invalid-date': 'are impossible dates',
    'invalid-time': 'are impossible times',
    'invalid-timestamp': 'are impossible dates and times',
    'invalid-uuid': 'are not UUIDs',
    'invalid-json': 'are not valid JSON',
    'null-in-not-null': 'are NULL in a column the remote requires',
    'boolean-spelled-as-text': "are booleans spelled as text ('t', 'yes'…), converted",
    'storage-class-mismatch': 'are stored as another SQLite type than the column declares, converted exactly',
    'datetime-with-t': "are datetimes written with 'T', converted",
    'refused-by-remote': 'were refused by the remote database',
    'parent-rejected': 'belong to a row that was rejected',
  };
  return words[kind] ?? kind;
}

function blockingError(result: MigrateResult): MigrationError {
  const unconvertible = result.tables.flatMap((t) => t.audit.filter((a) => a.blocking).map((a) => ({ t, a })));
  const first = result.blocking[0]!;
  const code = result.blocking.every((b) => b.message.includes('cannot be sent')) && unconvertible.length > 0 ? 'EPS_MIGRATE_UNCONVERTIBLE' : 'EPS_MIGRATE_CHECK_FAILED';
  const more = result.blocking.length > 1 ? ` (and ${result.blocking.length - 1} more problem(s))` : '';
  return new MigrationError(code, `${first.message}${more}`, {
    hint: code === 'EPS_MIGRATE_UNCONVERTIBLE' ? first.hint : `${first.hint} Run epetsync migrate --check-only for the full report.`,
    details: { blocking: result.blocking, tables: result.tables.map((t) => ({ table: t.table, audit: t.audit.filter((a) => a.blocking), columns: t.columns.filter((c) => c.blocking) })) },
  });
}

function interrupted(): EpetsyncError {
  return new EpetsyncError('EPS_INTERRUPTED', 'Migrate stopped before it finished', { hint: 'Run epetsync migrate again: it continues from its last checkpoint.' });
}

/** Returns the tables to install local change capture on: every remote synced table the desktop database has. */
function captureScope(db: SqliteDatabase, info: ServerInfo, config: EpetsyncConfig): Array<{ name: string; primaryKey: string[] }> {
  const locals = new Set(introspectSchema(db).map((t) => t.name));
  const exclude = new Set(config.sync.exclude);
  return info.tables.filter((t) => locals.has(t.name) && !exclude.has(t.name) && (!config.sync.include || config.sync.include.includes(t.name))).map((t) => ({ name: t.name, primaryKey: t.primary_key }));
}

/** Streams one table to the server in checkpointed bulk requests, resuming after the server's last key. */
async function loadTable(
  db: SqliteDatabase,
  client: RemoteDatabaseClient,
  p: Planned,
  state: MigrateState,
  stage: boolean,
  convert: ConvertOptions,
  rejects: RejectLog | null,
  deps: MigrateDeps,
  checksums: LoadChecksums,
  renew: (table: string, loadId: string) => void,
): Promise<void> {
  const started = performance.now();
  const table = p.remote.name;
  const columns = p.mapping.columns.map((c) => c.name);
  let loadId = stage ? state.loadId : tableLoadId(state, table);
  const status = await client.bulkStatus(table, loadId, { signal: deps.signal });
  // Only a table whose remote rows are exactly the checkpoint's continues after it; an emptied one starts over.
  // Staged rows are only ever ours (the staging table belongs to this load id), so a replace always continues.
  const resume = stage ? status.last_key !== null : p.report.action === 'resume';
  // The checksum of the rows this run commits, when it loads the whole table (not after a checkpoint).
  const committed = resume || !checksums.captured.has(p.local.name) ? null : new TableChecksum(p.mapping.columns.map((c) => c.type));
  if (committed) checksums.sums.set(table, committed);
  else checksums.sums.delete(table);
  if (!resume && !stage && status.total_rows > 0) {
    // The remote table was emptied after a partial load: a fresh checkpoint, so a later crash resumes correctly.
    loadId = `${state.loadId}.${randomBytes(3).toString('hex')}`;
    renew(table, loadId);
  }
  const after = resume && status.last_key ? localKey(p.mapping, status.last_key, convert) : null;
  let loaded = resume ? status.total_rows : 0;
  const progress = (done: boolean): void => {
    deps.onProgress?.({ table, rows: loaded, total: Math.max(p.report.localRows - p.report.rejected, loaded), seconds: (performance.now() - started) / 1000, done });
  };
  progress(false);
  let chunk: WireValue[][] = [];
  let bytes = 0;
  const sendOnce = async (rows: WireValue[][]): Promise<void> => {
    const lastKey = p.mapping.pkIndex.map((i) => rows[rows.length - 1]![i]);
    for (let attempt = 0; ; attempt += 1) {
      if (deps.signal.aborted) throw interrupted();
      try {
        const answer = stage
          ? await stageRows(client, table, rows, { loadId, columns, signal: deps.signal })
          : await client.bulkLoad(table, rows, { loadId, columns, signal: deps.signal });
        loaded += answer.rows;
        for (const row of rows) committed?.add(row);
        return;
      } catch (error) {
        // A streamed body is never re-sent by the client itself, so a token that expired during a long load is renewed here.
        if (error instanceof AuthError && error.details?.status === 401 && attempt < 5 && !deps.signal.aborted) {
          deps.logger.info({ table }, 'token rejected during the load; logging in again');
          await client.authenticate({ force: true, signal: deps.signal });
        } else if (!isRetryable(error) || attempt >= 5 || deps.signal.aborted) throw error;
        deps.logger.warn({ table, attempt: attempt + 1 }, `bulk request failed (${(error as Error).message}); checking the checkpoint and retrying`);
        await sleep(Math.min(30_000, 500 * 2 ** attempt), undefined, { signal: deps.signal }).catch(() => {
          throw interrupted();
        });
        const now = await client.bulkStatus(table, loadId, { signal: deps.signal });
        if (JSON.stringify(now.last_key) === JSON.stringify(lastKey)) {
          // The request committed but its answer was lost: the checkpoint proves it.
          deps.logger.info({ table, loadId }, 'the bulk request committed but its answer was lost; continuing after it');
          loaded += rows.length;
          for (const row of rows) committed?.add(row);
          return;
        }
      }
    }
  };
  const sendRows = async (rows: WireValue[][]): Promise<void> => {
    try {
      await sendOnce(rows);
    } catch (error) {
      const code = error instanceof RequestRejectedError ? String(error.details?.wire_code ?? '') : '';
      if (code !== 'CONSTRAINT_VIOLATION' && code !== 'INVALID_VALUE') throw error;
      if (rows.length === 1) {
        const err = error as RequestRejectedError;
        const column = typeof err.details?.column === 'string' ? err.details.column : null;
        const at = column === null ? -1 : p.mapping.columns.findIndex((c) => c.name === column);
        // Without a column (a CHECK over the row, a foreign key) the whole row is the value to look at.
        const whole = Object.fromEntries(p.mapping.columns.map((c, i) => [c.name, rows[0]![i]!]));
        const problem: RowProblem = { table, pk: pkFromValues(p.mapping, rows[0]!), column: column ?? '(row)', kind: 'refused-by-remote', reason: err.message, value: at >= 0 ? rows[0]![at]! : whole };
        if (!rejects) throw unconvertibleError(problem);
        rejects.add(problem);
        p.report.rejected = rejects.count(table);
        return;
      }
      // COPY buffers rows, so the line the server names can lie past the row at fault: halve until one row is left.
      // Halves go in key order, so every committed request still ends on the checkpoint's last key.
      const half = Math.ceil(rows.length / 2);
      await sendRows(rows.slice(0, half));
      await sendRows(rows.slice(half));
    }
  };
  /** Sets aside (returning true) a row whose parent row was rejected; `self` checks only this table's own references. */
  const orphanOfRejected = (values: WireValue[], self: boolean): boolean => {
    const orphan = references.find((fk) => (!self || fk.table === table) && rejects!.isRejected(fk.table, fk.index.map((i) => values[i]!)));
    if (!orphan) return false;
    rejects!.add({ table, pk: pkFromValues(p.mapping, values), column: orphan.index.map((i) => p.mapping.columns[i]!.name).join(', '), kind: 'parent-rejected', reason: `its row in "${orphan.table}" was rejected`, value: values[orphan.index[0]!]! });
    return true;
  };
  // One request in flight while the next chunk is read and converted: the client works while the
  // server and PostgreSQL do. Only one, so requests commit (and checkpoint) in key order.
  let inFlight: Promise<void> | null = null;
  const send = async (): Promise<void> => {
    let rows = chunk;
    chunk = [];
    bytes = 0;
    if (inFlight) {
      const before = rejects?.count(table) ?? 0;
      await inFlight;
      // A row of this very table refused meanwhile may be the parent of rows already converted (a self-reference).
      if (rejects && rejects.count(table) > before) rows = rows.filter((values) => !orphanOfRejected(values, true));
      if (rows.length === 0) return;
    }
    const sent = sendRows(rows).then(() => progress(false));
    // Seen when awaited before the next send or at the end; until then a failure must not count as unhandled.
    sent.catch(() => {});
    inFlight = sent;
  };
  // Foreign keys whose parent rows may have been set aside: a child of a rejected row is rejected too.
  const references = p.local.foreignKeys
    .map((fk) => ({ table: fk.referencedTable, index: fk.columns.map((col) => p.mapping.columns.findIndex((c) => c.name === col)) }))
    .filter((fk) => fk.index.every((i) => i >= 0));
  for (const page of readPages(db, p.mapping, after)) {
    // Let the request in flight write its body and read its answer between pages.
    if (inFlight) await setImmediatePromise();
    if (deps.signal.aborted) throw interrupted();
    for (const row of page) {
      const c = convertRow(p.mapping, row, convert);
      if (!c.ok) {
        if (!rejects) throw unconvertibleError(c.problem);
        rejects.add(c.problem);
        continue;
      }
      if (rejects && orphanOfRejected(c.values, false)) continue;
      chunk.push(c.values);
      bytes += wireBytes(c.values);
      if (chunk.length >= CHUNK_ROWS || bytes >= CHUNK_BYTES) await send();
    }
  }
  if (chunk.length > 0) await send();
  if (inFlight) await inFlight;
  p.report.rejected = rejects?.count(table) ?? 0;
  p.report.loaded = loaded;
  p.report.seconds = round((performance.now() - started) / 1000);
  p.report.rowsPerSecond = p.report.seconds > 0 ? Math.round(loaded / p.report.seconds) : loaded;
  progress(true);
}

/** Returns about how many bytes a row takes as a JSON line, without serialising it. */
function wireBytes(values: WireValue[]): number {
  let n = 2;
  for (const v of values) {
    if (typeof v === 'string') n += v.length + 3;
    else if (v === null) n += 5;
    else if (typeof v === 'object') n += JSON.stringify(v).length + 1;
    else n += 12;
  }
  return n;
}

function tableLoadId(state: MigrateState, table: string): string {
  return state.tableLoadIds?.[table] ?? state.loadId;
}

function unconvertibleError(problem: RowProblem): MigrationError {
  const what = problem.kind === 'refused-by-remote' ? 'was refused by the remote database' : 'cannot be sent';
  return new MigrationError('EPS_MIGRATE_UNCONVERTIBLE', `${problem.table} ${JSON.stringify(problem.pk)} column "${problem.column}": value ${JSON.stringify(problem.value)} ${what} (${problem.kind}: ${problem.reason})`, {
    hint: 'Correct the value in the desktop app, or pass --reject-file FILE to set such rows aside and migrate the rest; rerun migrate to continue.',
    details: { problem },
  });
}

/** Holds the checksums of rows committed by this run's loads, and what tells whether a table was written locally since. */
interface LoadChecksums {
  /** The changelog's last sequence number before the load read anything. */
  mark: number;
  /** Tables with local change capture (only their writes reach the changelog). */
  captured: Set<string>;
  /** Per remote table, the checksum of every row loaded by this run (only for tables loaded whole). */
  sums: Map<string, TableChecksum>;
  /** Per remote table, the server's checksum asked for as soon as its load ended (not for a replace, whose rows are only staged). */
  remote: Map<string, ReturnType<typeof remoteChecksum>>;
}

/** Appends rows that cannot be sent to an NDJSON file, once per (table, key), fsynced before the rows after them go out. */
class RejectLog {
  private readonly fd: number;
  private readonly seen = new Map<string, number>();
  private readonly keys = new Set<string>();
  /** Primary keys of rejected rows per table, as the text of each key value, to recognise their children. */
  private readonly byTable = new Map<string, Set<string>>();

  constructor(readonly path: string, readOnly: boolean) {
    if (existsSync(path)) {
      for (const line of readFileSync(path, 'utf8').split('\n')) {
        if (line.trim() === '') continue;
        try {
          const r = JSON.parse(line) as { table: string; pk: Record<string, WireValue> };
          this.remember(r.table, r.pk);
        } catch {
          // A line cut off by a crash: the row is rejected again below.
        }
      }
    }
    this.fd = readOnly ? -1 : openSync(path, 'a');
  }

  private remember(table: string, pk: Record<string, WireValue>): boolean {
    const key = `${table}\u0000${JSON.stringify(pk)}`;
    if (this.keys.has(key)) return false;
    this.keys.add(key);
    let set = this.byTable.get(table);
    if (!set) this.byTable.set(table, (set = new Set()));
    set.add(keyText(Object.values(pk)));
    this.seen.set(table, (this.seen.get(table) ?? 0) + 1);
    return true;
  }

  add(problem: RowProblem): void {
    if (!this.remember(problem.table, problem.pk)) return;
    writeSync(this.fd, `${JSON.stringify(problem)}\n`);
    fsyncSync(this.fd);
  }

  /** Returns true when the row of `table` with these key values (local or wire) was rejected. */
  isRejected(table: string, key: unknown[]): boolean {
    const set = this.byTable.get(table);
    return set !== undefined && !key.some((v) => v === null) && set.has(keyText(key));
  }

  count(table: string): number {
    return this.seen.get(table) ?? 0;
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
  }
}

function keyText(values: unknown[]): string {
  return values.map((v) => (v instanceof Uint8Array ? Buffer.from(v).toString('base64') : String(v))).join('\u0000');
}

/** Computes the local checksum of a table over the mapped columns (rows that cannot be converted are counted apart). */
async function localChecksum(db: SqliteDatabase, mapping: TableMapping, convert: ConvertOptions, signal: AbortSignal, rejects: RejectLog | null = null): Promise<{ sum: TableChecksum; unconvertible: number }> {
  const sum = new TableChecksum(mapping.columns.map((c) => c.type));
  let unconvertible = 0;
  for (const page of readPages(db, mapping, null)) {
    // Between pages the event loop sends the remote checksum requests and reads their answers.
    await setImmediatePromise();
    if (signal.aborted) throw interrupted();
    for (const row of page) {
      const c = convertRow(mapping, row, convert);
      if (c.ok && !rejects?.isRejected(mapping.name, mapping.pkIndex.map((i) => row[i]!))) sum.add(c.values);
      else unconvertible += 1;
    }
  }
  return { sum, unconvertible };
}

async function compareTable(db: SqliteDatabase, client: RemoteDatabaseClient, p: Planned, convert: ConvertOptions, signal: AbortSignal, rejects: RejectLog | null): Promise<boolean> {
  const asked = remoteChecksum(client, p.remote.name, p.mapping.columns.map((c) => c.name), { signal });
  asked.catch(() => {});
  const local = await localChecksum(db, p.mapping, convert, signal, rejects);
  const remote = await asked;
  p.report.localChecksum = local.sum.digest();
  p.report.remoteChecksum = remote.checksum;
  return remote.rows === local.sum.rows && remote.checksum === local.sum.digest();
}

/** Verifies every planned table: equal row counts and checksums on both sides; fills `mismatched`. */
async function verifyAll(db: SqliteDatabase, client: RemoteDatabaseClient, planned: Planned[], convert: ConvertOptions, signal: AbortSignal, result: MigrateResult, rejects: RejectLog | null, loaded: LoadChecksums | null = null): Promise<void> {
  const changedSince = db.prepare(`SELECT 1 FROM main.${quote(`${INTERNAL_PREFIX}changelog`)} WHERE table_name = ? AND seq > ? LIMIT 1`);
  // Every remote checksum is asked for at once: the server and PostgreSQL compute them while this
  // process computes the local ones.
  const remotes = new Map(
    planned
      .filter((p) => p.report.action !== 'missing-remotely')
      .map((p) => {
        const asked = loaded?.remote.get(p.remote.name) ?? remoteChecksum(client, p.remote.name, p.mapping.columns.map((c) => c.name), { signal });
        asked.catch(() => {});
        return [p, asked] as const;
      }),
  );
  for (const p of planned) {
    const asked = remotes.get(p);
    if (!asked) continue;
    // A table loaded whole in this run and not written locally since holds exactly the rows the load
    // read and committed: their checksum stands for the local side without reading the table again.
    const sum = loaded?.sums.get(p.remote.name);
    const local = sum && changedSince.get(p.local.name, loaded!.mark) === undefined ? { sum, unconvertible: 0 } : await localChecksum(db, p.mapping, convert, signal, rejects);
    const remote = await asked;
    p.report.localChecksum = local.sum.digest();
    p.report.remoteChecksum = remote.checksum;
    p.report.remoteRows = remote.rows;
    if (result.mode === 'verify') p.report.rejected = local.unconvertible;
    p.report.verified = remote.rows === local.sum.rows && remote.checksum === local.sum.digest();
    if (!p.report.verified) result.mismatched.push(p.remote.name);
  }
  result.tables = planned.map((p) => p.report);
}

/** Returns up to five primary keys whose remote row is missing locally or differs from it. */
async function differingKeys(db: SqliteDatabase, client: RemoteDatabaseClient, p: Planned, convert: ConvertOptions, signal: AbortSignal): Promise<Array<Record<string, WireValue>>> {
  const out: Array<Record<string, WireValue>> = [];
  const types = p.mapping.columns.map((c) => c.type);
  const where = p.mapping.primaryKey.map((k) => `${quote(k)} = ?`).join(' AND ');
  const select = db.prepare(`SELECT ${p.mapping.columns.map((c) => quote(c.name)).join(', ')} FROM main.${quote(p.local.name)} WHERE ${where}`).raw(true).safeIntegers(true);
  for await (const page of remoteRows(client, p.remote.name, { signal })) {
    const index = p.mapping.columns.map((c) => page.columns.indexOf(c.name));
    for (const remote of page.rows) {
      const values = index.map((i) => remote[i] as WireValue);
      const pk = pkFromValues(p.mapping, values);
      const key = localKey(p.mapping, p.mapping.pkIndex.map((i) => values[i]), convert);
      const row = select.get(...key) as Parameters<typeof convertRow>[1] | undefined;
      const local = row ? convertRow(p.mapping, row, convert) : null;
      const same = local?.ok === true && local.values.every((v, i) => canonicalEqual(v, values[i]!, types[i]!));
      if (!same) out.push(pk);
      if (out.length >= SAMPLE_KEYS) return out;
    }
  }
  return out;
}

function canonicalEqual(a: WireValue, b: WireValue, type: ReturnType<typeof parsePgType>): boolean {
  const one = new TableChecksum([type]);
  one.add([a]);
  const two = new TableChecksum([type]);
  two.add([b]);
  return one.digest() === two.digest();
}

/** Downloads the remote's current contents of the planned tables into `dir` (NDJSON per table), then proves the copy equals the remote. */
async function downloadRemoteCopy(client: RemoteDatabaseClient, info: ServerInfo, planned: Planned[], dir: string, signal: AbortSignal, logger: Logger): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const manifest: Array<{ table: string; file: string; rows: number; checksum: string }> = [];
  for (const p of planned) {
    const remote = info.tables.find((t) => t.name === p.remote.name)!;
    const file = `${encodeURIComponent(remote.name)}.ndjson`;
    const fd = openSync(join(dir, file), 'w');
    let sum: TableChecksum | null = null;
    try {
      for await (const page of remoteRows(client, remote.name, { signal })) {
        if (!sum) {
          sum = new TableChecksum(page.columns.map((name) => parsePgType(remote.columns.find((c) => c.name === name)!.type)));
          writeSync(fd, `${JSON.stringify({ table: remote.name, columns: page.columns, primary_key: remote.primary_key })}\n`);
        }
        for (const values of page.rows) {
          sum.add(values as WireValue[]);
          writeSync(fd, `${JSON.stringify(values)}\n`);
        }
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    const columns = remote.columns.map((c) => c.name);
    const check = await remoteChecksum(client, remote.name, columns, { signal });
    if (!sum || check.rows !== sum.rows || check.checksum !== sum.digest()) {
      throw new MigrationError('EPS_VERIFY_MISMATCH', `The copy of remote table "${remote.name}" in ${dir} does not match the remote (${sum?.rows ?? 0} rows copied, ${check.rows} remotely); nothing was replaced`, {
        hint: 'Run migrate --force again (the web app may have written meanwhile); the remote was not changed.',
      });
    }
    manifest.push({ table: remote.name, file, rows: sum.rows, checksum: sum.digest() });
  }
  const fd = openSync(join(dir, 'manifest.json'), 'w');
  try {
    writeSync(fd, `${JSON.stringify({ server: client.url.href, taken_at: new Date().toISOString(), tables: manifest }, null, 2)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  logger.info({ dir, tables: manifest.length }, 'verified copy of the remote kept before replacing it');
  return dir;
}

/** Maps the local tables the remote lacks (within the migrate's scope) to table specs; fills `result.schema` with the DDL and what cannot be carried. */
function mapMissingTables(db: SqliteDatabase, info: ServerInfo, config: EpetsyncConfig, options: MigrateOptions, result: MigrateResult): Map<string, TableSpec> {
  const locals = new Map(introspectSchema(db).map((t) => [t.name, t]));
  const remote = new Set([...info.tables.map((t) => t.name), ...info.unsynced_tables.map((t) => t.name)]);
  const wanted = options.tables ? new Set(options.tables) : null;
  const exclude = new Set(config.sync.exclude);
  const out = new Map<string, TableSpec>();
  const statements: string[] = [];
  const foreignKeys: string[] = [];
  const notCarried: Array<{ table: string; items: string[] }> = [];
  for (const local of locals.values()) {
    if (remote.has(local.name)) continue;
    if (wanted ? !wanted.has(local.name) : NEVER_MIGRATED.has(local.name) || exclude.has(local.name) || (config.sync.include && !config.sync.include.includes(local.name))) continue;
    const mapped = mapTable(local, locals);
    if (mapped.notCarried.length > 0) notCarried.push({ table: local.name, items: mapped.notCarried });
    if (mapped.spec.primary_key.length === 0) continue;
    out.set(local.name, mapped.spec);
    const sql = createTableSql(mapped.spec);
    statements.push(sql.create);
    foreignKeys.push(...sql.foreignKeys);
  }
  result.schema = { statements: [...statements, ...foreignKeys], created: [], notCarried };
  return out;
}

/** Describes a table about to be created the way server info would, so the audit can check values against it. */
function specAsRemote(spec: TableSpec): RemoteTable {
  return {
    name: spec.name,
    primary_key: spec.primary_key,
    columns: spec.columns.map((c) => ({ name: c.name, type: c.type, nullable: !c.not_null, default: c.default, max_length: null, identity: c.identity })),
  };
}

/** Waits until the server's sync scope lists the new tables (its schema refresh installs their capture triggers). */
async function waitForTables(client: RemoteDatabaseClient, tables: string[], signal: AbortSignal, logger: Logger): Promise<ServerInfo> {
  const deadline = Date.now() + 180_000;
  for (;;) {
    const info = await client.info({ signal });
    const listed = new Set(info.tables.map((t) => t.name));
    if (tables.every((t) => listed.has(t))) return info;
    if (Date.now() > deadline) {
      throw new MigrationError('EPS_MIGRATE_CHECK_FAILED', `The server created ${tables.map((t) => `"${t}"`).join(', ')} but does not sync them after 3 minutes`, {
        hint: 'Restart epetsync serve (it reads the schema at start), then run migrate again without --create-schema.',
      });
    }
    logger.info({ tables }, 'waiting for the server to pick up the new tables');
    await sleep(1000, undefined, { signal }).catch(() => {
      throw interrupted();
    });
  }
}
