import { createHash, randomBytes } from 'node:crypto';
import type { SqlExecutor } from '../sql.js';
import type { AccountSource } from './accounts.js';

const TOKEN_FORMAT = /^eps_[A-Za-z0-9_-]{43}$/;

/** Holds a token row as the server needs it; the token itself is never stored. */
export interface TokenRecord {
  username: string;
  source: AccountSource;
  userId: string | null;
  expiresAtMs: number;
  revoked: boolean;
}

/** Returns a new random token: `eps_` + base64url of 32 random bytes. */
export function newToken(): string {
  return `eps_${randomBytes(32).toString('base64url')}`;
}

/** Returns the SHA-256 digest a token is stored under. */
export function tokenHash(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** Returns true when the text has the shape of a token epetsync issues (checked before any lookup). */
export function looksLikeToken(text: string): boolean {
  return TOKEN_FORMAT.test(text);
}

/** Stores a new token's hash with its owner and expiry. */
export async function storeToken(
  db: SqlExecutor,
  token: string,
  owner: { username: string; source: AccountSource; userId: string | null },
  createdAt: Date,
  expiresAt: Date,
): Promise<void> {
  await db.query(
    `INSERT INTO epetsync.tokens (token_hash, username, source, user_id, created_at, expires_at)
     VALUES ($1, $2, $3, $4::bigint, $5::timestamptz, $6::timestamptz)`,
    [tokenHash(token), owner.username, owner.source, owner.userId, createdAt.toISOString(), expiresAt.toISOString()],
  );
}

/** Finds a token by its hash. */
export async function findToken(db: SqlExecutor, token: string): Promise<TokenRecord | undefined> {
  const { rows } = await db.query<{ username: string; source: AccountSource; user_id: string | null; expires_epoch_ms: number | string; revoked: boolean }>(
    `SELECT username, source, user_id::text AS user_id,
            (extract(epoch FROM expires_at) * 1000)::float8 AS expires_epoch_ms,
            revoked_at IS NOT NULL AS revoked
       FROM epetsync.tokens WHERE token_hash = $1`,
    [tokenHash(token)],
  );
  const row = rows[0];
  if (!row) return undefined;
  return { username: row.username, source: row.source, userId: row.user_id, expiresAtMs: Number(row.expires_epoch_ms), revoked: row.revoked === true };
}

/** Marks a token revoked; returns false when it was unknown or already revoked. */
export async function revokeToken(db: SqlExecutor, token: string, at: Date): Promise<boolean> {
  const { rowCount } = await db.query('UPDATE epetsync.tokens SET revoked_at = $2::timestamptz WHERE token_hash = $1 AND revoked_at IS NULL', [
    tokenHash(token),
    at.toISOString(),
  ]);
  return rowCount > 0;
}

/** Deletes tokens that expired or were revoked more than `keepDays` ago; returns how many. */
export async function purgeTokens(db: SqlExecutor, keepDays: number): Promise<number> {
  const { rowCount } = await db.query(
    `DELETE FROM epetsync.tokens
      WHERE expires_at < now() - make_interval(days => $1::int)
         OR revoked_at < now() - make_interval(days => $1::int)`,
    [keepDays],
  );
  return rowCount;
}
