import { performance } from 'node:perf_hooks';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { UsageError } from '../../errors.js';
import { HttpError } from '../http-error.js';
import type { SqlDatabase } from '../sql.js';
import {
  detectSource,
  findAccount,
  findTokenAccount,
  formatSyncRule,
  parseSyncRule,
  refusal,
  type AccountSource,
  type SourceInfo,
  type StoredAccount,
  type SyncRule,
} from './accounts.js';
import { dummyDjangoHash, dummyScryptHash, verifyDjangoHash, verifyScryptHash, type PasswordCheck } from './passwords.js';
import { FailureLimiter, clientKey, type LimitRule } from './rate-limit.js';
import { renderHttpError } from './render-error.js';
import { findToken, looksLikeToken, newToken, purgeTokens, revokeToken, storeToken } from './tokens.js';

/** Names the account a request was authenticated as; set on `request.account` by `app.requireSync`. */
export interface SyncAccount {
  username: string;
  source: AccountSource;
}

/** Configures {@link registerAuth}. */
export interface AuthOptions {
  db: SqlDatabase;
  /** Who may sync among Django users: `staff` (default), `superuser`, `active` or `group:<name>`. */
  syncPermission: string;
  /** Token lifetime (default 43200 = 12 h). */
  tokenTtlSeconds?: number;
  /** The clock for token expiry and rate limits (tests move it). */
  now?: () => Date;
  /** Failed-login limits (default 30 per client IP and 10 per username in 5 minutes). */
  rateLimit?: { perIp?: LimitRule; perUsername?: LimitRule };
  /** How long the catalogue check for Django's `auth_user` is reused (default 30 s). */
  sourceCacheSeconds?: number;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Rejects a request without a valid token of an account that may sync (a preHandler); sets `request.account`. */
    requireSync(request: FastifyRequest, reply: FastifyReply): Promise<void>;
  }
  interface FastifyRequest {
    /** The authenticated account; null until `app.requireSync` has run. */
    account: SyncAccount | null;
  }
}

/** Lists the default token lifetime in seconds (12 hours). */
export const DEFAULT_TOKEN_TTL_SECONDS = 12 * 3600;
/** Lists the default failed-login limits: per client IP and per username, 5-minute sliding window. */
export const DEFAULT_RATE_LIMITS = { perIp: { max: 30, windowSeconds: 300 }, perUsername: { max: 10, windowSeconds: 300 } } as const;

const LOGIN_BODY = {
  type: 'object',
  required: ['username', 'password'],
  properties: {
    username: { type: 'string', minLength: 1, maxLength: 150 },
    // Django's own limit (MAXIMUM_PASSWORD_LENGTH).
    password: { type: 'string', minLength: 1, maxLength: 4096 },
  },
} as const;

const WWW_AUTHENTICATE = 'Bearer realm="epetsync"';
// Dead token rows are kept a week (who logged in, when it ended), then deleted at most hourly.
const TOKEN_KEEP_DAYS = 7;
const PURGE_EVERY_MS = 3600_000;

/**
 * Registers `POST /api/auth/token/`, `POST /api-token-auth/` and `DELETE /api/auth/token/`, and
 * decorates `app.requireSync`. Run `installAuthSchema` on the database first.
 */
