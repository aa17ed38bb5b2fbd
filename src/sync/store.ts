import type Database from 'better-sqlite3';
import { INTERNAL_PREFIX } from './local-capture.js';

/**
 * The sync engine's own tables in the desktop database, beside the changelog of local-capture.ts:
 * the outbox (a batch persisted before it is sent, so a crash-and-retry reuses its batch id), the
 * conflicts log (every losing version, never dropped) and the quarantine (changes the server
 * refused for good, with its reason). Living in the same file as the data means each of them is
 * written in the same transaction as the rows it describes.
 */

/** Names the outbox table. */
export const OUTBOX = `${INTERNAL_PREFIX}outbox`;
/** Names the conflicts log table. */
export const CONFLICTS = `${INTERNAL_PREFIX}conflicts`;
/** Names the quarantine table. */
export const QUARANTINE = `${INTERNAL_PREFIX}quarantine`;

const NOW = `(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))`;

/** Creates the outbox, conflicts log and quarantine tables when missing (idempotent). */
export function ensureSyncTables(db: Database.Database): void {
  db.exec(`
    CREATE TABLE IF NOT EXISTS ${OUTBOX} (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      batch_id TEXT NOT NULL UNIQUE,
      body TEXT NOT NULL,
      plan TEXT NOT NULL,
      created_at TEXT NOT NULL DEFAULT ${NOW},
      attempts INTEGER NOT NULL DEFAULT 0,
      last_error TEXT
    );
    CREATE TABLE IF NOT EXISTS ${CONFLICTS} (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      detected_at TEXT NOT NULL DEFAULT ${NOW},
      table_name TEXT NOT NULL,
      pk TEXT NOT NULL,
      kind TEXT NOT NULL,
      source TEXT NOT NULL,
      policy TEXT NOT NULL,
      winner TEXT NOT NULL,
      local_values TEXT,
      remote_values TEXT,
      server_conflict_id TEXT,
      note TEXT
    );
    CREATE TABLE IF NOT EXISTS ${QUARANTINE} (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      quarantined_at TEXT NOT NULL DEFAULT ${NOW},
      table_name TEXT NOT NULL,
      pk_text TEXT NOT NULL,
      pk TEXT NOT NULL,
      op TEXT NOT NULL,
      change TEXT,
      seqs TEXT NOT NULL,
      code TEXT NOT NULL,
      reason TEXT NOT NULL,
      request_id TEXT
    );
  `);
}

function tableExists(db: Database.Database, name: string): boolean {
  return db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(name) !== undefined;
}

/** Describes one entry of the conflicts log. */
export interface ConflictRecord {
  id: number;
  detectedAt: string;
  table: string;
  pk: Record<string, unknown>;
  /** `conflict`: both sides changed the row; `id-collision`: two different rows got the same id. */
  kind: 'conflict' | 'id-collision';
  /** Where it was found: answering an upload (`push`) or applying the feed (`pull`). */
  source: 'push' | 'pull';
  policy: string;
  /** Whose version the row now holds; `both` for an id collision (the local row moved). */
  winner: 'local' | 'remote' | 'both';
  /** The local version (wire encoding), null when the row was deleted locally. */
  localValues: Record<string, unknown> | null;
  /** The remote version (wire encoding), null when the row was deleted remotely. */
  remoteValues: Record<string, unknown> | null;
  serverConflictId: string | null;
  note: string | null;
}

