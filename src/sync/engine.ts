import { randomBytes } from 'node:crypto';
import type Database from 'better-sqlite3';
import type { ChangePage, FeedChange, ServerInfo, SnapshotEvent, TableInfo, UploadBatch, UploadChange, UploadResponse, UploadResult } from '../client/index.js';
import { RequestRejectedError, checkChangePage, checkFeedChange } from '../client/index.js';
import { quoteIdent, sqliteCode } from '../db/index.js';
import { EpetsyncError, ProtocolError } from '../errors.js';
import type { Logger } from '../logger.js';
import { fromWire, toWire, type SqliteValue, type WireValue } from './convert.js';
import { INTERNAL_PREFIX, META, applyWithoutCapture, installCapture, parseKey, readMeta, writeMeta, type PrimaryKeyValue } from './local-capture.js';
import { parsePgType, type PgType } from './pg-type.js';
import { OUTBOX, ensureSyncTables, quarantineChange, recordConflict, type QuarantineRecord } from './store.js';

/**
 * The two-way sync engine (docs/sync.md). One cycle pushes the local changelog in batches and then
 * pulls the remote feed. The invariants it keeps:
 * - a batch is written to the outbox before it is sent and is resent verbatim (same batch id)
 *   until the server answers, so a crash between push and acknowledgement neither loses nor
 *   duplicates a change; changelog entries are cleared in the transaction that settles the answer;
 * - each feed page is applied with capture suppressed, in one transaction with its cursor;
 * - a row changed on both sides is settled by the client's policy and the loser is logged;
 * - an offline insert whose id the web app gave to another row moves to a fresh id from the
 *   server's sequence, its local children following it.
 */

/** Names the meta key that marks a database restored from a backup until its replay is done. */
export const META_RESTORED = META.restoredFromBackup;

/** Names how a row changed on both sides is settled. */
export type ConflictPolicy = 'server-wins' | 'client-wins' | 'newest-wins';

/** Describes the remote side the engine needs; RemoteDatabaseClient implements it. */
export interface SyncRemote {
  readonly nodeId: string;
  /** The server address (recorded beside the cursor, which only that server can read). */
  readonly url?: URL | undefined;
  info(options?: { signal?: AbortSignal | undefined }): Promise<ServerInfo>;
  /** `echo` asks for this node's own uploads too (replaying into a database restored from a backup). */
  changesSince(cursor: string, options?: { limit?: number; wait?: number; echo?: boolean; signal?: AbortSignal | undefined }): Promise<ChangePage>;
  upload(batch: UploadBatch, options?: { signal?: AbortSignal | undefined }): Promise<UploadResponse>;
  /** Streams a snapshot (used to re-pull a restored database that has no cursor). */
  snapshot?(tables?: string[], options?: { signal?: AbortSignal | undefined }): AsyncIterable<SnapshotEvent>;
  /** Takes `count` fresh ids, all above `above`, from the table's sequence (absent on servers without the ids route). */
  allocateIds?(table: string, count: number, above: string, options?: { signal?: AbortSignal | undefined }): Promise<string[]>;
}

/** Describes points where a test can stop the engine as a crash would. */
export interface SyncHooks {
  /** Runs after the server accepted a batch, before the answer is settled locally. */
  afterUpload?(batchId: string): void;
  /** Runs after the push, before the first feed page is read (the window where a desktop edit meets a remote one). */
  beforePull?(): void;
  /** Runs inside a page's apply transaction, before it commits. */
  beforePullCommit?(page: ChangePage): void;
}

/** Configures a {@link SyncEngine}. */
export interface SyncEngineOptions {
  /** The desktop database, opened read-write. */
  db: Database.Database;
  remote: SyncRemote;
  policy?: ConflictPolicy | undefined;
  /** Column newest-wins compares (a datetime column present on both sides). */
  updatedAtColumn?: string | undefined;
  /** Changelog entries per upload batch and changes per feed page (default 500). */
  batchSize?: number | undefined;
  /** Zone of naive datetimes in SQLite (config database.timezone). */
  timezone?: string | undefined;
  include?: string[] | undefined;
  exclude?: string[] | undefined;
  logger?: Logger | undefined;
  hooks?: SyncHooks | undefined;
}

/** Describes what one cycle did (one line per cycle on a terminal; the details go to the log). */
export interface CycleResult {
  pushed: number;
  batches: number;
  pulled: number;
  conflicts: number;
  collisions: number;
  quarantined: number;
  /** Local changes still waiting after the cycle. */
  pending: number;
  /** Seconds the oldest waiting local change has waited (0 when none). */
  lagSeconds: number;
  durationMs: number;
  cursor: string;
}

interface ScopeColumn {
  name: string;
  type: PgType;
}

interface ScopeTable {
  name: string;
  order: number;
  primaryKey: string[];
  columns: ScopeColumn[];
  byName: Map<string, ScopeColumn>;
  /** Single integer key filled from a server sequence: an offline insert can collide and be moved. */
  rekeyable: boolean;
  /** Local columns (any table) that reference this table's key. */
  children: Array<{ table: string; column: string }>;
}

interface PlanEntry {
  table: string;
  pkText: string;
  seqs: number[];
  firstOp: 'I' | 'U' | 'D';
}

interface OutboxRow {
  seq: number;
  batch_id: string;
  body: string;
  plan: string;
  /** The batch and plan as built, when this process just persisted them (saves parsing back what it wrote). */
  built?: { batch: UploadBatch; plan: PlanEntry[]; headEnd?: number | undefined } | undefined;
}


type Row = Record<string, SqliteValue>;

const INT_KINDS = new Set(['int2', 'int4', 'int8']);
const SCOPE_REFRESH_MS = 10 * 60_000;
const CHANGELOG = `${INTERNAL_PREFIX}changelog`;
/** Rows read per read transaction while the next batch is read ahead (the upload's answer is taken between slices). */
const PREBUILD_SLICE = 500;
const SNAPSHOT_STAGE = `temp.${INTERNAL_PREFIX}snapshot_stage`;

/** Runs sync cycles for one desktop database against one server. */
export class SyncEngine {
  private readonly db: Database.Database;
  private readonly remote: SyncRemote;
  private readonly policy: ConflictPolicy;
  private readonly updatedAtColumn: string | undefined;
  private readonly batchSize: number;
  private readonly timezone: string;
  private readonly logger: Logger | undefined;
  private readonly hooks: SyncHooks;
  private readonly options: SyncEngineOptions;
  private scope = new Map<string, ScopeTable>();
  private info: ServerInfo | undefined;
  /** True while {@link SyncEngine.markRestored}'s replay applies the feed. */
  private replaying = false;
  private splitLimit: number | undefined;
  private preparedAt = 0;
  private rescoped = false;
  private cycleWaiters: Array<() => void> = [];
  private readonly statements = new Map<string, Database.Statement>();

  constructor(options: SyncEngineOptions) {
    this.options = options;
    this.db = options.db;
    this.remote = options.remote;
    this.policy = options.policy ?? 'server-wins';
    this.updatedAtColumn = options.updatedAtColumn;
    // The protocol caps feed pages and upload batches at 5000 (server info may say less).
    this.batchSize = Math.min(5000, Math.max(1, options.batchSize ?? 500));
    this.timezone = options.timezone ?? 'UTC';
    this.logger = options.logger;
    this.hooks = options.hooks ?? {};
    // Feed pages and batches can cut a parent from its child; the remote keeps referential
    // integrity, and Django's SQLite constraints are deferred anyway.
    this.db.pragma('foreign_keys = OFF');
  }