export async function registerAuth(app: FastifyInstance, options: AuthOptions): Promise<void> {
  const db = options.db;
  const rule: SyncRule = parseSyncRule(options.syncPermission || 'staff');
  const ruleText = formatSyncRule(rule);
  const ttl = options.tokenTtlSeconds ?? DEFAULT_TOKEN_TTL_SECONDS;
  if (!Number.isSafeInteger(ttl) || ttl < 1) {
    throw new UsageError('EPS_USAGE', `The token lifetime must be a whole number of seconds above 0, not ${ttl}.`, { hint: 'Use 43200 (12 hours) unless you have a reason not to.' });
  }
  const now = options.now ?? (() => new Date());
  const byIp = new FailureLimiter(options.rateLimit?.perIp ?? DEFAULT_RATE_LIMITS.perIp);
  const byUsername = new FailureLimiter(options.rateLimit?.perUsername ?? DEFAULT_RATE_LIMITS.perUsername);
  const sources = sourceCache(db, (options.sourceCacheSeconds ?? 30) * 1000);
  const dummies = dummyHashes();
  let lastPurge = Number.NEGATIVE_INFINITY;
  const purge = async (request: FastifyRequest): Promise<void> => {
    if (performance.now() - lastPurge < PURGE_EVERY_MS) return;
    lastPurge = performance.now();
    try {
      const purged = await purgeTokens(db, TOKEN_KEEP_DAYS);
      if (purged > 0) request.log.info({ purged }, 'old tokens deleted');
    } catch (error) {
      request.log.warn({ err: error }, 'could not delete old tokens');
    }
  };

  const verify = async (account: StoredAccount | undefined, password: string, info: SourceInfo, request: FastifyRequest): Promise<boolean> => {
    let check: PasswordCheck | undefined;
    if (account) {
      check = account.source === 'django' ? await verifyDjangoHash(password, account.passwordHash) : await verifyScryptHash(password, account.passwordHash);
      if (check.supported) return check.ok;
      request.log.warn({ username: account.username, hasher: check.hasher }, `cannot check the password of "${account.username}": its hash uses the ${check.hasher} hasher, which epetsync does not support`);
    }
    // Unknown users and unusable hashes cost the same time as a real check, so timing reveals nothing.
    const dummy = info.source === 'django' ? await dummies.django(info.djangoIterations) : await dummies.scrypt();
    await (info.source === 'django' ? verifyDjangoHash(password, dummy) : verifyScryptHash(password, dummy));
    return false;
  };

  const login = async (request: FastifyRequest, reply: FastifyReply): Promise<TokenAnswer> => {
    const body = (request.body ?? {}) as { username?: unknown; password?: unknown };
    // Ajv may coerce types; accept only real strings.
    if (typeof body.username !== 'string' || typeof body.password !== 'string') {
      throw new HttpError('BAD_REQUEST', 'username and password must be strings.', { problems: [{ path: 'body', message: 'username and password must be strings' }] });
    }
    const { username, password } = body;
    const nowMs = now().getTime();
    const ipKey = clientKey(request.ip);
    const userKey = username.toLowerCase();
    const wait = Math.max(byIp.retryAfter(ipKey, nowMs), byUsername.retryAfter(userKey, nowMs));
    if (wait > 0) {
      request.log.warn({ ip: request.ip, retry_after: wait }, 'login refused: too many failed attempts');
      throw new HttpError('RATE_LIMITED', `Too many failed logins; try again in ${wait} s.`, { retry_after: wait }, wait);
    }
    // Counted as failed until proven right, so that parallel guesses cannot all slip under the limit.
    byIp.fail(ipKey, nowMs);
    byUsername.fail(userKey, nowMs);
    const info = await sources.get();
    const account = await findAccount(db, info.source, username);
    if (!(await verify(account, password, info, request))) {
      // An unknown name is often a password typed into the wrong field: log that it was unknown, not what it was.
      request.log.warn(account ? { username: account.username, source: info.source } : { unknown_user: true, source: info.source }, 'login failed: invalid credentials');
      throw new HttpError('INVALID_CREDENTIALS', 'Invalid username or password.');
    }
    byIp.forgive(ipKey, nowMs);
    byUsername.reset(userKey);
    const refused = await refusal(db, account!, rule, info);
    if (refused) throw forbidden(account!, refused, ruleText, request);
    const token = newToken();
    const issuedAt = new Date(Math.floor(nowMs / 1000) * 1000);
    const expiresAt = new Date(issuedAt.getTime() + ttl * 1000);
    await storeToken(db, token, { username: account!.username, source: account!.source, userId: account!.userId }, issuedAt, expiresAt);
    request.log.info({ username: account!.username, source: account!.source, expires_at: isoSeconds(expiresAt) }, 'token issued');
    await purge(request);
    void reply.header('cache-control', 'no-store');
    return { token, token_type: 'Bearer', expires_at: isoSeconds(expiresAt), expires_in: ttl, username: account!.username };
  };

  const requireSync = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const token = presentedToken(request, reply);
    const record = looksLikeToken(token) ? await findToken(db, token) : undefined;
    if (!record || record.revoked) throw invalidToken(reply, record ? 'The token was revoked; log in again.' : 'The token is not valid; log in again.');
    if (record.expiresAtMs <= now().getTime()) {
      void reply.header('www-authenticate', `${WWW_AUTHENTICATE}, error="invalid_token"`);
      throw new HttpError('TOKEN_EXPIRED', 'The token has expired; log in again for a new one.');
    }
    const info = await sources.get();
    if (record.source !== info.source) throw invalidToken(reply, 'The server now takes its accounts from elsewhere; log in again.');
    const account = await findTokenAccount(db, record.source, record.userId, record.username);
    if (!account) throw invalidToken(reply, 'The account of this token no longer exists.');
    const refused = await refusal(db, account, rule, info);
    if (refused) throw forbidden(account, refused, ruleText, request);
    request.account = { username: account.username, source: account.source };
  };

  const logout = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const token = presentedToken(request, reply);
    // Logging out works whatever became of the account since: it only ever removes access.
    if (!looksLikeToken(token) || !(await revokeToken(db, token, now()))) throw invalidToken(reply, 'The token is not valid or was already revoked.');
    request.log.info('token revoked');
    await reply.code(204).send();
  };

  app.decorateRequest('account', null);
  app.decorate('requireSync', requireSync);

  const loginRoute = {
    schema: { body: LOGIN_BODY },
    bodyLimit: 16 * 1024,
    // Auth routes render their own errors so that a body parse error can never echo a password.
    errorHandler: renderHttpError,
    handler: login,
  };
  app.post('/api/auth/token/', loginRoute);
  app.post('/api-token-auth/', loginRoute);
  app.delete('/api/auth/token/', { errorHandler: renderHttpError, handler: logout });
}

