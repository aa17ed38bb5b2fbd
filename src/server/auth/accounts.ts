import { UsageError } from '../../errors.js';
import type { SqlExecutor } from '../sql.js';
import { hashPassword, pbkdf2Iterations } from './passwords.js';

/** Names where an account lives: the web app's Django `auth_user` table or epetsync's own `epetsync.users`. */
export type AccountSource = 'django' | 'epetsync';

/** Describes the rule deciding which Django users may sync (`--sync-permission`). */
export type SyncRule = { kind: 'staff' } | { kind: 'superuser' } | { kind: 'active' } | { kind: 'group'; group: string };

/** Holds one account as stored, with what the sync rule needs. */
export interface StoredAccount {
  source: AccountSource;
  /** Django's `auth_user.id`; null for epetsync accounts. */
  userId: string | null;
  username: string;
  passwordHash: string;
  isActive: boolean;
  isStaff: boolean;
  isSuperuser: boolean;
}

/** Describes the database's account source, looked up from the catalogue. */
export interface SourceInfo {
  source: AccountSource;
  /** Django's `auth_group` and `auth_user_groups` exist (needed by a `group:` rule). */
  hasGroups: boolean;
  /** Iterations of a real Django hash, so that checks for unknown users cost the same. */
  djangoIterations: number;
}

// Django 5.2's default; used until a real hash tells us what this web app uses.
const DEFAULT_DJANGO_ITERATIONS = 1_000_000;

/** Parses a `--sync-permission` value: `staff`, `superuser`, `active` or `group:<name>`. */
export function parseSyncRule(text: string): SyncRule {
  const value = text.trim();
  if (value === 'staff' || value === 'superuser' || value === 'active') return { kind: value };
  if (value.startsWith('group:') && value.length > 'group:'.length && value.length <= 'group:'.length + 150) {
    return { kind: 'group', group: value.slice('group:'.length) };
  }
  throw new UsageError('EPS_USAGE', `Unknown sync permission rule "${text}".`, {
    hint: 'Use --sync-permission staff (default), superuser, active, or group:<Django group name>.',
  });
}

/** Returns the rule as written on the command line (`group:Vets`). */
export function formatSyncRule(rule: SyncRule): string {
  return rule.kind === 'group' ? `group:${rule.group}` : rule.kind;
}

/** Looks up in the catalogue whether the web app's Django `auth_user` table exists. */
export async function detectSource(db: SqlExecutor): Promise<SourceInfo> {
  const { rows } = await db.query<{ has_user: boolean; has_groups: boolean }>(
    `SELECT to_regclass('public.auth_user') IS NOT NULL AS has_user,
            (to_regclass('public.auth_group') IS NOT NULL AND to_regclass('public.auth_user_groups') IS NOT NULL) AS has_groups`,
  );
  const row = rows[0]!;
  if (!row.has_user) return { source: 'epetsync', hasGroups: false, djangoIterations: DEFAULT_DJANGO_ITERATIONS };
  const sample = await db.query<{ password: string }>(
    `SELECT password FROM public.auth_user WHERE password LIKE 'pbkdf2\\_sha256$%' ORDER BY last_login DESC NULLS LAST LIMIT 1`,
  );
  const iterations = sample.rows[0] ? pbkdf2Iterations(sample.rows[0].password) : undefined;
  return {
    source: 'django',
    hasGroups: row.has_groups,
    djangoIterations: iterations !== undefined && iterations >= 1000 && iterations <= 5_000_000 ? iterations : DEFAULT_DJANGO_ITERATIONS,
  };
}

const DJANGO_COLUMNS = 'id::text AS user_id, username, password, is_active, is_staff, is_superuser';

interface DjangoRow {
  user_id: string;
  username: string;
  password: string;
  is_active: boolean;
  is_staff: boolean;
  is_superuser: boolean;
}

function fromDjango(row: DjangoRow): StoredAccount {
  return {
    source: 'django',
    userId: row.user_id,
    username: row.username,
    passwordHash: row.password ?? '',
    isActive: row.is_active === true,
    isStaff: row.is_staff === true,
    isSuperuser: row.is_superuser === true,
  };
}

function fromEpetsync(row: { username: string; password_hash: string; is_active: boolean }): StoredAccount {
  return { source: 'epetsync', userId: null, username: row.username, passwordHash: row.password_hash, isActive: row.is_active === true, isStaff: false, isSuperuser: false };
}

/** Finds an account by username in the given source (exact match, as Django's login does). */
export async function findAccount(db: SqlExecutor, source: AccountSource, username: string): Promise<StoredAccount | undefined> {
  // PostgreSQL text cannot hold NUL (the query would fail): no account has such a name.
  if (username.includes('\u0000')) return undefined;
  if (source === 'django') {
    const { rows } = await db.query<DjangoRow>(`SELECT ${DJANGO_COLUMNS} FROM public.auth_user WHERE username = $1`, [username]);
    return rows[0] ? fromDjango(rows[0]) : undefined;
  }
  const { rows } = await db.query<{ username: string; password_hash: string; is_active: boolean }>(
    'SELECT username, password_hash, is_active FROM epetsync.users WHERE username = $1',
    [username],
  );
  return rows[0] ? fromEpetsync(rows[0]) : undefined;
}

