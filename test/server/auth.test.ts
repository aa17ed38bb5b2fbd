import { createHash, pbkdf2Sync, randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type LightMyRequestResponse } from 'fastify';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createAccount,
  installAuthSchema,
  listAccounts,
  registerAuth,
  removeAccount,
  renderHttpError,
  type AuthOptions,
} from '../../src/server/auth/index.js';
import { detectSource } from '../../src/server/auth/accounts.js';
import { dummyDjangoHash, pbkdf2Iterations } from '../../src/server/auth/passwords.js';
import { openSqlDatabase, type SqlDatabase } from '../../src/server/sql.js';
import { createTestDatabase, pgQuery, type TestDatabase } from '../helpers/pg.js';

const TOKEN_URL = '/api/auth/token/';
const PROTECTED = '/api/test/protected/';
// Low on purpose: the test hashes are real Django format, only cheaper than production.
const ITERATIONS = 12_000;

/** Returns a Django `pbkdf2_sha256$…` (or sha1) hash made here with node:crypto, as Django's hasher writes it. */
function djangoHash(password: string, digest: 'sha256' | 'sha1' = 'sha256', iterations = ITERATIONS): string {
  const salt = randomBytes(16).toString('base64url').replace(/[-_]/g, 'x').slice(0, 22);
  const key = pbkdf2Sync(password, salt, iterations, digest === 'sha256' ? 32 : 20, digest);
  return `pbkdf2_${digest}$${iterations}$${salt}$${key.toString('base64')}`;
}

/** Collects everything the server logs, to prove no secret is in it. */
class LogCapture {
  readonly lines: string[] = [];
  readonly logger: FastifyBaseLogger = pino(
    { level: 'trace' },
    new Writable({
      write: (chunk: Buffer, _enc, done) => {
        this.lines.push(chunk.toString('utf8'));
        done();
      },
    }),
  );
  text(): string {
    return this.lines.join('');
  }
}

async function buildApp(db: SqlDatabase, log: LogCapture, options: Partial<AuthOptions> = {}): Promise<FastifyInstance> {
  const app = Fastify({ loggerInstance: log.logger });
  app.setErrorHandler(renderHttpError);
  await registerAuth(app, { db, syncPermission: 'staff', ...options });
  app.get(PROTECTED, { preHandler: app.requireSync }, async (request) => ({ account: request.account }));
  await app.ready();
  return app;
}

function login(app: FastifyInstance, username: string, password: string, extra: { url?: string; ip?: string } = {}): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: extra.url ?? TOKEN_URL, payload: { username, password }, remoteAddress: extra.ip ?? '127.0.0.1' });
}

async function tokenFor(app: FastifyInstance, username: string, password: string): Promise<string> {
  const res = await login(app, username, password);
  expect(res.statusCode, res.body).toBe(200);
  return (res.json() as { token: string }).token;
}

function get(app: FastifyInstance, authorization?: string): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'GET', url: PROTECTED, headers: authorization === undefined ? {} : { authorization } });
}