/** Lists the fields of a login answer. */
export interface TokenAnswer {
  token: string;
  token_type: 'Bearer';
  expires_at: string;
  expires_in: number;
  username: string;
}

function presentedToken(request: FastifyRequest, reply: FastifyReply): string {
  const header = request.headers.authorization;
  const match = typeof header === 'string' ? /^\s*(Bearer|Token)\s+(\S+)\s*$/i.exec(header) : null;
  if (!match) {
    void reply.header('www-authenticate', WWW_AUTHENTICATE);
    throw new HttpError(
      'AUTH_REQUIRED',
      header === undefined ? 'This request needs a token: send "Authorization: Bearer <token>" (POST /api/auth/token/ gives one).' : 'The Authorization header must be "Bearer <token>" or "Token <token>".',
    );
  }
  return match[2]!;
}

function invalidToken(reply: FastifyReply, message: string): HttpError {
  void reply.header('www-authenticate', `${WWW_AUTHENTICATE}, error="invalid_token"`);
  return new HttpError('TOKEN_INVALID', message);
}

function forbidden(account: StoredAccount, reason: 'inactive' | 'not_permitted', ruleText: string, request: FastifyRequest): HttpError {
  const rule = account.source === 'django' ? ruleText : 'active';
  request.log.warn({ username: account.username, source: account.source, rule, reason }, 'account may not sync');
  const message =
    reason === 'inactive'
      ? `The account "${account.username}" is not active.`
      : `The account "${account.username}" may not sync: the server's rule is "${rule}".`;
  return new HttpError('FORBIDDEN', message, { rule, reason });
}

function isoSeconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function sourceCache(db: SqlDatabase, maxAgeMs: number): { get(): Promise<SourceInfo> } {
  let cached: { info: SourceInfo; at: number } | undefined;
  let pending: Promise<SourceInfo> | undefined;
  return {
    get() {
      if (cached && performance.now() - cached.at < maxAgeMs) return Promise.resolve(cached.info);
      pending ??= detectSource(db)
        .then((info) => {
          cached = { info, at: performance.now() };
          return info;
        })
        .finally(() => {
          pending = undefined;
        });
      return pending;
    },
  };
}

function dummyHashes(): { django(iterations: number): Promise<string>; scrypt(): Promise<string> } {
  const django = new Map<number, Promise<string>>();
  let scrypt: Promise<string> | undefined;
  return {
    django(iterations) {
      let hash = django.get(iterations);
      if (!hash) {
        hash = dummyDjangoHash(iterations);
        // Only a handful of distinct counts ever occur; keep the map from growing regardless.
        if (django.size > 8) django.clear();
        django.set(iterations, hash);
      }
      return hash;
    },
    scrypt() {
      scrypt ??= dummyScryptHash();
      return scrypt;
    },
  };
}