  /** Reads server info, works out the synced scope, installs capture and records the starting cursor when none is stored. */
  async prepare(signal?: AbortSignal, options: { snapshotWhenNoCursor?: boolean } = {}): Promise<{ tables: string[]; cursor: string }> {
    const info = await this.remote.info({ signal });
    this.info = info;
    this.preparedAt = Date.now();
    this.scope = buildScope(this.db, info, this.options.include, this.options.exclude);
    this.statements.clear();
    ensureSyncTables(this.db);
    installCapture(this.db, [...this.scope.values()].map((t) => ({ name: t.name, primaryKey: t.primaryKey })));
    let cursor = readMeta(this.db, META.pullCursor);
    if (cursor === null && options.snapshotWhenNoCursor && this.remote.snapshot) {
      cursor = await this.repullSnapshot(signal);
    }
    if (cursor === null) {
      cursor = info.head_cursor;
      const start = this.db.transaction(() => {
        // Another process may have written one meanwhile; only the first start wins.
        if (readMeta(this.db, META.pullCursor) === null) writeMeta(this.db, META.pullCursor, info.head_cursor);
      });
      start.immediate();
      cursor = readMeta(this.db, META.pullCursor)!;
    }
    const here = this.remote.url?.href;
    const recorded = readMeta(this.db, META.serverId);
    if (here !== undefined && recorded === null) writeMeta(this.db, META.serverId, here);
    // A moved address can be the same server; the server itself refuses a cursor it did not issue (INVALID_CURSOR).
    else if (here !== undefined && recorded !== here) this.logger?.warn({ recorded, now: here }, 'the pull cursor was recorded with another server address');
    return { tables: [...this.scope.keys()], cursor };
  }

  /**
   * Re-pulls every synced row from a snapshot into a database that has no cursor (a restored
   * backup older than the first sync), then stores the snapshot's cursor, so the feed completes
   * it. Rows changed locally meanwhile are settled by the policy as in a pull; rows deleted on the
   * server since are not removed here.
   */
  private async repullSnapshot(signal: AbortSignal | undefined): Promise<string> {
    const result: CycleResult = { pushed: 0, batches: 0, pulled: 0, conflicts: 0, collisions: 0, quarantined: 0, pending: 0, lagSeconds: 0, durationMs: 0, cursor: '' };
    const serverTables = new Map((this.info?.tables ?? []).map((t) => [t.name, t]));
    let columns: string[] = [];
    let begin: string | undefined;
    let end: string | undefined;
    // Rows are checked and staged in a TEMP table (outside the database file), and applied only
    // once the end line arrived: a snapshot cut off or refused half-way changes nothing here.
    this.db.exec(`CREATE TEMP TABLE IF NOT EXISTS ${SNAPSHOT_STAGE} (seq INTEGER PRIMARY KEY, row_key TEXT NOT NULL UNIQUE, change TEXT NOT NULL); DELETE FROM ${SNAPSHOT_STAGE}`);
    try {
      const insert = this.db.prepare(`INSERT INTO ${SNAPSHOT_STAGE} (row_key, change) VALUES (?, ?) ON CONFLICT (row_key) DO NOTHING`);
      const stage = (change: FeedChange, key: unknown[]): void => {
        if (insert.run(JSON.stringify([change.table, key]), JSON.stringify(change)).changes === 0) {
          throw new ProtocolError('EPS_PROTOCOL_MALFORMED', `The snapshot sends the row ${change.table} ${JSON.stringify(key).slice(0, 100)} twice`, {
            hint: 'Nothing from this snapshot was applied. Check that no proxy rewrites answers, then run again.',
            details: { table: change.table },
          });
        }
      };
      for await (const event of this.remote.snapshot!([...this.scope.keys()], { signal })) {
        if (event.type === 'begin') begin = event.cursor;
        else if (event.type === 'table') {
          if (!this.scope.has(event.table)) {
            throw new ProtocolError('EPS_PROTOCOL_MALFORMED', `The snapshot sends table ${JSON.stringify(event.table.slice(0, 80))}, which was not asked for`, {
              hint: 'Nothing from this snapshot was applied. Check that no proxy rewrites answers, then run again.',
              details: { table: event.table.slice(0, 200) },
            });
          }
          columns = event.columns;
        } else if (event.type === 'row') {
          const table = this.scope.get(event.table)!;
          const values = Object.fromEntries(columns.map((c, i) => [c, event.values[i]]));
          const change: FeedChange = { table: table.name, op: 'upsert', pk: Object.fromEntries(table.primaryKey.map((k) => [k, values[k]])), values, origin: null };
          checkFeedChange(change, serverTables, `A snapshot row of ${table.name}`);
          stage(change, table.primaryKey.map((k) => values[k]));
        } else if (event.type === 'end') end = begin ?? event.cursor;
      }
      if (end === undefined) {
        throw new ProtocolError('EPS_PROTOCOL_MALFORMED', 'The snapshot stream ended without its end line: it was cut off and must not be trusted', {
          hint: 'Nothing from this snapshot was applied. Run the command again.',
        });
      }
      const page = this.db.prepare(`SELECT seq, change FROM ${SNAPSHOT_STAGE} WHERE seq > ? ORDER BY seq LIMIT 1000`).safeIntegers(false);
      applyWithoutCapture(this.db, () => {
        for (let after = 0; ; ) {
          const staged = page.all(after) as Array<{ seq: number; change: string }>;
          if (staged.length === 0) break;
          for (const s of staged) this.applyFeedChange(JSON.parse(s.change) as FeedChange, result, new Set());
          after = staged[staged.length - 1]!.seq;
        }
        writeMeta(this.db, META.pullCursor, end!);
      });
    } finally {
      this.db.exec(`DROP TABLE IF EXISTS ${SNAPSHOT_STAGE}`);
    }
    this.logger?.info({ rows: result.pulled, conflicts: result.conflicts, quarantined: result.quarantined }, 're-pulled a snapshot into a database without a cursor');
    return readMeta(this.db, META.pullCursor) ?? begin ?? '';
  }

  /** Returns the stored pull cursor. */
  cursor(): string {
    return readMeta(this.db, META.pullCursor) ?? '';
  }

  /** Returns the tables in the synced scope. */
  tables(): string[] {
    return [...this.scope.keys()];
  }

  /** Returns SQLite's data_version: it changes when another connection (the desktop app) commits, never for this engine's own writes. */
  dataVersion(): number {
    return Number(this.db.pragma('data_version', { simple: true }));
  }

  /**
   * Marks the database as just restored from a backup. The next cycle, before sending anything,
   * re-reads the feed from the backup's cursor with this desktop's own uploads included (the
   * feed normally leaves them out): what it sent after the backup is back in the file only that
   * way. Every row the server changed since then takes the server's version; a change still
   * pending from the backup on such a row is dropped and logged in the conflicts, unless this
   * desktop itself sent the server's version (then it is the newer one). The mark is kept in the
   * database until the replay reached the head, so a crash or an outage meanwhile repeats it.
   */
  markRestored(): void {
    writeMeta(this.db, META_RESTORED, new Date().toISOString());
  }

  /** Writes one value to the desktop database's epetsync meta table. */
  recordMeta(key: string, value: string | null): void {
    writeMeta(this.db, key, value);
  }