function errorOf(res: LightMyRequestResponse): { code: string; message: string; request_id: string; details?: Record<string, unknown> } {
  return (res.json() as { error: { code: string; message: string; request_id: string; details?: Record<string, unknown> } }).error;
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

describe('auth', () => {
  describe('with Django accounts on PostgreSQL', () => {
    let pgdb: TestDatabase;
    let db: SqlDatabase;
    const log = new LogCapture();
    const secrets: string[] = [];
    const password = (p: string): string => {
      secrets.push(p);
      return p;
    };
    const PW = {
      drsmith: password('Corr3ct-horse-battery'),
      admin: password('admin-Pa55word!'),
      reception: password('front-desk-secret'),
      vet: password('vet-group-secret'),
      gone: password('inactive-secret'),
      oldsha1: password('sha1-legacy-secret'),
      argon: password('argon-secret-pass'),
      wrong: password('not-the-password-xyz'),
    };
    let app: FastifyInstance;

    beforeAll(async () => {
      pgdb = await createTestDatabase('eps_auth');
      db = await openSqlDatabase({ databaseUrl: pgdb.url, poolSize: 4 });
      // Two at once: the loser of a catalogue race must not fail.
      await Promise.all([installAuthSchema(db), installAuthSchema(db)]);
      await installAuthSchema(db);
      await pgQuery(
        pgdb.url,
        `CREATE TABLE public.auth_user (
          id serial PRIMARY KEY, password varchar(128) NOT NULL, last_login timestamptz NULL,
          is_superuser boolean NOT NULL, username varchar(150) NOT NULL UNIQUE,
          first_name varchar(150) NOT NULL, last_name varchar(150) NOT NULL, email varchar(254) NOT NULL,
          is_staff boolean NOT NULL, is_active boolean NOT NULL, date_joined timestamptz NOT NULL)`,
      );
      await pgQuery(pgdb.url, 'CREATE TABLE public.auth_group (id serial PRIMARY KEY, name varchar(150) NOT NULL UNIQUE)');
      await pgQuery(
        pgdb.url,
        `CREATE TABLE public.auth_user_groups (id bigserial PRIMARY KEY,
          user_id integer NOT NULL REFERENCES public.auth_user (id), group_id integer NOT NULL REFERENCES public.auth_group (id),
          UNIQUE (user_id, group_id))`,
      );
      const users: Array<[string, string, { staff?: boolean; superuser?: boolean; active?: boolean }]> = [
        ['drsmith', djangoHash(PW.drsmith), { staff: true }],
        ['admin', djangoHash(PW.admin), { superuser: true }],
        ['reception', djangoHash(PW.reception), {}],
        ['vet', djangoHash(PW.vet), {}],
        ['gone', djangoHash(PW.gone), { staff: true, active: false }],
        ['oldsha1', djangoHash(PW.oldsha1, 'sha1'), { staff: true }],
        ['argon', 'argon2$argon2id$v=19$m=102400,t=2,p=8$c29tZXNhbHQ$WmFrZWhhc2hmb3J0ZXN0aW5n', { staff: true }],
        ['nopass', '!unusablePasswordMarker0123456789abcdefgh', { staff: true }],
      ];
      for (const [username, hash, flags] of users) {
        await pgQuery(
          pgdb.url,
          `INSERT INTO public.auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined)
           VALUES ($1, $2, $3, '', '', '', $4, $5, now())`,
          [hash, flags.superuser ?? false, username, flags.staff ?? false, flags.active ?? true],
        );
      }
      await pgQuery(pgdb.url, "INSERT INTO public.auth_group (name) VALUES ('Vets')");
      await pgQuery(
        pgdb.url,
        "INSERT INTO public.auth_user_groups (user_id, group_id) SELECT u.id, g.id FROM public.auth_user u, public.auth_group g WHERE u.username = 'vet' AND g.name = 'Vets'",
      );
      app = await buildApp(db, log);
    });

    afterAll(async () => {
      await app?.close();
      await db?.close();
      await pgdb?.drop();
    });

    it('logs in a staff user and lets the token through requireSync', async () => {
      const res = await login(app, 'drsmith', PW.drsmith);
      expect(res.statusCode).toBe(200);
      expect(res.headers['cache-control']).toBe('no-store');
      const body = res.json() as { token: string; token_type: string; expires_at: string; expires_in: number; username: string };
      secrets.push(body.token);
      expect(body.token).toMatch(/^eps_[A-Za-z0-9_-]{43}$/);
      expect(body).toMatchObject({ token_type: 'Bearer', expires_in: 43200, username: 'drsmith' });
      expect(body.expires_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      expect(Date.parse(body.expires_at) - Date.now()).toBeGreaterThan(43200_000 - 5_000);
      const ok = await get(app, `Bearer ${body.token}`);
      expect(ok.statusCode).toBe(200);
      expect(ok.json()).toEqual({ account: { username: 'drsmith', source: 'django' } });
    });

    it('stores only the SHA-256 of a token', async () => {
      const token = await tokenFor(app, 'drsmith', PW.drsmith);
      secrets.push(token);
      const rows = await pgQuery<Record<string, unknown>>(pgdb.url, 'SELECT * FROM epetsync.tokens');
      expect(JSON.stringify(rows)).not.toContain(token);
      expect(JSON.stringify(rows)).not.toContain(token.slice(4));
      const mine = await pgQuery<{ source: string; username: string; user_id: string }>(
        pgdb.url,
        'SELECT source, username, user_id::text AS user_id FROM epetsync.tokens WHERE token_hash = $1',
        [sha256(token)],
      );
      expect(mine).toEqual([{ source: 'django', username: 'drsmith', user_id: expect.stringMatching(/^\d+$/) }]);
    });

    it('gives a wrong password and an unknown user the same 401 answer', async () => {
      const wrong = await login(app, 'reception', PW.wrong, { ip: '10.0.0.2' });
      const unknown = await login(app, 'nobody-here', PW.wrong, { ip: '10.0.0.2' });
      expect(wrong.statusCode).toBe(401);
      expect(unknown.statusCode).toBe(401);
      const { request_id: _a, ...w } = errorOf(wrong);
      const { request_id: _b, ...u } = errorOf(unknown);
      expect(w).toEqual({ code: 'INVALID_CREDENTIALS', message: 'Invalid username or password.' });
      expect(u).toEqual(w);
      expect(wrong.headers['content-type']).toBe(unknown.headers['content-type']);
    });

    it('checks an unknown user against a dummy hash as costly as the web app\'s own', async () => {
      // Equal cost is the property; it is asserted on the iteration counts, not with a stopwatch,
      // which a loaded machine would make flaky.
      await pgQuery(
        pgdb.url,
        `INSERT INTO public.auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined, last_login)
         VALUES ($1, false, 'slowhash', '', '', '', true, true, now(), now() + interval '1 hour')`,
        [djangoHash(PW.drsmith, 'sha256', 150_000)],
      );
      try {
        const info = await detectSource(db);
        expect(info).toMatchObject({ source: 'django', djangoIterations: 150_000 });
        expect(pbkdf2Iterations(await dummyDjangoHash(info.djangoIterations))).toBe(150_000);
        const timed = await buildApp(db, log, { rateLimit: { perIp: { max: 100, windowSeconds: 60 }, perUsername: { max: 100, windowSeconds: 60 } } });
        try {
          const unknown = await login(timed, 'nobody-at-all', PW.wrong, { ip: '10.9.9.9' });
          const wrong = await login(timed, 'slowhash', PW.wrong, { ip: '10.9.9.9' });
          expect(unknown.statusCode).toBe(401);
          expect(wrong.statusCode).toBe(401);
          expect(JSON.parse(unknown.body).error.code).toBe(JSON.parse(wrong.body).error.code);
        } finally {
          await timed.close();
        }
      } finally {
        await pgQuery(pgdb.url, "UPDATE public.auth_user SET last_login = NULL WHERE username = 'slowhash'");
      }
    });

    it('refuses an inactive user with 403, but only after a correct password', async () => {
      const right = await login(app, 'gone', PW.gone);
      expect(right.statusCode).toBe(403);
      expect(errorOf(right)).toMatchObject({ code: 'FORBIDDEN', details: { rule: 'staff', reason: 'inactive' } });
      const wrong = await login(app, 'gone', PW.wrong, { ip: '10.0.0.3' });
      expect(errorOf(wrong).code).toBe('INVALID_CREDENTIALS');
    });

    it('refuses a non-staff user under the staff rule and admits a superuser', async () => {
      const res = await login(app, 'reception', PW.reception);
      expect(res.statusCode).toBe(403);
      expect(errorOf(res)).toMatchObject({ code: 'FORBIDDEN', details: { rule: 'staff', reason: 'not_permitted' } });
      expect((await login(app, 'admin', PW.admin)).statusCode).toBe(200);
    });

    it('applies the superuser, active and group rules', async () => {
      const superuser = await buildApp(db, log, { syncPermission: 'superuser' });
      const active = await buildApp(db, log, { syncPermission: 'active' });
      const group = await buildApp(db, log, { syncPermission: 'group:Vets' });
      try {
        expect((await login(superuser, 'admin', PW.admin)).statusCode).toBe(200);
        expect(errorOf(await login(superuser, 'drsmith', PW.drsmith)).details).toEqual({ rule: 'superuser', reason: 'not_permitted' });
        expect((await login(active, 'reception', PW.reception)).statusCode).toBe(200);
        expect((await login(active, 'gone', PW.gone)).statusCode).toBe(403);
        expect((await login(group, 'vet', PW.vet)).statusCode).toBe(200);
        const staffOnly = await login(group, 'drsmith', PW.drsmith);
        expect(staffOnly.statusCode).toBe(403);
        expect(errorOf(staffOnly).details).toEqual({ rule: 'group:Vets', reason: 'not_permitted' });
        // Leaving the group ends access for a token already issued.
        const token = await tokenFor(group, 'vet', PW.vet);
        secrets.push(token);
        expect((await get(group, `Bearer ${token}`)).statusCode).toBe(200);
        await pgQuery(pgdb.url, "DELETE FROM public.auth_user_groups WHERE user_id = (SELECT id FROM public.auth_user WHERE username = 'vet')");
        const after = await get(group, `Bearer ${token}`);
        expect(after.statusCode).toBe(403);
        expect(errorOf(after).details).toEqual({ rule: 'group:Vets', reason: 'not_permitted' });
      } finally {
        await Promise.all([superuser.close(), active.close(), group.close()]);
      }
    });

    it('rejects an unknown sync rule at start', async () => {
      const bare = Fastify();
      await expect(registerAuth(bare, { db, syncPermission: 'vets' })).rejects.toMatchObject({ code: 'EPS_USAGE' });
      await bare.close();
    });

    it('verifies pbkdf2_sha1 hashes and refuses other hashers with a warning naming the hasher', async () => {
      expect((await login(app, 'oldsha1', PW.oldsha1)).statusCode).toBe(200);
      const argon = await login(app, 'argon', PW.argon, { ip: '10.0.0.4' });
      expect(errorOf(argon).code).toBe('INVALID_CREDENTIALS');
      const unusable = await login(app, 'nopass', PW.argon, { ip: '10.0.0.4' });
      expect(errorOf(unusable).code).toBe('INVALID_CREDENTIALS');
      const text = log.text();
      expect(text).toMatch(/"hasher":"argon2"/);
      expect(text).toMatch(/"hasher":"unusable"/);
      expect(text).not.toContain('WmFrZWhhc2hmb3J0ZXN0aW5n');
      expect(text).not.toContain('unusablePasswordMarker');
    });

    it('answers 401 TOKEN_EXPIRED once expires_at has passed', async () => {
      const token = await tokenFor(app, 'drsmith', PW.drsmith);
      secrets.push(token);
      await pgQuery(pgdb.url, "UPDATE epetsync.tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1", [sha256(token)]);
      const res = await get(app, `Bearer ${token}`);
      expect(res.statusCode).toBe(401);
      expect(errorOf(res).code).toBe('TOKEN_EXPIRED');
    });

    it('deletes tokens a week after they expired or were revoked, at the next login', async () => {
      const rows: Array<[string, string, string | null]> = [
        ['old-expired', "now() - interval '8 days'", null],
        ['old-revoked', "now() + interval '1 hour'", "now() - interval '8 days'"],
        ['recent-expired', "now() - interval '6 days'", null],
      ];
      for (const [name, expires, revoked] of rows) {
        await pgQuery(
          pgdb.url,
          `INSERT INTO epetsync.tokens (token_hash, username, source, user_id, expires_at, revoked_at) VALUES ($1, 'drsmith', 'django', 1, ${expires}, ${revoked ?? 'NULL'})`,
          [sha256(name)],
        );
      }
      const fresh = await buildApp(db, log);
      try {
        await tokenFor(fresh, 'drsmith', PW.drsmith);
      } finally {
        await fresh.close();
      }
      const left = await pgQuery<{ h: Buffer }>(pgdb.url, 'SELECT token_hash AS h FROM epetsync.tokens WHERE token_hash = ANY($1)', [rows.map(([n]) => sha256(n))]);
      expect(left.map((r) => r.h.toString('hex'))).toEqual([sha256('recent-expired').toString('hex')]);
    });

    it('answers 401 TOKEN_INVALID for a tampered or made-up token', async () => {
      const token = await tokenFor(app, 'drsmith', PW.drsmith);
      secrets.push(token);
      const last = token.at(-1) === 'A' ? 'B' : 'A';
      for (const bad of [`${token.slice(0, -1)}${last}`, 'eps_short', `${token}x`, token.replace('eps_', 'epx_')]) {
        const res = await get(app, `Bearer ${bad}`);
        expect(res.statusCode).toBe(401);
        expect(errorOf(res).code).toBe('TOKEN_INVALID');
        expect(res.headers['www-authenticate']).toContain('invalid_token');
      }
    });

    it('revokes a token with DELETE and refuses it afterwards', async () => {
      const token = await tokenFor(app, 'drsmith', PW.drsmith);
      secrets.push(token);
      const del = await app.inject({ method: 'DELETE', url: TOKEN_URL, headers: { authorization: `Bearer ${token}` } });
      expect(del.statusCode).toBe(204);
      expect(del.body).toBe('');
      const after = await get(app, `Bearer ${token}`);
      expect(errorOf(after).code).toBe('TOKEN_INVALID');
      const again = await app.inject({ method: 'DELETE', url: TOKEN_URL, headers: { authorization: `Bearer ${token}` } });
      expect(again.statusCode).toBe(401);
      const bare = await app.inject({ method: 'DELETE', url: TOKEN_URL });
      expect(errorOf(bare).code).toBe('AUTH_REQUIRED');
    });

    it('takes access away at once when the user is deactivated, demoted or deleted after login', async () => {
      await pgQuery(
        pgdb.url,
        `INSERT INTO public.auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined)
         VALUES ($1, false, 'temp', '', '', '', true, true, now())`,
        [djangoHash(PW.drsmith)],
      );
      const token = await tokenFor(app, 'temp', PW.drsmith);
      secrets.push(token);
      expect((await get(app, `Token ${token}`)).statusCode).toBe(200);
      await pgQuery(pgdb.url, "UPDATE public.auth_user SET is_active = false WHERE username = 'temp'");
      const inactive = await get(app, `Bearer ${token}`);
      expect(inactive.statusCode).toBe(403);
      expect(errorOf(inactive)).toMatchObject({ code: 'FORBIDDEN', details: { rule: 'staff', reason: 'inactive' } });
      await pgQuery(pgdb.url, "UPDATE public.auth_user SET is_active = true, is_staff = false WHERE username = 'temp'");
      expect(errorOf(await get(app, `Bearer ${token}`)).details).toEqual({ rule: 'staff', reason: 'not_permitted' });
      await pgQuery(pgdb.url, "UPDATE public.auth_user SET is_staff = true, username = 'temp2' WHERE username = 'temp'");
      const renamed = await get(app, `Bearer ${token}`);
      expect(renamed.json()).toEqual({ account: { username: 'temp2', source: 'django' } });
      await pgQuery(pgdb.url, "DELETE FROM public.auth_user WHERE username = 'temp2'");
      expect(errorOf(await get(app, `Bearer ${token}`)).code).toBe('TOKEN_INVALID');
    });

    it('accepts the legacy Token scheme and the legacy /api-token-auth/ path', async () => {
      const res = await login(app, 'drsmith', PW.drsmith, { url: '/api-token-auth/' });
      expect(res.statusCode).toBe(200);
      const { token } = res.json() as { token: string };
      secrets.push(token);
      const legacy = await get(app, `Token ${token}`);
      expect(legacy.statusCode).toBe(200);
      expect((await get(app, `bearer ${token}`)).statusCode).toBe(200);
    });

    it('answers 401 AUTH_REQUIRED without an Authorization header or with another scheme', async () => {
      const missing = await get(app);
      expect(missing.statusCode).toBe(401);
      expect(errorOf(missing).code).toBe('AUTH_REQUIRED');
      expect(missing.headers['www-authenticate']).toBe('Bearer realm="epetsync"');
      const basic = await get(app, `Basic ${Buffer.from(`drsmith:${PW.drsmith}`).toString('base64')}`);
      expect(errorOf(basic).code).toBe('AUTH_REQUIRED');
    });

    it('answers 400 for a body of the wrong shape without echoing it', async () => {
      const cases: Array<{ payload: string; type: string; code: string }> = [
        { payload: JSON.stringify({ username: 'drsmith' }), type: 'application/json', code: 'BAD_REQUEST' },
        { payload: JSON.stringify({ username: 'drsmith', password: { x: PW.drsmith } }), type: 'application/json', code: 'BAD_REQUEST' },
        { payload: JSON.stringify({ username: 'drsmith', password: '' }), type: 'application/json', code: 'BAD_REQUEST' },
        { payload: JSON.stringify({ username: 'x'.repeat(151), password: 'p' }), type: 'application/json', code: 'BAD_REQUEST' },
        { payload: JSON.stringify([PW.drsmith]), type: 'application/json', code: 'BAD_REQUEST' },
        { payload: `{"username":"drsmith","password":${PW.drsmith}}`, type: 'application/json', code: 'INVALID_JSON' },
        { payload: `password=${PW.drsmith}`, type: 'application/x-www-form-urlencoded', code: 'UNSUPPORTED_MEDIA_TYPE' },
      ];
      for (const c of cases) {
        const res = await app.inject({ method: 'POST', url: TOKEN_URL, payload: c.payload, headers: { 'content-type': c.type } });
        expect(errorOf(res).code, c.payload).toBe(c.code);
        expect(res.body).not.toContain(PW.drsmith);
      }
      const missing = errorOf(await app.inject({ method: 'POST', url: TOKEN_URL, payload: { username: 'drsmith' } }));
      expect(missing.details?.problems).toEqual([{ path: 'body', message: "must have required property 'password'" }]);
    });

    it('limits failed logins per username with 429 and Retry-After, even for the right password', async () => {
      let clock = Date.now();
      const limited = await buildApp(db, log, { now: () => new Date(clock) });
      try {
        for (let i = 0; i < 10; i += 1) {
          const res = await login(limited, 'drsmith', PW.wrong, { ip: `10.1.0.${i}` });
          expect(res.statusCode).toBe(401);
        }
        const blocked = await login(limited, 'drsmith', PW.drsmith, { ip: '10.1.1.1' });
        expect(blocked.statusCode).toBe(429);
        expect(errorOf(blocked).code).toBe('RATE_LIMITED');
        const retryAfter = Number(blocked.headers['retry-after']);
        expect(retryAfter).toBeGreaterThan(290);
        expect(retryAfter).toBeLessThanOrEqual(300);
        // Other users are not held back by drsmith's limit.
        expect((await login(limited, 'admin', PW.admin, { ip: '10.1.1.1' })).statusCode).toBe(200);
        clock += (retryAfter - 5) * 1000;
        expect((await login(limited, 'drsmith', PW.drsmith, { ip: '10.1.1.1' })).statusCode).toBe(429);
        clock += 6000;
        expect((await login(limited, 'drsmith', PW.drsmith, { ip: '10.1.1.1' })).statusCode).toBe(200);
      } finally {
        await limited.close();
      }
    });

    it('counts parallel guesses before they are checked, so a burst cannot pass the limit', async () => {
      const limited = await buildApp(db, log);
      try {
        const answers = await Promise.all(Array.from({ length: 16 }, (_, i) => login(limited, 'admin', `${PW.wrong}${i}`, { ip: `10.2.0.${i}` })));
        const codes = answers.map((a) => a.statusCode).sort();
        expect(codes.filter((c) => c === 401)).toHaveLength(10);
        expect(codes.filter((c) => c === 429)).toHaveLength(6);
      } finally {
        await limited.close();
      }
    });

    it('counts IPv6 clients by their /64', async () => {
      const limited = await buildApp(db, log, { rateLimit: { perIp: { max: 3, windowSeconds: 60 } } });
      try {
        for (const suffix of ['1', '2', 'abcd:1']) {
          expect((await login(limited, `guess-${suffix}`, PW.wrong, { ip: `2001:db8:5:7::${suffix}` })).statusCode).toBe(401);
        }
        expect((await login(limited, 'admin', PW.admin, { ip: '2001:db8:5:7:ffff::9' })).statusCode).toBe(429);
        expect((await login(limited, 'admin', PW.admin, { ip: '2001:db8:5:8::1' })).statusCode).toBe(200);
      } finally {
        await limited.close();
      }
    });

    it('limits failed logins per client IP', async () => {
      const limited = await buildApp(db, log, { rateLimit: { perIp: { max: 5, windowSeconds: 60 } } });
      try {
        for (let i = 0; i < 5; i += 1) {
          expect((await login(limited, `guess${i}`, PW.wrong, { ip: '192.0.2.7' })).statusCode).toBe(401);
        }
        const blocked = await login(limited, 'drsmith', PW.drsmith, { ip: '192.0.2.7' });
        expect(blocked.statusCode).toBe(429);
        expect(Number(blocked.headers['retry-after'])).toBeGreaterThan(0);
        expect((await login(limited, 'drsmith', PW.drsmith, { ip: '192.0.2.8' })).statusCode).toBe(200);
      } finally {
        await limited.close();
      }
    });

    it('never writes a password or a token to the log', () => {
      const text = log.text();
      expect(text).toContain('token issued');
      expect(text).toContain('login failed');
      for (const secret of secrets) expect(text, 'a secret reached the log').not.toContain(secret);
      expect(text).not.toMatch(/eps_[A-Za-z0-9_-]{20}/);
      expect(text).not.toMatch(/pbkdf2_sha(256|1)\$/);
    });
  });

  describe("with epetsync's own accounts on PGlite", () => {
    let db: SqlDatabase;
    let app: FastifyInstance;
    const log = new LogCapture();
    const PASSWORD = 'front-desk-Pa55';

    beforeAll(async () => {
      db = await openSqlDatabase({ memory: true });
      await installAuthSchema(db);
      await installAuthSchema(db);
      expect(await createAccount(db, 'frontdesk', PASSWORD)).toBe('created');
      app = await buildApp(db, log, { tokenTtlSeconds: 600 });
    });

    afterAll(async () => {
      await app?.close();
      await db?.close();
    });

    it('stores scrypt hashes in the documented form', async () => {
      const { rows } = await db.query<{ password_hash: string }>("SELECT password_hash FROM epetsync.users WHERE username = 'frontdesk'");
      expect(rows[0]!.password_hash).toMatch(/^scrypt\$32768\$8\$1\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*$/);
      expect(rows[0]!.password_hash).not.toContain(PASSWORD);
    });

    it('logs in, ignores the Django sync rule, and answers the same for a wrong password and an unknown user', async () => {
      const res = await login(app, 'frontdesk', PASSWORD);
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ token_type: 'Bearer', expires_in: 600, username: 'frontdesk' });
      const { token } = res.json() as { token: string };
      expect((await get(app, `Bearer ${token}`)).json()).toEqual({ account: { username: 'frontdesk', source: 'epetsync' } });
      const wrong = errorOf(await login(app, 'frontdesk', 'nope-nope-nope'));
      const unknown = errorOf(await login(app, 'ghost', 'nope-nope-nope'));
      expect({ ...wrong, request_id: '' }).toEqual({ ...unknown, request_id: '' });
      expect(wrong.code).toBe('INVALID_CREDENTIALS');
    });

    it('expires tokens by the clock', async () => {
      let clock = Date.now();
      const timed = await buildApp(db, log, { tokenTtlSeconds: 60, now: () => new Date(clock) });
      try {
        const token = await tokenFor(timed, 'frontdesk', PASSWORD);
        expect((await get(timed, `Bearer ${token}`)).statusCode).toBe(200);
        clock += 61_000;
        expect(errorOf(await get(timed, `Bearer ${token}`)).code).toBe('TOKEN_EXPIRED');
      } finally {
        await timed.close();
      }
    });

    it('ends old tokens when the password changes, and all tokens when the account is removed', async () => {
      const before = await tokenFor(app, 'frontdesk', PASSWORD);
      expect(await createAccount(db, 'frontdesk', 'new-Pa55word')).toBe('updated');
      expect(errorOf(await get(app, `Bearer ${before}`)).code).toBe('TOKEN_INVALID');
      expect((await login(app, 'frontdesk', PASSWORD)).statusCode).toBe(401);
      const after = await tokenFor(app, 'frontdesk', 'new-Pa55word');
      await db.query("UPDATE epetsync.users SET is_active = false WHERE username = 'frontdesk'");
      const inactive = await get(app, `Bearer ${after}`);
      expect(inactive.statusCode).toBe(403);
      expect(errorOf(inactive).details).toEqual({ rule: 'active', reason: 'inactive' });
      await db.query("UPDATE epetsync.users SET is_active = true WHERE username = 'frontdesk'");
      expect((await listAccounts(db)).map((a) => [a.username, a.active, a.active_tokens])).toEqual([['frontdesk', true, 1]]);
      expect(await removeAccount(db, 'frontdesk')).toEqual({ removed: true, tokensRevoked: 1 });
      expect(errorOf(await get(app, `Bearer ${after}`)).code).toBe('TOKEN_INVALID');
      expect(await removeAccount(db, 'frontdesk')).toEqual({ removed: false, tokensRevoked: 0 });
      expect(await listAccounts(db)).toEqual([]);
    });

    it('refuses usernames Django would refuse', async () => {
      await expect(createAccount(db, 'has space', 'whatever-pass')).rejects.toMatchObject({ code: 'EPS_USAGE' });
      await expect(createAccount(db, '', 'whatever-pass')).rejects.toMatchObject({ code: 'EPS_USAGE' });
    });

    it('never writes a password or a token to the log', () => {
      const text = log.text();
      expect(text).toContain('token issued');
      expect(text).not.toContain(PASSWORD);
      expect(text).not.toContain('new-Pa55word');
      expect(text).not.toMatch(/eps_[A-Za-z0-9_-]{20}/);
    });
  });
});