/** Appends one entry to the conflicts log (call it inside the transaction that settles the conflict). */
export function recordConflict(db: Database.Database, entry: Omit<ConflictRecord, 'id' | 'detectedAt'>): void {
  db.prepare(
    `INSERT INTO ${CONFLICTS} (table_name, pk, kind, source, policy, winner, local_values, remote_values, server_conflict_id, note)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  ).run(
    entry.table,
    JSON.stringify(entry.pk),
    entry.kind,
    entry.source,
    entry.policy,
    entry.winner,
    entry.localValues === null ? null : JSON.stringify(entry.localValues),
    entry.remoteValues === null ? null : JSON.stringify(entry.remoteValues),
    entry.serverConflictId,
    entry.note,
  );
}

/** Lists the conflicts log, oldest first (empty when sync never ran). */
export function listConflicts(db: Database.Database): ConflictRecord[] {
  if (!tableExists(db, CONFLICTS)) return [];
  const rows = db.prepare(`SELECT * FROM ${CONFLICTS} ORDER BY id`).safeIntegers(false).all() as Array<Record<string, string | number | null>>;
  return rows.map((r) => ({
    id: Number(r.id),
    detectedAt: String(r.detected_at),
    table: String(r.table_name),
    pk: JSON.parse(String(r.pk)) as Record<string, unknown>,
    kind: r.kind as ConflictRecord['kind'],
    source: r.source as ConflictRecord['source'],
    policy: String(r.policy),
    winner: r.winner as ConflictRecord['winner'],
    localValues: r.local_values === null ? null : (JSON.parse(String(r.local_values)) as Record<string, unknown>),
    remoteValues: r.remote_values === null ? null : (JSON.parse(String(r.remote_values)) as Record<string, unknown>),
    serverConflictId: r.server_conflict_id === null ? null : String(r.server_conflict_id),
    note: r.note === null ? null : String(r.note),
  }));
}

/** Describes one quarantined change: what was refused, why, and the changelog entries it took out of the queue. */
export interface QuarantineRecord {
  id: number;
  quarantinedAt: string;
  table: string;
  /** The changelog's key text (SQL literals), used to put the change back in the queue. */
  pkText: string;
  pk: Record<string, unknown>;
  op: 'upsert' | 'delete';
  /** The change as it was (or would have been) sent. */
  change: Record<string, unknown> | null;
  seqs: number[];
  /** The server's error code (`CONSTRAINT_VIOLATION`…) or a local one (`UNCONVERTIBLE`). */
  code: string;
  reason: string;
  requestId: string | null;
}

/** Moves a change to the quarantine: records it and deletes the changelog entries it covered, in one transaction with the caller's. */
export function quarantineChange(db: Database.Database, entry: Omit<QuarantineRecord, 'id' | 'quarantinedAt'>): void {
  db.prepare(
    `INSERT INTO ${QUARANTINE} (table_name, pk_text, pk, op, change, seqs, code, reason, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  ).run(entry.table, entry.pkText, JSON.stringify(entry.pk), entry.op, entry.change === null ? null : JSON.stringify(entry.change), JSON.stringify(entry.seqs), entry.code, entry.reason, entry.requestId);
  const del = db.prepare(`DELETE FROM ${INTERNAL_PREFIX}changelog WHERE seq = ?`);
  for (const s of entry.seqs) del.run(s);
  // Later entries of the row stay queued: they may be the clinic's fix, which must reach the server.
}

/** Lists the quarantine, oldest first (empty when sync never ran). */
export function listQuarantine(db: Database.Database): QuarantineRecord[] {
  if (!tableExists(db, QUARANTINE)) return [];
  const rows = db.prepare(`SELECT * FROM ${QUARANTINE} ORDER BY id`).safeIntegers(false).all() as Array<Record<string, string | number | null>>;
  return rows.map((r) => ({
    id: Number(r.id),
    quarantinedAt: String(r.quarantined_at),
    table: String(r.table_name),
    pkText: String(r.pk_text),
    pk: JSON.parse(String(r.pk)) as Record<string, unknown>,
    op: r.op as QuarantineRecord['op'],
    change: r.change === null ? null : (JSON.parse(String(r.change)) as Record<string, unknown>),
    seqs: JSON.parse(String(r.seqs)) as number[],
    code: String(r.code),
    reason: String(r.reason),
    requestId: r.request_id === null ? null : String(r.request_id),
  }));
}

/** Puts a quarantined change back in the queue (a fresh changelog entry for its row) and removes it from the quarantine; false when the id is unknown. */
export function retryQuarantined(db: Database.Database, id: number): QuarantineRecord | null {
  const run = db.transaction(() => {
    const found = listQuarantine(db).find((q) => q.id === id);
    if (!found) return null;
    // The engine reads the row's current values when it builds the batch, so the op only matters for the log.
    db.prepare(`INSERT INTO ${INTERNAL_PREFIX}changelog (table_name, pk, op) VALUES (?, ?, ?)`).run(found.table, found.pkText, found.op === 'delete' ? 'D' : 'U');
    db.prepare(`DELETE FROM ${QUARANTINE} WHERE id = ?`).run(id);
    return found;
  });
  return run.immediate();
}

/** Removes a quarantined change for good; the caller keeps a copy first. Returns the record, or null when unknown. */
export function discardQuarantined(db: Database.Database, id: number): QuarantineRecord | null {
  const run = db.transaction(() => {
    const found = listQuarantine(db).find((q) => q.id === id);
    if (!found) return null;
    db.prepare(`DELETE FROM ${QUARANTINE} WHERE id = ?`).run(id);
    return found;
  });
  return run.immediate();
}

/** Returns how many batches wait in the outbox (sent or not, not yet acknowledged). */
export function outboxCount(db: Database.Database): number {
  if (!tableExists(db, OUTBOX)) return 0;
  return Number(db.prepare(`SELECT count(*) FROM ${OUTBOX}`).pluck().safeIntegers(false).get());
}