  /** Resolves when the next cycle ends, successful or not (or at once when the signal aborts). */
  nextCycleEnd(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const done = (): void => {
        signal?.removeEventListener('abort', done);
        resolve();
      };
      this.cycleWaiters.push(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  /** Runs one cycle: push every pending local change, then pull the feed to its head. */
  async runCycle(signal?: AbortSignal): Promise<CycleResult> {
    try {
      return await this.cycle(signal);
    } finally {
      const waiters = this.cycleWaiters.splice(0);
      for (const w of waiters) w();
    }
  }

  private async cycle(signal: AbortSignal | undefined): Promise<CycleResult> {
    const started = Date.now();
    // Re-read the scope now and then: the web app migrates, tables and columns come and go.
    if (!this.info || Date.now() - this.preparedAt > SCOPE_REFRESH_MS) await this.prepare(signal);
    const result: CycleResult = { pushed: 0, batches: 0, pulled: 0, conflicts: 0, collisions: 0, quarantined: 0, pending: 0, lagSeconds: 0, durationMs: 0, cursor: '' };
    if (readMeta(this.db, META_RESTORED) !== null) await this.replayRestored(result, signal);
    await this.push(result, signal);
    await this.pull(result, signal);
    const summary = this.db
      .prepare(`SELECT count(*) AS n, min(changed_at) AS oldest FROM ${CHANGELOG}`)
      .safeIntegers(false)
      .get() as { n: number; oldest: string | null };
    result.pending = summary.n;
    result.lagSeconds = summary.oldest ? Math.max(0, Math.round((Date.now() - Date.parse(summary.oldest)) / 1000)) : 0;
    result.cursor = this.cursor();
    result.durationMs = Date.now() - started;
    this.logger?.info({ sync: result }, 'sync cycle');
    return result;
  }

  // ------------------------------------------------------------------ push

  private async push(result: CycleResult, signal: AbortSignal | undefined): Promise<void> {
    // A batch the server applied whole, settled while the next one is in flight.
    let answered: { row: OutboxRow; plan: PlanEntry[]; batch: UploadBatch; answer: UploadResponse } | undefined;
    // The next batch: read and written to the outbox while the one before it was in flight, not sent yet.
    let ahead: OutboxRow | undefined;
    // A batch read ahead was never sent: removing it only leaves its changelog entries queued.
    const dropAhead = (): void => {
      if (ahead) this.stmt(`DELETE FROM ${OUTBOX} WHERE seq = ?`).run(ahead.seq);
      ahead = undefined;
    };
    const settleAnswered = async (): Promise<void> => {
      const a = answered;
      answered = undefined;
      if (a) await this.settle(a.row, a.plan, a.batch, a.answer, result, signal);
    };
    for (;;) {
      // A stop request ends the push between batches, never inside one.
      if (signal?.aborted) {
        await settleAnswered();
        dropAhead();
        return;
      }
      if (!ahead) await settleAnswered();
      const row = ahead ?? this.nextOutbox() ?? this.buildBatch(result);
      ahead = undefined;
      if (!row) return;
      const batch = row.built?.batch ?? (JSON.parse(row.body) as UploadBatch);
      const plan = row.built?.plan ?? (JSON.parse(row.plan) as PlanEntry[]);
      let answer: UploadResponse;
      let reading: Promise<OutboxRow | undefined> | undefined;
      let settleError: unknown;
      try {
        const sending = this.remote.upload(batch);
        // Observed below; this only keeps a failure during the settlement from counting as unhandled.
        sending.catch(() => {});
        // While the server applies this batch: settle the previous answer, then read the next batch
        // from the rows this one does not touch and write it to the outbox (sent only after this one).
        try {
          await settleAnswered();
        } catch (error) {
          settleError = error;
        }
        const headEnd = row.built?.headEnd;
        if (headEnd !== undefined && settleError === undefined) {
          reading = this.readAhead(this.batchLimit(), headEnd, new Set(plan.map((p) => rowKey(p.table, p.pkText))), signal).catch(() => undefined);
        }
        answer = await sending;
      } catch (error) {
        ahead = await reading;
        dropAhead();
        if (settleError !== undefined) throw settleError;
        const rebuildable = plan.every((p) => p.seqs.length > 0);
        if (error instanceof RequestRejectedError && (error.wireCode === 'UNKNOWN_TABLE' || error.wireCode === 'UNKNOWN_COLUMN') && !this.rescoped && rebuildable) {
          // The web app migrated under us: rebuild the batch against the server's current scope once before blaming the change.
          this.rescoped = true;
          this.db.prepare(`DELETE FROM ${OUTBOX} WHERE seq = ?`).run(row.seq);
          await this.prepare(signal);
          continue;
        }
        if (this.isPermanent(error)) {
          this.handleRejection(row, plan, batch, error as RequestRejectedError, result);
          continue;
        }
        try {
          this.db.prepare(`UPDATE ${OUTBOX} SET attempts = attempts + 1, last_error = ? WHERE seq = ?`).run(error instanceof Error ? error.message.slice(0, 500) : String(error), row.seq);
        } catch {
          // Bookkeeping only: a busy database must not hide the failure being reported.
        }
        throw error;
      }
      ahead = await reading;
      if (settleError !== undefined) {
        // This batch stays in the outbox and is resent (the server replays its answer).
        dropAhead();
        throw settleError;
      }
      this.hooks.afterUpload?.(batch.batch_id);
      this.splitLimit = undefined;
      this.rescoped = false;
      result.batches += 1;
      if (ahead && answer.results.every((r) => r.status === 'applied')) {
        answered = { row, plan, batch, answer };
        continue;
      }
      // Conflicts and collisions move or settle rows: the batch read ahead may no longer be what a
      // build reads after them, so it goes and the next one is built after the settlement.
      dropAhead();
      await this.settle(row, plan, batch, answer, result, signal);
    }
  }

  private nextOutbox(): OutboxRow | undefined {
    return this.db.prepare(`SELECT seq, batch_id, body, plan FROM ${OUTBOX} ORDER BY seq LIMIT 1`).safeIntegers(false).get() as OutboxRow | undefined;
  }

  private batchLimit(): number {
    return Math.min(this.info?.limits?.max_batch_changes ?? 5000, this.splitLimit ?? this.batchSize);
  }

  /** Coalesces the changelog head per row into a batch and persists it in the outbox before anything is sent. */
  private buildBatch(result: CycleResult): OutboxRow | undefined {
    const limit = this.batchLimit();
    const build = this.db.transaction((): OutboxRow | undefined => {
      for (;;) {
        const built = this.buildFromHead(limit, result);
        // Everything read was quarantined: look at the next entries.
        if (built !== 'again') return built;
      }
    });
    return build.immediate();
  }

  private buildFromHead(limit: number, result: CycleResult): OutboxRow | undefined | 'again' {
    const head = this.readHead(limit, 0);
    if (!head) return undefined;
    const changes: Array<{ change: UploadChange; plan: PlanEntry }> = [];
    for (const entry of head.rows) {
      const planned = this.planChange(entry);
      if (!planned.ok) {
        quarantineChange(this.db, planned.quarantine);
        result.quarantined += 1;
        continue;
      }
      if (neverSent(entry, planned.change)) {
        // Inserted and deleted here before it was ever sent: the server never had it, and a delete
        // sent for its key could only reach a web app row that happens to have the same id.
        this.stmt(`DELETE FROM ${CHANGELOG} WHERE seq IN (SELECT value FROM json_each(?))`).run(JSON.stringify(entry.seqs));
        continue;
      }
      changes.push({ change: planned.change, plan: entry });
    }
    if (changes.length === 0) return 'again';
    const { batch, plan } = this.orderBatch(changes);
    return this.persistBatch(batch, plan, head.headEnd);
  }

  /**
   * Reads the rows that the first `limit` changelog entries after seq `after` touch, each with
   * every entry it has (later entries of a row are covered by the current values read with it).
   * Rows in `skip` are left for a later batch. Undefined when no entry lies after `after`.
   */
  private readHead(limit: number, after: number, skip?: Set<string>): { rows: PlanEntry[]; headEnd: number } | undefined {
    const headEnd = this.stmt(`SELECT max(seq) FROM (SELECT seq FROM ${CHANGELOG} WHERE seq > ? ORDER BY seq LIMIT ?)`, { pluck: true, safeIntegers: false }).get(after, limit) as number | null;
    if (headEnd === null) return undefined;
    // One statement through the row index; CROSS JOIN keeps the head window as the outer loop
    // (SQLite would otherwise scan the whole changelog against it).
    const entries = this.stmt(
      `SELECT c.seq, c.table_name, c.pk, c.op
         FROM (SELECT DISTINCT table_name, pk FROM ${CHANGELOG} WHERE seq > ? AND seq <= ?) h
         CROSS JOIN ${CHANGELOG} c ON c.table_name = h.table_name AND c.pk = h.pk
        ORDER BY c.seq`,
      { safeIntegers: false },
    ).all(after, headEnd) as Array<{ seq: number; table_name: string; pk: string; op: 'I' | 'U' | 'D' }>;
    const rows = new Map<string, PlanEntry>();
    for (const e of entries) {
      const key = rowKey(e.table_name, e.pk);
      if (skip?.has(key)) continue;
      const entry = rows.get(key);
      if (entry) entry.seqs.push(e.seq);
      else rows.set(key, { table: e.table_name, pkText: e.pk, seqs: [e.seq], firstOp: e.op });
    }
    return { rows: [...rows.values()], headEnd };
  }

  /** Returns a row's change (its current values, or a delete), or the quarantine entry when it cannot be sent. */
  private planChange(entry: PlanEntry): { ok: true; change: UploadChange } | { ok: false; quarantine: Omit<QuarantineRecord, 'id' | 'quarantinedAt'> } {
    const table = this.scope.get(entry.table);
    const pkValues = safeParseKey(entry.pkText);
    if (!table || !pkValues || pkValues.length !== table.primaryKey.length) {
      return {
        ok: false,
        quarantine: {
          table: entry.table,
          pkText: entry.pkText,
          pk: { key: entry.pkText },
          op: 'upsert',
          change: null,
          seqs: entry.seqs,
          code: 'NOT_SYNCED',
          reason: table ? `the changelog key ${entry.pkText} does not match the primary key of ${entry.table}` : `table ${entry.table} is not synced by the server`,
          requestId: null,
        },
      };
    }
    const built = this.changeFor(table, pkValues);
    if (built.ok) return built;
    return { ok: false, quarantine: { table: entry.table, pkText: entry.pkText, pk: built.pk, op: built.op, change: null, seqs: entry.seqs, code: 'UNCONVERTIBLE', reason: built.reason, requestId: null } };
  }

  /**
   * Orders a batch's changes: parents before children for upserts, children before parents for
   * deletes. Children of a row inserted here in the same batch wait for a later one (see {@link withoutChildrenOfNewRows}).
   */
  private orderBatch(all: Array<{ change: UploadChange; plan: PlanEntry }>): { batch: UploadBatch; plan: PlanEntry[] } {
    const changes = this.withoutChildrenOfNewRows(all);
    const order = (c: UploadChange): number => this.scope.get(c.table)?.order ?? 0;
    const first = (p: PlanEntry): number => p.seqs[0] ?? 0;
    const upserts = changes.filter((c) => c.change.op === 'upsert').sort((a, b) => order(a.change) - order(b.change) || first(a.plan) - first(b.plan));
    const deletes = changes.filter((c) => c.change.op === 'delete').sort((a, b) => order(b.change) - order(a.change) || first(a.plan) - first(b.plan));
    const ordered = [...upserts, ...deletes];
    return { batch: { batch_id: this.newBatchId(), base_cursor: this.cursor(), changes: ordered.map((c) => c.change) }, plan: ordered.map((c) => c.plan) };
  }

  /**
   * Leaves out of a batch the upserts whose foreign key names a row that the same batch inserts in a
   * re-keyable table. Such a row may collide with a web app row of the same id; its children sent
   * with it would then be applied pointing at the web app's row until a later batch carried the
   * moved key, and a cascading delete of that web row in the meantime took them with it. Left in the
   * changelog, they go in a later batch, built after this one's answer was settled (and the key moved
   * when it collided). Read-ahead batches never hold them: those are sent only when the batch before
   * came back without a collision.
   */
  private withoutChildrenOfNewRows(changes: Array<{ change: UploadChange; plan: PlanEntry }>): Array<{ change: UploadChange; plan: PlanEntry }> {
    const inserted = new Set<string>();
    for (const { change, plan } of changes) {
      const table = this.scope.get(change.table);
      if (change.op === 'upsert' && plan.firstOp === 'I' && table?.rekeyable) inserted.add(rowKey(table.name, String(change.pk[table.primaryKey[0]!])));
    }
    if (inserted.size === 0) return changes;
    const references = new Map<string, Array<{ parent: string; column: string }>>();
    for (const parent of this.scope.values()) {
      for (const child of parent.children) references.set(child.table, [...(references.get(child.table) ?? []), { parent: parent.name, column: child.column }]);
    }
    return changes.filter(({ change }) => {
      if (change.op !== 'upsert' || !change.values) return true;
      const self = this.scope.get(change.table);
      return !(references.get(change.table) ?? []).some(({ parent, column }) => {
        const value = change.values![column];
        if (value === null || value === undefined) return false;
        // A row naming itself (a self-reference) goes with itself.
        if (parent === change.table && self && String(change.pk[self.primaryKey[0]!]) === String(value)) return false;
        return inserted.has(rowKey(parent, String(value)));
      });
    });
  }

  /**
   * Reads the batch that follows one in flight (the head window after `after`, without the rows of
   * the batch in flight) and writes it to the outbox, unsent. Read in slices, so the upload's
   * answer is taken as it arrives; undefined when a row needs quarantine (left to the next regular
   * build), an entry went meanwhile, or nothing is left.
   */
  private async readAhead(limit: number, after: number, skip: Set<string>, signal: AbortSignal | undefined): Promise<OutboxRow | undefined> {
    // Let the upload reach the socket first.
    await new Promise((resolve) => setImmediate(resolve));
    // Each slice is one read transaction: outside one, every row read takes and drops SQLite's
    // file lock (and, with a rollback journal, re-validates its page cache), which cost more than the read.
    const head = this.db.transaction(() => this.readHead(limit, after, skip))();
    if (!head || head.rows.length === 0) return undefined;
    const changes: Array<{ change: UploadChange; plan: PlanEntry }> = [];
    for (let start = 0; start < head.rows.length; start += PREBUILD_SLICE) {
      if (start > 0) await new Promise((resolve) => setImmediate(resolve));
      if (signal?.aborted) return undefined;
      const refused = this.db.transaction((): boolean => {
        for (const entry of head.rows.slice(start, start + PREBUILD_SLICE)) {
          const planned = this.planChange(entry);
          // Quarantine and never-sent rows are left to the next regular build, which settles them.
          if (!planned.ok || neverSent(entry, planned.change)) return true;
          changes.push({ change: planned.change, plan: entry });
        }
        return false;
      })();
      if (refused) return undefined;
    }
    const { batch, plan } = this.orderBatch(changes);
    const seqs = plan.flatMap((p) => p.seqs);
    const persist = this.db.transaction((): OutboxRow | undefined => {
      const present = this.stmt(`SELECT count(*) FROM ${CHANGELOG} WHERE seq IN (SELECT value FROM json_each(?))`, { pluck: true, safeIntegers: false }).get(JSON.stringify(seqs)) as number;
      return present === seqs.length ? this.persistBatch(batch, plan, head.headEnd) : undefined;
    });
    return persist.immediate();
  }

  private persistBatch(batch: UploadBatch, plan: PlanEntry[], headEnd?: number): OutboxRow {
    const body = JSON.stringify(batch);
    const planText = JSON.stringify(plan);
    const info = this.stmt(`INSERT INTO ${OUTBOX} (batch_id, body, plan) VALUES (?, ?, ?)`).run(batch.batch_id, body, planText);
    return { seq: Number(info.lastInsertRowid), batch_id: batch.batch_id, body, plan: planText, built: { batch, plan, headEnd } };
  }

  /**
   * Returns a statement compiled once per engine (until the scope is re-read): the push and pull
   * paths run the same few statements once per row, and compiling each time dominated them.
   */
  private stmt(sql: string, mode: { pluck?: boolean; safeIntegers?: boolean } = {}): Database.Statement {
    const key = `${mode.pluck ? 'p' : '-'}${mode.safeIntegers === undefined ? '-' : mode.safeIntegers ? 's' : 'n'}${sql}`;
    let statement = this.statements.get(key);
    if (!statement) {
      statement = this.db.prepare(sql);
      if (mode.pluck) statement.pluck();
      if (mode.safeIntegers !== undefined) statement.safeIntegers(mode.safeIntegers);
      this.statements.set(key, statement);
    }
    return statement;
  }

  private newBatchId(): string {
    return `${this.remote.nodeId.slice(0, 80)}:${Date.now().toString(36)}.${randomBytes(5).toString('hex')}`;
  }

  /** Builds the change for one row: its current values as an upsert, or a delete when it is gone. */
  private changeFor(
    table: ScopeTable,
    pkValues: PrimaryKeyValue[],
  ): { ok: true; change: UploadChange } | { ok: false; reason: string; pk: Record<string, unknown>; op: 'upsert' | 'delete' } {
    const row = this.readRow(table, pkValues);
    const pk: Record<string, unknown> = {};
    const problems: string[] = [];
    table.primaryKey.forEach((name, i) => {
      const c = toWire(pkValues[i] as SqliteValue, table.byName.get(name)!.type, { timezone: this.timezone });
      if (c.ok) pk[name] = c.value;
      else {
        pk[name] = String(pkValues[i]);
        problems.push(`${name}: ${c.reason}`);
      }
    });
    if (!row) {
      if (problems.length > 0) return { ok: false, reason: problems.join('; '), pk, op: 'delete' };
      return { ok: true, change: { table: table.name, op: 'delete', pk } };
    }
    const values = this.rowToWire(table, row, problems);
    if (problems.length > 0) return { ok: false, reason: problems.join('; '), pk, op: 'upsert' };
    return { ok: true, change: { table: table.name, op: 'upsert', pk, values } };
  }

  private rowToWire(table: ScopeTable, row: Row, problems: string[] = []): Record<string, unknown> {
    const values: Record<string, unknown> = {};
    for (const col of table.columns) {
      const c = toWire(row[col.name] ?? null, col.type, { timezone: this.timezone });
      if (c.ok) values[col.name] = c.value;
      else problems.push(`${col.name}: ${c.reason}`);
    }
    return values;
  }

  private readRow(table: ScopeTable, pkValues: PrimaryKeyValue[]): Row | undefined {
    const cols = table.columns.map((c) => quoteIdent(c.name)).join(', ');
    const where = table.primaryKey.map((c) => `${quoteIdent(c)} IS ?`).join(' AND ');
    return this.stmt(`SELECT ${cols} FROM ${quoteIdent(table.name)} WHERE ${where}`, { safeIntegers: true }).get(...pkValues) as Row | undefined;
  }

  private isPermanent(error: unknown): boolean {
    if (!(error instanceof RequestRejectedError)) return false;
    if (error.wireCode === 'INVALID_CURSOR') return false;
    return error.status === 400 || error.status === 409 || error.status === 413 || error.status === 422;
  }

  /** Settles a batch the server refused for good: quarantines the change it names, or splits the batch to find it. */
  private handleRejection(row: OutboxRow, plan: PlanEntry[], batch: UploadBatch, error: RequestRejectedError, result: CycleResult): void {
    const index = typeof error.details?.index === 'number' ? error.details.index : undefined;
    const requestId = typeof error.details?.request_id === 'string' ? error.details.request_id : null;
    this.logger?.warn({ batch_id: batch.batch_id, code: error.wireCode, index }, `upload refused: ${error.message}`);
    // Follow-up changes exist only in the outbox (no changelog entry to rebuild them from): each goes back alone.
    const requeueFollowUps = (except: number | undefined): void => {
      plan.forEach((entry, i) => {
        if (entry.seqs.length === 0 && i !== except && batch.changes[i]) this.persistBatch({ batch_id: this.newBatchId(), changes: [batch.changes[i]!] }, [entry]);
      });
    };
    const settle = this.db.transaction(() => {
      this.db.prepare(`DELETE FROM ${OUTBOX} WHERE seq = ?`).run(row.seq);
      const culprit = error.wireCode === 'BATCH_ID_REUSED' ? undefined : index !== undefined && plan[index] ? index : plan.length === 1 ? 0 : undefined;
      requeueFollowUps(culprit);
      if (error.wireCode === 'BATCH_ID_REUSED') return;
      if (culprit === undefined) {
        // No change named: halve the batch until the refused change is alone.
        this.splitLimit = Math.max(1, Math.floor(Math.min(plan.length, this.splitLimit ?? this.batchSize) / 2));
        return;
      }
      const entry = plan[culprit]!;
      const change = batch.changes[culprit]!;
      // A follow-up change (seqs empty) is quarantined too: it is the record of a decision not carried out.
      quarantineChange(this.db, {
        table: entry.table,
        pkText: entry.pkText,
        pk: change.pk,
        op: change.op,
        change: change as unknown as Record<string, unknown>,
        seqs: entry.seqs,
        code: error.wireCode,
        // The server's own words (which constraint, which value), without the client's framing.
        reason: error.message.replace(/^The server rejected the request to \S+ \(\d+ [A-Z_]+\): /, ''),
        requestId,
      });
      result.quarantined += 1;
    });
    settle.immediate();
  }

  /** Applies the server's answer locally: settles conflicts, moves colliding rows, clears acknowledged entries, all in one transaction. */
  private async settle(
    row: OutboxRow,
    plan: PlanEntry[],
    batch: UploadBatch,
    answer: UploadResponse,
    result: CycleResult,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const conflicts = answer.results.filter((r): r is Extract<UploadResult, { status: 'conflict' }> => r.status === 'conflict');
    // A lost conflict or a collision writes the server's values here: refuse any no honest server sends, before anything is settled (the batch stays in the outbox).
    await this.checkAgainstServer((tables) => {
      for (const r of conflicts) {
        const change = batch.changes[r.index]!;
        if (r.server_values) checkFeedChange({ table: change.table, op: 'upsert', pk: change.pk, values: r.server_values, origin: null }, tables, `The upload answer for change ${r.index}`);
      }
    }, signal);
    const collisions = conflicts.filter((r) => this.isCollision(batch.changes[r.index]!, plan[r.index]!, r.server_values ?? null));
    const ids = await this.allocate(collisions.map((r) => ({ table: batch.changes[r.index]!.table })), signal);
    const settle = this.db.transaction(() => {
      const fixups: Array<{ change: UploadChange; plan: PlanEntry }> = [];
      const moved = new Set<number>();
      for (const r of conflicts) {
        const change = batch.changes[r.index]!;
        const entry = plan[r.index]!;
        const table = this.scope.get(change.table);
        if (!table) continue;
        const serverValues = (r.server_values ?? null) as Record<string, unknown> | null;
        const newId = collisions.includes(r) ? ids.get(change.table)?.shift() : undefined;
        if (newId !== undefined) {
          const pkValues = parseKey(entry.pkText);
          const local = this.readRow(table, pkValues);
          this.rekey(table, pkValues[0] as PrimaryKeyValue, BigInt(newId), entry.pkText);
          moved.add(r.index);
          recordConflict(this.db, {
            table: change.table,
            pk: change.pk,
            kind: 'id-collision',
            source: 'push',
            policy: this.policy,
            winner: 'both',
            localValues: local ? this.rowToWire(table, local) : (change.values ?? null),
            remoteValues: serverValues,
            serverConflictId: r.conflict_id ?? null,
            note: `local row moved to ${table.primaryKey[0]}=${newId}`,
          });
          result.collisions += 1;
          // The server applied ours over the web app's row (or over its delete): put that back.
          if (r.resolution === 'client-wins') {
            fixups.push({ change: serverValues ? { table: change.table, op: 'upsert', pk: change.pk, values: serverValues } : { table: change.table, op: 'delete', pk: change.pk }, plan: { ...entry, seqs: [], firstOp: 'U' } });
          }
          continue;
        }
        result.conflicts += 1;
        const pkValues = parseKey(entry.pkText);
        const current = this.readRow(table, pkValues);
        const localValues = current ? this.rowToWire(table, current) : null;
        const winner = this.decide(change.op === 'upsert' ? (change.values ?? null) : null, serverValues, table);
        recordConflict(this.db, {
          table: change.table,
          pk: change.pk,
          kind: 'conflict',
          source: 'push',
          policy: this.policy,
          winner,
          localValues: winner === 'remote' ? localValues : change.op === 'upsert' ? (change.values ?? null) : null,
          remoteValues: serverValues,
          serverConflictId: r.conflict_id ?? null,
          note: null,
        });
        if (winner === 'remote') {
          this.suppressed(() =>
            this.applyOrQuarantine(table, entry.pkText, { table: change.table, op: serverValues ? 'upsert' : 'delete', pk: change.pk, values: serverValues, origin: null }, result),
          );
          // Edits made after the batch was read lose too; they are in the log above.
          this.db.prepare(`DELETE FROM ${CHANGELOG} WHERE table_name = ? AND pk = ?`).run(entry.table, entry.pkText);
          if (r.resolution === 'client-wins') {
            fixups.push({ change: serverValues ? { table: change.table, op: 'upsert', pk: change.pk, values: serverValues } : { table: change.table, op: 'delete', pk: change.pk }, plan: { ...entry, seqs: [], firstOp: 'U' } });
          }
        } else if (r.resolution === 'server-wins') {
          fixups.push({ change: { table: change.table, op: change.op, pk: change.pk, ...(change.values ? { values: change.values } : {}) }, plan: { ...entry, seqs: [], firstOp: 'U' } });
        }
      }
      const ack = this.stmt(`DELETE FROM ${CHANGELOG} WHERE seq = ?`);
      plan.forEach((entry, i) => {
        if (moved.has(i)) return;
        for (const s of entry.seqs) ack.run(s);
        if (batch.changes[i]) result.pushed += 1;
      });
      this.db.prepare(`DELETE FROM ${OUTBOX} WHERE seq = ?`).run(row.seq);
      if (fixups.length > 0) {
        // Sent without a base cursor: the decision is taken, the server must not weigh it again.
        this.persistBatch({ batch_id: this.newBatchId(), changes: fixups.map((f) => f.change) }, fixups.map((f) => f.plan));
      }
    });
    settle.immediate();
  }

  private isCollision(change: UploadChange, entry: PlanEntry, serverValues: Record<string, unknown> | null): boolean {
    const table = this.scope.get(change.table);
    // A new local row meeting a remote change of its key is another row, also when the web app has deleted that one since (serverValues null).
    return table !== undefined && table.rekeyable && change.op === 'upsert' && entry.firstOp === 'I' && this.remote.allocateIds !== undefined;
  }

  /** Takes fresh ids from the server for each colliding row, above every id the local table holds. */
  private async allocate(requests: Array<{ table: string }>, signal: AbortSignal | undefined): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    const counts = new Map<string, number>();
    for (const r of requests) counts.set(r.table, (counts.get(r.table) ?? 0) + 1);
    for (const [name, count] of counts) {
      const table = this.scope.get(name)!;
      const pk = quoteIdent(table.primaryKey[0]!);
      for (let attempt = 0; ; attempt++) {
        const max = this.db.prepare(`SELECT max(${pk}) FROM ${quoteIdent(name)}`).pluck().safeIntegers(true).get() as bigint | null;
        const ids = await this.remote.allocateIds!(name, count, String(max ?? 0n), { signal });
        // The desktop app may have inserted meanwhile and taken one of these ids from its own
        // counter: ask again. Free ones are reserved in SQLite's AUTOINCREMENT counter, so the
        // desktop's next inserts go past them before the row is moved there.
        const free = this.db.transaction((): boolean => {
          const probe = this.db.prepare(`SELECT 1 FROM ${quoteIdent(name)} WHERE ${pk} = ?`);
          if (ids.some((id) => probe.get(BigInt(id)) !== undefined)) return false;
          const top = ids.reduce((a, id) => (BigInt(id) > a ? BigInt(id) : a), 0n);
          const hasCounter = this.db.prepare(`SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'`).get() !== undefined;
          if (hasCounter) this.db.prepare('UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?').run(top, name);
          return true;
        }).immediate();
        if (free) {
          out.set(name, ids);
          break;
        }
        if (attempt >= 3) throw new EpetsyncError('EPS_DB_BUSY', `The desktop app kept taking the ids handed out for moving colliding rows of ${name}`, { hint: 'Run the sync again.' });
      }
    }
    return out;
  }

  /**
   * Moves a local row from `oldId` to `newId` with capture suppressed, rewrites its pending
   * changelog entries to the new key (so it is pushed as a new row and nothing deletes the web
   * app's row), and points every local child at the new id with capture on (so they are pushed).
   */
  private rekey(table: ScopeTable, oldId: PrimaryKeyValue, newId: bigint, oldKeyText: string): void {
    const pk = quoteIdent(table.primaryKey[0]!);
    const newKeyText = String(this.db.prepare('SELECT quote(?)').pluck().get(newId));
    this.suppressed(() => {
      this.db.prepare(`UPDATE ${quoteIdent(table.name)} SET ${pk} = ? WHERE ${pk} = ?`).run(newId, oldId);
      this.db.prepare(`UPDATE ${CHANGELOG} SET pk = ? WHERE table_name = ? AND pk = ?`).run(newKeyText, table.name, oldKeyText);
    }, 1);
    this.suppressed(() => {
      for (const child of table.children) {
        this.db.prepare(`UPDATE ${quoteIdent(child.table)} SET ${quoteIdent(child.column)} = ? WHERE ${quoteIdent(child.column)} = ?`).run(newId, oldId);
      }
    }, 0);
    this.logger?.info({ table: table.name, from: String(oldId), to: newId.toString() }, 'id collision: local row moved to a fresh id');
  }

  /** Runs `fn` with capture suppressed (or, with 0, explicitly on), restoring the previous state. Call inside a transaction. */
  private suppressed<T>(fn: () => T, value: 0 | 1 = 1): T {
    const before = this.db.prepare(`SELECT suppress FROM ${INTERNAL_PREFIX}apply WHERE id = 1`).pluck().safeIntegers(false).get() as number;
    const set = this.db.prepare(`UPDATE ${INTERNAL_PREFIX}apply SET suppress = ? WHERE id = 1`);
    set.run(value);
    try {
      return fn();
    } finally {
      set.run(before);
    }
  }

  /** Returns whose version wins under the client's policy: `local` or `remote`. */
  private decide(local: Record<string, unknown> | null, remote: Record<string, unknown> | null, table: ScopeTable): 'local' | 'remote' {
    if (this.policy === 'client-wins') return 'local';
    if (this.policy === 'server-wins') return 'remote';
    const col = this.updatedAtColumn;
    if (!col || !local || !remote || !table.byName.has(col)) return 'remote';
    const l = instant(local[col]);
    const r = instant(remote[col]);
    if (l === null || r === null) return 'remote';
    // Ties go to the server, as the server's own newest-wins does.
    return l > r ? 'local' : 'remote';
  }

  // ------------------------------------------------------------------ pull

  /** Replays the feed with this node's own uploads into a restored database (see markRestored). */
  private async replayRestored(result: CycleResult, signal: AbortSignal | undefined): Promise<void> {
    this.replaying = true;
    try {
      await this.pull(result, signal, true);
    } finally {
      this.replaying = false;
    }
    if (signal?.aborted) return;
    // A batch the backup still held is stale now: what it carried is on the server (and was just
    // replayed) or still queued (and goes in a fresh batch). Resent, its old answer would be
    // settled again over the replayed rows (a collision moving the web app's row, say).
    this.db.transaction(() => {
      this.db.prepare(`DELETE FROM ${OUTBOX}`).run();
      writeMeta(this.db, META_RESTORED, null);
    })();
    this.logger?.info({ pulled: result.pulled, conflicts: result.conflicts }, 'replayed the feed into the database restored from a backup');
  }

  private async pull(result: CycleResult, signal: AbortSignal | undefined, echo = false): Promise<void> {
    this.hooks.beforePull?.();
    for (;;) {
      if (signal?.aborted) return;
      const cursor = this.cursor();
      const page = await this.remote.changesSince(cursor, echo ? { limit: this.batchSize, echo } : { limit: this.batchSize });
      await this.checkPage(page, cursor, signal);
      await this.applyPage(page, result, signal);
      if (!page.has_more) return;
    }
  }

  /**
   * Refuses a page that no honest server sends (docs/protocol.md): a cursor that goes backwards or
   * stands still, an unknown table or column, a value that does not fit its column, a row twice.
   * Nothing of it is applied. A table or column unknown to the cached server info is judged again
   * against a fresh one: the web app may have migrated; then the scope is taken anew.
   */
  private async checkPage(page: ChangePage, since: string, signal: AbortSignal | undefined): Promise<void> {
    await this.checkAgainstServer((tables) => checkChangePage(page, since, tables), signal);
  }

  /** Runs a check of server rows against server info; a table or column it does not know is judged again against a fresh one, whose scope is then taken. */
  private async checkAgainstServer(check: (tables: ReadonlyMap<string, TableInfo>) => void, signal: AbortSignal | undefined): Promise<void> {
    try {
      check(new Map((this.info?.tables ?? []).map((t) => [t.name, t])));
    } catch (error) {
      if (!(error instanceof ProtocolError) || error.details?.stale_scope !== true) throw error;
      const info = await this.remote.info({ signal });
      check(new Map(info.tables.map((t) => [t.name, t])));
      await this.prepare(signal);
    }
  }

  private async applyPage(page: ChangePage, result: CycleResult, signal: AbortSignal | undefined): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      // Replaying after a restore, the server's rows win outright: a pending insert from the backup
      // at a taken id was either sent since (the server holds it) or is superseded; never re-keyed twice.
      const collisions = this.replaying ? [] : this.pullCollisions(page);
      const ids = await this.allocate(collisions.map((c) => ({ table: c.table })), signal);
      // One write transaction, capture suppressed: the page, its collisions and its cursor commit together.
      const applied = applyWithoutCapture(this.db, (): boolean => {
        const now = this.replaying ? [] : this.pullCollisions(page);
        // A desktop insert between the scan and the lock: take more ids and start the page again.
        if (now.some((c) => !collisions.some((d) => d.table === c.table && d.keyText === c.keyText))) return false;
        this.db.pragma('defer_foreign_keys = ON');
        const movedKeys = new Set<string>();
        // Moved first, so a remote child applied below is never taken along.
        for (const c of now) {
          const table = this.scope.get(c.table)!;
          const newId = ids.get(c.table)!.shift()!;
          const local = this.readRow(table, c.pkValues);
          this.rekey(table, c.pkValues[0]!, BigInt(newId), c.keyText);
          recordConflict(this.db, {
            table: c.table,
            pk: c.change.pk,
            kind: 'id-collision',
            source: 'pull',
            policy: this.policy,
            winner: 'both',
            localValues: local ? this.rowToWire(table, local) : null,
            remoteValues: c.change.values,
            serverConflictId: null,
            note: `local row moved to ${table.primaryKey[0]}=${newId}`,
          });
          result.collisions += 1;
          movedKeys.add(`${c.table}\u0000${c.keyText}`);
        }
        for (const change of page.changes) this.applyFeedChange(change, result, movedKeys);
        writeMeta(this.db, META.pullCursor, page.cursor);
        this.hooks.beforePullCommit?.(page);
        return true;
      });
      if (applied) return;
      if (attempt >= 3) throw new EpetsyncError('EPS_DB_BUSY', 'The desktop app kept inserting colliding rows while a feed page was applied', { hint: 'Run the sync again.' });
    }
  }

  private pullCollisions(page: ChangePage): Array<{ table: string; keyText: string; pkValues: PrimaryKeyValue[]; change: FeedChange }> {
    const out: Array<{ table: string; keyText: string; pkValues: PrimaryKeyValue[]; change: FeedChange }> = [];
    if (!this.remote.allocateIds) return out;
    const first = this.stmt(`SELECT op FROM ${CHANGELOG} WHERE table_name = ? AND pk = ? ORDER BY seq LIMIT 1`, { pluck: true, safeIntegers: false });
    for (const change of page.changes) {
      const table = this.scope.get(change.table);
      // A feed delete too: the web app deleting its own row with this id must not take the desktop's new row with it.
      if (!table || !table.rekeyable) continue;
      const pkValues = this.localKey(table, change.pk);
      const keyText = this.keyText(pkValues);
      if (first.get(table.name, keyText) !== 'I' || !this.readRow(table, pkValues)) continue;
      if (!out.some((o) => o.table === table.name && o.keyText === keyText)) out.push({ table: table.name, keyText, pkValues, change });
    }
    return out;
  }

  private applyFeedChange(change: FeedChange, result: CycleResult, moved: Set<string>): void {
    const table = this.scope.get(change.table);
    if (!table) return;
    const pkValues = this.localKey(table, change.pk);
    const keyText = this.keyText(pkValues);
    const pending = moved.has(`${table.name}\u0000${keyText}`)
      ? []
      : (this.stmt(`SELECT seq FROM ${CHANGELOG} WHERE table_name = ? AND pk = ?`, { pluck: true, safeIntegers: false }).all(table.name, keyText) as number[]);
    result.pulled += 1;
    if (pending.length > 0) {
      // Changed here since the last sync and changed there: a conflict.
      const current = this.readRow(table, pkValues);
      const localValues = current ? this.rowToWire(table, current) : null;
      const winner = this.replaying ? 'remote' : this.decide(localValues, change.values, table);
      // This desktop's own upload, replayed after a restore, is newer than what the backup still had pending.
      const own = this.replaying && change.origin === this.remote.nodeId;
      if (!own) {
        recordConflict(this.db, {
          table: table.name,
          pk: change.pk,
          kind: 'conflict',
          source: 'pull',
          policy: this.policy,
          winner,
          localValues,
          remoteValues: change.values,
          serverConflictId: null,
          note: this.replaying ? 'restored from a backup: the server changed the row since; the change pending in the backup is dropped' : null,
        });
        result.conflicts += 1;
      }
      if (winner === 'local') return;
      this.db.prepare(`DELETE FROM ${CHANGELOG} WHERE table_name = ? AND pk = ?`).run(table.name, keyText);
    }
    this.applyOrQuarantine(table, keyText, change, result);
  }

  /** Applies a remote version; a row the desktop schema refuses is quarantined instead of failing the transaction. */
  private applyOrQuarantine(table: ScopeTable, keyText: string, change: FeedChange, result: CycleResult): void {
    try {
      // Nested: a savepoint, so a refused row rolls back alone and the page goes on.
      this.db.transaction(() => this.applyRemote(table, change.pk, change.values))();
    } catch (error) {
      const code = sqliteCode(error) ?? '';
      if (!code.startsWith('SQLITE_CONSTRAINT') && code !== 'SQLITE_MISMATCH') throw error;
      // A row the desktop schema refuses (a local-only UNIQUE or NOT NULL) must not hold the feed back forever.
      quarantineChange(this.db, {
        table: table.name,
        pkText: keyText,
        pk: change.pk,
        op: change.op,
        change: change as unknown as Record<string, unknown>,
        seqs: [],
        code: 'LOCAL_REFUSED',
        reason: `the desktop database refused the server's row: ${error instanceof Error ? error.message : String(error)}`,
        requestId: null,
      });
      result.quarantined += 1;
      this.logger?.warn({ table: table.name, pk: change.pk, code }, 'a remote row was refused by the desktop database and quarantined');
    }
  }

  /** Writes a remote version of a row (or deletes it when `values` is null). Call with capture suppressed. */
  private applyRemote(table: ScopeTable, pk: Record<string, unknown>, values: Record<string, unknown> | null): void {
    const pkValues = this.localKey(table, pk);
    const name = quoteIdent(table.name);
    if (values === null) {
      const where = table.primaryKey.map((c) => `${quoteIdent(c)} IS ?`).join(' AND ');
      this.stmt(`DELETE FROM ${name} WHERE ${where}`).run(...pkValues);
      return;
    }
    const cols = table.columns.filter((c) => Object.prototype.hasOwnProperty.call(values, c.name));
    const params = cols.map((c) => this.toLocal(values[c.name] as WireValue, c.type));
    const updates = cols.filter((c) => !table.primaryKey.includes(c.name)).map((c) => `${quoteIdent(c.name)} = excluded.${quoteIdent(c.name)}`);
    const conflict = updates.length > 0 ? `DO UPDATE SET ${updates.join(', ')}` : 'DO NOTHING';
    this.stmt(
      `INSERT INTO ${name} (${cols.map((c) => quoteIdent(c.name)).join(', ')}) VALUES (${cols.map(() => '?').join(', ')}) ` +
        `ON CONFLICT (${table.primaryKey.map((c) => quoteIdent(c)).join(', ')}) ${conflict}`,
    ).run(...params);
  }

  private toLocal(value: WireValue, type: PgType): SqliteValue {
    const v = fromWire(value, type, { timezone: this.timezone });
    // better-sqlite3 binds every JS number as REAL: keep integers integers (keys, quote()).
    if (typeof v === 'number' && Number.isInteger(v) && (INT_KINDS.has(type.kind) || type.kind === 'boolean')) return BigInt(v);
    return v;
  }

  private localKey(table: ScopeTable, pk: Record<string, unknown>): PrimaryKeyValue[] {
    return table.primaryKey.map((c) => this.toLocal((pk[c] ?? null) as WireValue, table.byName.get(c)!.type) as PrimaryKeyValue);
  }

  /** Returns the changelog's key text for key values, computed by SQLite's own quote() as the triggers do. */
  private keyText(pkValues: PrimaryKeyValue[]): string {
    const sql = `SELECT ${pkValues.map(() => 'quote(?)').join(` || ',' || `)}`;
    return String(this.stmt(sql, { pluck: true }).get(...pkValues));
  }
}