/** Finds the account a token was issued to: Django users by id (a rename keeps the token), epetsync users by name. */
export async function findTokenAccount(db: SqlExecutor, source: AccountSource, userId: string | null, username: string): Promise<StoredAccount | undefined> {
  if (source === 'django') {
    if (userId === null) return undefined;
    const { rows } = await db.query<DjangoRow>(`SELECT ${DJANGO_COLUMNS} FROM public.auth_user WHERE id = $1::bigint`, [userId]);
    return rows[0] ? fromDjango(rows[0]) : undefined;
  }
  return findAccount(db, 'epetsync', username);
}

/**
 * Returns why an account may not sync (`inactive`, `not_permitted`), or undefined when it may.
 * epetsync's own accounts need only be active; Django users must also pass the rule.
 */
export async function refusal(db: SqlExecutor, account: StoredAccount, rule: SyncRule, info: SourceInfo): Promise<'inactive' | 'not_permitted' | undefined> {
  if (!account.isActive) return 'inactive';
  if (account.source === 'epetsync') return undefined;
  switch (rule.kind) {
    case 'active':
      return undefined;
    case 'staff':
      return account.isStaff || account.isSuperuser ? undefined : 'not_permitted';
    case 'superuser':
      return account.isSuperuser ? undefined : 'not_permitted';
    case 'group': {
      if (!info.hasGroups) return 'not_permitted';
      const { rows } = await db.query(
        `SELECT 1 FROM public.auth_user_groups ug JOIN public.auth_group g ON g.id = ug.group_id
          WHERE ug.user_id = $1::bigint AND g.name = $2 LIMIT 1`,
        [account.userId, rule.group],
      );
      return rows.length > 0 ? undefined : 'not_permitted';
    }
  }
}

/** Tells what {@link createAccount} did. */
export type AccountChange = 'created' | 'updated';

/** Summarises one of epetsync's own accounts for `serve user list`. */
export interface AccountSummary {
  username: string;
  active: boolean;
  /** ISO 8601 UTC. */
  created_at: string;
  /** Tokens neither expired nor revoked. */
  active_tokens: number;
}

const USERNAME = /^[\w.@+-]{1,150}$/u;

/** Checks a username for epetsync's own accounts: 1–150 letters, digits and `@.+-_` (Django's rule). */
export function checkUsername(username: string): void {
  if (!USERNAME.test(username)) {
    throw new UsageError('EPS_USAGE', `The username "${username.slice(0, 160)}" is not valid.`, {
      hint: 'Use 1-150 letters, digits and the characters @ . + - _ (as Django does).',
    });
  }
}

/** Adds an epetsync account or replaces its password (revoking its tokens); upserts by username. */
export async function createAccount(db: SqlExecutor, username: string, password: string): Promise<AccountChange> {
  checkUsername(username);
  if (password.length === 0 || password.length > 4096) {
    throw new UsageError('EPS_USAGE', 'The password must be 1-4096 characters long.', { hint: 'Choose another password.' });
  }
  const hash = await hashPassword(password);
  const { rows } = await db.query<{ inserted: boolean }>(
    `INSERT INTO epetsync.users (username, password_hash, is_active) VALUES ($1, $2, true)
     ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash, is_active = true
     RETURNING (xmax = 0) AS inserted`,
    [username, hash],
  );
  const created = rows[0]?.inserted === true;
  // A new password ends every session made with the old one.
  if (!created) await revokeTokensOf(db, 'epetsync', username);
  return created ? 'created' : 'updated';
}

/** Removes an epetsync account and revokes its tokens; `removed` is false when there was no such account. */
export async function removeAccount(db: SqlExecutor, username: string): Promise<{ removed: boolean; tokensRevoked: number }> {
  const tokensRevoked = await revokeTokensOf(db, 'epetsync', username);
  const { rowCount } = await db.query('DELETE FROM epetsync.users WHERE username = $1', [username]);
  return { removed: rowCount > 0, tokensRevoked };
}

/** Lists epetsync's own accounts with their count of live tokens. */
export async function listAccounts(db: SqlExecutor): Promise<AccountSummary[]> {
  const { rows } = await db.query<{ username: string; is_active: boolean; created_at: string; active_tokens: number }>(
    `SELECT u.username, u.is_active,
            to_char(u.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS created_at,
            (SELECT count(*)::int FROM epetsync.tokens t
              WHERE t.source = 'epetsync' AND t.username = u.username AND t.revoked_at IS NULL AND t.expires_at > now()) AS active_tokens
       FROM epetsync.users u ORDER BY u.username`,
  );
  return rows.map((r) => ({ username: r.username, active: r.is_active === true, created_at: r.created_at, active_tokens: Number(r.active_tokens) }));
}

/** Revokes every live token of one account; returns how many. */
export async function revokeTokensOf(db: SqlExecutor, source: AccountSource, username: string): Promise<number> {
  const { rowCount } = await db.query(
    'UPDATE epetsync.tokens SET revoked_at = now() WHERE source = $1 AND username = $2 AND revoked_at IS NULL',
    [source, username],
  );
  return rowCount;
}
