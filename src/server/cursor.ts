import { HttpError } from './http-error.js';
import type { SqlExecutor } from './sql.js';

/** Describes a position in the change feed: after changelog entry (txid, seq). */
export interface Cursor {
  txid: string;
  seq: string;
}

/** Marks the position before every change. */
export const START_CURSOR: Cursor = { txid: '0', seq: '0' };

const CURSOR_TEXT = /^c1\.(\d{1,20})\.(\d{1,19})$/;

/** Formats a cursor as the opaque wire string `c1.<txid>.<seq>`. */
export function formatCursor(cursor: Cursor): string {
  return `c1.${cursor.txid}.${cursor.seq}`;
}

/** Parses a wire cursor; throws `400 INVALID_CURSOR` for anything this server did not issue. */
export function parseCursor(text: string, field = 'since'): Cursor {
  const m = CURSOR_TEXT.exec(text);
  if (!m || BigInt(m[1]!) > 0xffffffffffffffffn || BigInt(m[2]!) > 0x7fffffffffffffffn) {
    throw new HttpError('INVALID_CURSOR', `${field} "${text.slice(0, 80)}" is not a cursor this server issued`, { field });
  }
  return { txid: m[1]!, seq: m[2]! };
}

/**
 * Rejects a cursor from the future (another database, a reset server): its transaction id must be
 * below the next transaction id to be assigned.
 */
export async function checkCursorIssued(db: SqlExecutor, cursor: Cursor, text: string, field = 'since'): Promise<void> {
  const { rows } = await db.query<{ ok: boolean }>(`SELECT $1::xid8 < pg_snapshot_xmax(pg_current_snapshot()) AS ok`, [cursor.txid]);
  if (rows[0]?.ok !== true && cursor.txid !== '0') {
    throw new HttpError('INVALID_CURSOR', `${field} "${text}" is ahead of this server's change feed (from another database?)`, { field });
  }
}

/**
 * Computes the safe horizon in SQL: changelog rows of transactions older than every transaction still in
 * progress. A transaction that began earlier but commits later keeps the horizon below its own
 * id until it ends, so its changes are never overtaken by later ones already served.
 *
 * Transaction ids are cluster-wide, so the snapshot's plain xmin would let a long transaction in
 * another database of the same server hold this feed back. In-progress ids that a live backend of
 * another database owns are skipped; an id that cannot be placed (it ended after the snapshot was
 * taken, or statistics are hidden from this role) still holds the horizon, which is always safe.
 * pg_current_snapshot() is the statement's snapshot, so every id below the result is visible.
 */
export const HORIZON_SQL = `(SELECT coalesce(
    (SELECT min(x) FROM pg_snapshot_xip(pg_current_snapshot()) AS x
      WHERE (x::text::numeric % 4294967296)::text NOT IN (
        SELECT a.backend_xid::text FROM pg_stat_activity a
         WHERE a.backend_xid IS NOT NULL AND a.datname IS DISTINCT FROM current_database())),
    pg_snapshot_xmax(pg_current_snapshot())))`;

/** Returns the feed head: the last change below the safe horizon (or the start). */
export async function headCursor(db: SqlExecutor): Promise<Cursor> {
  const { rows } = await db.query<{ txid: string; seq: string }>(
    // Order by the qualified columns: a bare `txid` would name the text alias and sort "99" after "100".
    `SELECT c.txid::text AS txid, c.seq::text AS seq FROM epetsync.changelog c
      WHERE c.txid < ${HORIZON_SQL} ORDER BY c.txid DESC, c.seq DESC LIMIT 1`,
  );
  return rows[0] ? { txid: rows[0].txid, seq: rows[0].seq } : START_CURSOR;
}