/** Runs one sync cycle with a fresh engine (prepare, push, pull); convenient for `monitor --once` and tests. */
export async function runSyncCycle(options: SyncEngineOptions, signal?: AbortSignal): Promise<CycleResult> {
  const engine = new SyncEngine(options);
  await engine.prepare(signal);
  return engine.runCycle(signal);
}

/** True for a row whose pending entries begin with its insert and which is gone now: nothing of it ever reached the server. */
function neverSent(entry: PlanEntry, change: UploadChange): boolean {
  return entry.firstOp === 'I' && change.op === 'delete';
}

function rowKey(table: string, pkText: string): string {
  return `${table}\u0000${pkText}`;
}

function safeParseKey(text: string): PrimaryKeyValue[] | null {
  try {
    return parseKey(text);
  } catch {
    return null;
  }
}

function instant(value: unknown): number | null {
  if (typeof value !== 'string') return null;
  const iso = /[zZ]|[+-]\d{2}:?\d{2}$/.test(value) ? value : `${value.replace(' ', 'T')}Z`;
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return null;
  // Microseconds decide between writes in the same millisecond.
  const micro = /\.\d{3}(\d{1,3})/.exec(value)?.[1];
  return ms * 1000 + (micro ? Number(micro.padEnd(3, '0')) : 0);
}

/** Returns the synced scope: server tables that exist locally with the same key, columns kept by name on both sides. */
function buildScope(db: Database.Database, info: ServerInfo, include: string[] | undefined, exclude: string[] | undefined): Map<string, ScopeTable> {
  const localTables = new Set(
    (db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).pluck().all() as string[]).filter((n) => !n.startsWith(INTERNAL_PREFIX) && !n.startsWith('sqlite_')),
  );
  const scope = new Map<string, ScopeTable>();
  info.tables.forEach((t, order) => {
    if (!localTables.has(t.name)) return;
    if (include && !include.includes(t.name)) return;
    if (exclude?.includes(t.name)) return;
    const localCols = new Set((db.prepare(`SELECT name FROM pragma_table_info(?)`).pluck().all(t.name) as string[]));
    if (!t.primary_key.every((k) => localCols.has(k))) return;
    const columns = t.columns.filter((c) => localCols.has(c.name)).map((c) => ({ name: c.name, type: parsePgType(c.type) }));
    const byName = new Map(columns.map((c) => [c.name, c]));
    const keyCol = t.primary_key.length === 1 ? t.columns.find((c) => c.name === t.primary_key[0]) : undefined;
    const keyKind = keyCol ? parsePgType(keyCol.type).kind : undefined;
    const rekeyable = keyCol !== undefined && INT_KINDS.has(keyKind ?? '') && (keyCol.identity === true || /nextval\(/i.test(keyCol.default ?? ''));
    scope.set(t.name, { name: t.name, order, primaryKey: t.primary_key, columns, byName, rekeyable, children: [] });
  });
  for (const child of localTables) {
    const fks = db.prepare(`SELECT "table" AS parent, "from" AS col, "to" AS target FROM pragma_foreign_key_list(?)`).all(child) as Array<{ parent: string; col: string; target: string | null }>;
    for (const fk of fks) {
      const parent = scope.get(fk.parent);
      if (!parent || !parent.rekeyable) continue;
      if (fk.target !== null && fk.target !== parent.primaryKey[0]) continue;
      parent.children.push({ table: child, column: fk.col });
    }
  }
  return scope;
}
