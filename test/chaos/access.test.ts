import { createHash, pbkdf2Sync, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { createTestDatabase, pgQuery, type TestDatabase } from '../helpers/pg.js';
import { startServeProcess, type ServeProcess } from '../helpers/server.js';
import { FIXTURE_SQL } from '../server/fixture.js';
import { CHAOS_LONG, CHAOS_SEED, chaosWorkDir, prng, recordFigures, registerSecret, scaled, tally, type HostileTally, saveServeOutput } from './kit.js';

/**
 * Part 7 of the reliability suite (docs/reliability.md): who gets in. A real `epetsync serve`
 * over a PostgreSQL database holding Django's `auth_user` is asked, through its real HTTP port,
 * with no token, an expired one, tampered and made-up ones, tokens of users deactivated or
 * deleted after login, users without the sync permission, and bursts of wrong passwords from
 * several loopback addresses (rate limited: 429 with Retry-After, the right password refused
 * too). Tokens must be stored only hashed, and no password or token may appear in any log line,
 * captured output or answer body of the server or of the real client (`epetsync diagnose`).
 */

const SEED = CHAOS_SEED + 700;
// Low on purpose: real Django format, cheaper than production (the limits, not the cost, are under test).
const ITERATIONS = 20_000;
const PROTECTED: Array<{ method: 'GET' | 'POST' | 'DELETE'; path: string; type?: string; body?: string }> = [
  { method: 'GET', path: '/api/database/sync/' },
  { method: 'GET', path: '/api/database/download/?since=c1.0.0' },
  { method: 'GET', path: '/api/database/download/?tables=clinic_owner' },
  { method: 'POST', path: '/api/database/upload/', type: 'application/json', body: '{"batch_id":"access-1","changes":[{"table":"clinic_visit","op":"delete","pk":{"id":1}}]}' },
  { method: 'GET', path: '/api/database/bulk/?table=clinic_visit&load_id=access' },
  { method: 'POST', path: '/api/database/bulk/?table=clinic_visit&load_id=access', type: 'application/x-ndjson', body: '{"columns":["id","note"]}\n[700001,"x"]\n' },
  { method: 'POST', path: '/api/database/migrate/counts/', type: 'application/json', body: '{}' },
  { method: 'POST', path: '/api/database/ids/', type: 'application/json', body: '{"table":"clinic_pet","count":1}' },
  { method: 'DELETE', path: '/api/auth/token/' },
];
/** The data routes: logging out (DELETE) is left out, since it accepts any token still on record (expired, or of a deleted account). */
const DATA_ROUTES = PROTECTED.filter((r) => r.method !== 'DELETE');

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: { token?: string; error?: { code: string; message: string; details?: Record<string, unknown> } } | undefined;
}

function djangoHash(password: string): string {
  const salt = randomBytes(12).toString('hex');
  return `pbkdf2_sha256$${ITERATIONS}$${salt}$${pbkdf2Sync(password, salt, ITERATIONS, 32, 'sha256').toString('base64')}`;
}

/** Returns a password nobody would guess, registered as a secret of the run. */
function secretPassword(label: string): string {
  const p = `${label}-${randomBytes(15).toString('base64url')}`;
  registerSecret(p);
  return p;
}

describe('access to epetsync serve (chaos part 7)', () => {
  const work = chaosWorkDir('access');
  const logFile = join(work, 'serve.log');
  const random = prng(SEED);
  const started = Date.now();
  const tallies: Record<string, HostileTally> = {};
  const PW = {
    drsmith: secretPassword('drsmith'),
    nurse: secretPassword('nurse'),
    owner: secretPassword('owner'),
    leaver: secretPassword('leaver'),
    gone: secretPassword('gone'),
    demoted: secretPassword('demoted'),
    sleeper: secretPassword('sleeper'),
    inactive: secretPassword('inactive'),
    client: secretPassword('client'),
  };
  /** Every token the server issued during the part. */
  const issued: string[] = [];
  const agents = new Map<string, Agent>();
  let pgdb: TestDatabase;
  let server: ServeProcess;
  let bodiesChecked = 0;

  beforeAll(async () => {
    pgdb = await createTestDatabase('eps_chaos_access');
    for (const sql of FIXTURE_SQL) await pgQuery(pgdb.url, sql);
    await pgQuery(
      pgdb.url,
      `CREATE TABLE public.auth_user (
        id serial PRIMARY KEY, password varchar(128) NOT NULL, last_login timestamptz NULL,
        is_superuser boolean NOT NULL, username varchar(150) NOT NULL UNIQUE,
        first_name varchar(150) NOT NULL, last_name varchar(150) NOT NULL, email varchar(254) NOT NULL,
        is_staff boolean NOT NULL, is_active boolean NOT NULL, date_joined timestamptz NOT NULL)`,
    );
    const users: Array<[keyof typeof PW, { staff?: boolean; active?: boolean }]> = [
      ['drsmith', { staff: true }], ['nurse', { staff: true }], ['owner', {}], ['leaver', { staff: true }], ['gone', { staff: true }],
      ['demoted', { staff: true }], ['sleeper', { staff: true }], ['inactive', { staff: true, active: false }], ['client', { staff: true }],
    ];
    for (const [username, flags] of users) {
      await pgQuery(
        pgdb.url,
        `INSERT INTO public.auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined)
         VALUES ($1, false, $2, '', '', '', $3, $4, now())`,
        [djangoHash(PW[username]), username, flags.staff ?? false, flags.active ?? true],
      );
    }
    server = await startServeProcess({ databaseUrl: pgdb.url, args: ['--log-file', logFile, '--log-level', 'trace'], cwd: work });
  }, 120_000);

  afterAll(async () => {
    for (const a of agents.values()) await a.close().catch(() => {});
    if (server) {
      await server.stop();
      saveServeOutput(server, work);
    }
    await pgdb?.drop();
  });

  /** Sends a request from a given loopback address (each one counts as its own client IP). */
  async function call(method: string, path: string, options: { token?: string; authorization?: string; type?: string; body?: string; from?: string } = {}): Promise<Answer> {
    const from = options.from ?? '127.0.0.1';
    let agent = agents.get(from);
    if (!agent) {
      agent = new Agent({ localAddress: from, headersTimeout: 60_000, bodyTimeout: 60_000 });
      agents.set(from, agent);
    }
    const headers: Record<string, string> = { 'x-epetsync-node': 'access-node' };
    if (options.authorization !== undefined) headers.authorization = options.authorization;
    else if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
    if (options.type) headers['content-type'] = options.type;
    const res = await request(new URL(path, server.url), { method: method as 'GET', headers, body: options.body, dispatcher: agent });
    const text = await res.body.text();
    let json: Answer['json'];
    try {
      json = text ? (JSON.parse(text) as Answer['json']) : undefined;
    } catch {
      json = undefined;
    }
    if (json?.token) {
      issued.push(json.token);
      registerSecret(json.token);
    }
    // No answer may carry a password, or a token other than the one a login just issued.
    const own = json?.token;
    for (const s of [...Object.values(PW), ...issued]) {
      if (s !== own) expect(text.includes(s), `${method} ${path} answered with a secret in its body`).toBe(false);
    }
    bodiesChecked += 1;
    return { status: res.statusCode, headers: res.headers, text, json };
  }

  async function login(username: string, password: string, from?: string): Promise<Answer> {
    return call('POST', '/api/auth/token/', { type: 'application/json', body: JSON.stringify({ username, password }), ...(from ? { from } : {}) });
  }

  async function tokenOf(username: keyof typeof PW): Promise<string> {
    const res = await login(username, PW[username]);
    expect(res.status, res.text).toBe(200);
    return res.json!.token!;
  }

  /** Asserts a refusal with its status and code, and tallies it under the access case. */
  function refused(kind: string, res: Answer, status: number, code: string, where: string): void {
    const msg = `${kind}: ${where} (seed ${SEED}) → ${res.status} ${res.text.slice(0, 300)}`;
    expect(res.status, msg).toBe(status);
    expect(res.json?.error?.code, msg).toBe(code);
    // A refused token says how to authenticate (RFC 6750); a failed login is answered by the login route itself.
    if (status === 401 && code !== 'INVALID_CREDENTIALS') expect(String(res.headers['www-authenticate']), msg).toMatch(/^Bearer realm="epetsync"/);
    tallies[kind] ??= { tried: 0, answers: {} };
    tally(tallies[kind], `${res.status} ${code}`);
  }

  function sha256hex(text: string): string {
    return createHash('sha256').update(text, 'utf8').digest('hex');
  }

  async function expireInDatabase(token: string): Promise<void> {
    const rows = await pgQuery(pgdb.url, `UPDATE epetsync.tokens SET expires_at = now() - interval '1 second' WHERE token_hash = decode($1, 'hex') RETURNING 1`, [sha256hex(token)]);
    expect(rows).toHaveLength(1);
  }

  it('lets a staff user with a fresh token in, and keeps discovery and health open without one', async () => {
    const token = await tokenOf('drsmith');
    expect(token).toMatch(/^eps_[A-Za-z0-9_-]{43}$/);
    const info = await call('GET', '/api/database/sync/', { token });
    expect(info.status, info.text).toBe(200);
    expect(await call('GET', '/api/database/sync/', { authorization: `Token ${token}` })).toMatchObject({ status: 200 });
    for (const path of ['/.well-known/epetsync', '/healthz', '/readyz']) {
      const res = await call('GET', path);
      expect(res.status, path).toBe(200);
      expect(res.text, `${path} says nothing about the tables`).not.toContain('clinic_');
    }
  });

  it('answers every protected route without a token, or with another scheme, 401 AUTH_REQUIRED', async () => {
    const schemes = ['', 'Basic ZHJzbWl0aDp4', 'Bearer', 'Digest username="drsmith"', 'eps_abc'];
    for (const route of PROTECTED) {
      for (const authorization of scaled(schemes.slice(0, 2), schemes)) {
        const res = await call(route.method, route.path, { ...(authorization ? { authorization } : {}), type: route.type, body: route.body });
        refused('no token', res, 401, 'AUTH_REQUIRED', `${route.method} ${route.path} with ${authorization ? JSON.stringify(authorization) : 'no Authorization header'}`);
      }
    }
  });

  it('answers an expired token 401 TOKEN_EXPIRED on every route, and a new login works', async () => {
    for (let round = 0; round < scaled(1, 5); round += 1) {
      const token = await tokenOf('nurse');
      expect((await call('GET', '/api/database/sync/', { token })).status).toBe(200);
      await expireInDatabase(token);
      for (const route of DATA_ROUTES) {
        const res = await call(route.method, route.path, { token, type: route.type, body: route.body });
        refused('expired token', res, 401, 'TOKEN_EXPIRED', `${route.method} ${route.path} (round ${round})`);
      }
    }
    const fresh = await tokenOf('nurse');
    expect((await call('GET', '/api/database/sync/', { token: fresh })).status).toBe(200);
  });

  it('answers tampered and made-up tokens 401, and the real token still works afterwards', async () => {
    const token = await tokenOf('drsmith');
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const variants: Array<[string, string]> = [];
    for (let i = 0; i < scaled(12, 300); i += 1) {
      const r = random();
      const at = 4 + Math.floor(random() * (token.length - 4));
      const ch = alphabet[Math.floor(random() * alphabet.length)]!;
      if (r < 0.5) {
        if (ch !== token[at]) variants.push([`${token.slice(0, at)}${ch}${token.slice(at + 1)}`, `character ${at} changed`]);
      } else if (r < 0.65) variants.push([`eps_${randomBytes(32).toString('base64url')}`, 'a made-up token of the right shape']);
      else if (r < 0.75) variants.push([token.slice(0, at), `cut to ${at} characters`]);
      else if (r < 0.85) variants.push([`${token}${ch}`, 'one character added']);
      else if (r < 0.9) variants.push([token.toUpperCase() === token ? token.toLowerCase() : token.toUpperCase(), 'case changed']);
      else if (r < 0.95) variants.push([sha256hex(token), 'its stored hash']);
      else variants.push([`eps_${Buffer.from(token.slice(4), 'base64url').toString('base64')}`, 'base64 instead of base64url']);
    }
    for (const [variant, how] of variants) {
      const route = PROTECTED[Math.floor(random() * PROTECTED.length)]!;
      const res = await call(route.method, route.path, { token: variant, type: route.type, body: route.body });
      refused('tampered token', res, 401, 'TOKEN_INVALID', `${how}, ${route.method} ${route.path}`);
    }
    expect((await call('GET', '/api/database/sync/', { token })).status, 'the real token after the tampered ones').toBe(200);
  });

  it('takes access away from a user deactivated or deleted after login, and from a revoked token', async () => {
    const leaver = await tokenOf('leaver');
    expect((await call('GET', '/api/database/sync/', { token: leaver })).status).toBe(200);
    await pgQuery(pgdb.url, `UPDATE auth_user SET is_active = false WHERE username = 'leaver'`);
    for (const route of DATA_ROUTES) {
      const res = await call(route.method, route.path, { token: leaver, type: route.type, body: route.body });
      refused('revoked or deleted user', res, 403, 'FORBIDDEN', `deactivated user, ${route.method} ${route.path}`);
      expect(res.json?.error?.details).toMatchObject({ reason: 'inactive' });
    }
    refused('revoked or deleted user', await login('leaver', PW.leaver), 403, 'FORBIDDEN', 'deactivated user logging in with the right password');

    const gone = await tokenOf('gone');
    await pgQuery(pgdb.url, `DELETE FROM auth_user WHERE username = 'gone'`);
    for (const route of DATA_ROUTES) {
      const res = await call(route.method, route.path, { token: gone, type: route.type, body: route.body });
      refused('revoked or deleted user', res, 401, 'TOKEN_INVALID', `deleted user, ${route.method} ${route.path}`);
    }
    refused('revoked or deleted user', await login('gone', PW.gone), 401, 'INVALID_CREDENTIALS', 'deleted user logging in');

    const sleeper = await tokenOf('sleeper');
    const out = await call('DELETE', '/api/auth/token/', { token: sleeper });
    expect(out.status, out.text).toBe(204);
    for (const route of PROTECTED) {
      const res = await call(route.method, route.path, { token: sleeper, type: route.type, body: route.body });
      refused('revoked or deleted user', res, 401, 'TOKEN_INVALID', `token revoked with DELETE, ${route.method} ${route.path}`);
    }
    // The documented way to revoke a Django user's tokens without deactivating the user.
    const sleeper2 = await tokenOf('sleeper');
    await pgQuery(pgdb.url, `UPDATE epetsync.tokens SET revoked_at = now() WHERE source = 'django' AND username = 'sleeper' AND revoked_at IS NULL`);
    refused('revoked or deleted user', await call('GET', '/api/database/sync/', { token: sleeper2 }), 401, 'TOKEN_INVALID', 'token revoked in the database');
  });

  it('refuses users without the sync permission: at login, and at once when staff status is taken away', async () => {
    const owner = await login('owner', PW.owner);
    refused('no sync permission', owner, 403, 'FORBIDDEN', 'a pet owner (not staff) logging in with the right password');
    expect(owner.json?.error?.details).toMatchObject({ rule: 'staff', reason: 'not_permitted' });
    expect(owner.json?.token).toBeUndefined();
    refused('no sync permission', await login('inactive', PW.inactive), 403, 'FORBIDDEN', 'an inactive staff user logging in');

    const demoted = await tokenOf('demoted');
    expect((await call('GET', '/api/database/sync/', { token: demoted })).status).toBe(200);
    await pgQuery(pgdb.url, `UPDATE auth_user SET is_staff = false WHERE username = 'demoted'`);
    for (const route of DATA_ROUTES) {
      const res = await call(route.method, route.path, { token: demoted, type: route.type, body: route.body });
      refused('no sync permission', res, 403, 'FORBIDDEN', `staff status removed, ${route.method} ${route.path}`);
      expect(res.json?.error?.details).toMatchObject({ rule: 'staff', reason: 'not_permitted' });
    }
    // Nothing any refused request carried was written.
    const written = await pgQuery<{ n: string }>(pgdb.url, `SELECT (SELECT count(*) FROM epetsync.batches) + (SELECT count(*) FROM epetsync.bulk_loads) + (SELECT count(*) FROM clinic_visit WHERE id = 700001) AS n`);
    expect(Number(written[0]!.n)).toBe(0);
    expect((await pgQuery<{ n: string }>(pgdb.url, 'SELECT count(*) AS n FROM clinic_visit'))[0]!.n).toBe('2500');
  });

  it('rate-limits brute-force logins per username and per client address with 429 and Retry-After, refusing the right password too', async () => {
    const nurseToken = await tokenOf('nurse');
    // Per username: 10 failures in 5 minutes, from one address.
    for (let i = 0; i < 10; i += 1) refused('brute force', await login('drsmith', `guess-${i}-${randomBytes(4).toString('hex')}`), 401, 'INVALID_CREDENTIALS', `wrong password ${i + 1} for drsmith`);
    for (let i = 0; i < scaled(3, 20); i += 1) {
      const res = await login('drsmith', `guess-x-${i}`);
      refused('brute force', res, 429, 'RATE_LIMITED', `wrong password past the limit for drsmith`);
      const wait = Number(res.headers['retry-after']);
      expect(Number.isInteger(wait) && wait >= 1 && wait <= 300, `Retry-After ${String(res.headers['retry-after'])}`).toBe(true);
    }
    const right = await login('drsmith', PW.drsmith);
    refused('brute force', right, 429, 'RATE_LIMITED', 'the right password for drsmith while limited');
    expect(right.json?.token).toBeUndefined();
    expect(Number(right.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // The limit is on logins, for that name: tokens already issued and other users go on working.
    expect((await call('GET', '/api/database/sync/', { token: nurseToken })).status).toBe(200);
    expect((await login('nurse', PW.nurse)).status).toBe(200);

    // Per client address: 30 failures over many usernames from one address lock that address out, only it.
    const rounds = scaled(1, 4);
    for (let round = 0; round < rounds; round += 1) {
      const from = `127.0.0.${10 + round}`;
      for (let i = 0; i < 30; i += 1) {
        refused('brute force', await login(`nobody-${round}-${i}`, `pw-${i}`, from), 401, 'INVALID_CREDENTIALS', `failure ${i + 1} from ${from}`);
      }
      const blocked = await login('nurse', PW.nurse, from);
      refused('brute force', blocked, 429, 'RATE_LIMITED', `the right password of another user from the locked-out address ${from}`);
      expect(Number(blocked.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    }
    expect((await login('nurse', PW.nurse, '127.0.0.9')).status, 'another address is not limited').toBe(200);

    // Parallel guesses are counted before they are checked: a burst cannot pass the per-username limit.
    for (let round = 0; round < scaled(1, 6); round += 1) {
      const name = `burst-${round}-${randomBytes(3).toString('hex')}`;
      const from = `127.0.1.${round + 1}`;
      const answers = await Promise.all(Array.from({ length: 25 }, (_, i) => login(name, `pw-${i}`, from)));
      const passed = answers.filter((a) => a.status === 401).length;
      for (const a of answers) refused('brute force', a, a.status, a.status === 401 ? 'INVALID_CREDENTIALS' : 'RATE_LIMITED', `burst of 25 parallel guesses for ${name}`);
      expect(passed, `burst ${round}: ${passed} guesses were checked (seed ${SEED})`).toBeLessThanOrEqual(10);
      expect(answers.filter((a) => a.status === 429).length).toBeGreaterThanOrEqual(15);
    }
  });

  it('stores tokens only as SHA-256 hashes, and no password or token anywhere in the database', async () => {
    expect(issued.length).toBeGreaterThanOrEqual(8);
    const stored = await pgQuery<{ hash: string; row: string }>(pgdb.url, `SELECT encode(token_hash, 'hex') AS hash, t::text AS row FROM epetsync.tokens t`);
    const hashes = new Set(stored.map((r) => r.hash));
    for (const token of issued) expect(hashes.has(sha256hex(token)), 'every issued token is stored by its SHA-256').toBe(true);
    const tables = await pgQuery<{ schema: string; name: string }>(pgdb.url, `SELECT n.nspname AS schema, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'epetsync') AND c.relkind = 'r'`);
    let rows = 0;
    for (const t of tables) {
      const dump = await pgQuery<{ row: string }>(pgdb.url, `SELECT t::text AS row FROM "${t.schema}"."${t.name}" t`);
      rows += dump.length;
      const text = dump.map((r) => r.row).join('\n');
      for (const secret of [...issued, ...Object.values(PW)]) expect(text.includes(secret), `${t.schema}.${t.name} holds a password or a token in plain text`).toBe(false);
    }
    expect(rows).toBeGreaterThan(2500);
    tallies['tokens at rest'] = { tried: issued.length, answers: { 'stored as SHA-256 only': stored.length } };
  });

  it('keeps every password and token out of the server and client logs, output and answers', async () => {
    // The real client: diagnose logs in with a password, or presents a token, and logs at trace level.
    const db = new Database(join(work, 'db.sqlite3'));
    db.exec('CREATE TABLE clinic_owner (id integer PRIMARY KEY, name text)');
    db.close();
    writeFileSync(join(work, 'config.json'), JSON.stringify({ database: { path: 'db.sqlite3' }, remote_database: { enabled: true, url: server.url, username: 'client' } }, null, 2));
    const expired = await tokenOf('client');
    await expireInDatabase(expired);
    const tampered = `${expired.slice(0, 10)}${expired[10] === 'A' ? 'B' : 'A'}${expired.slice(11)}`;
    const runs: Array<{ name: string; env: NodeJS.ProcessEnv; expect: string }> = [
      { name: 'right-password', env: { EPETSYNC_PASSWORD: PW.client }, expect: 'ok' },
      { name: 'wrong-password', env: { EPETSYNC_PASSWORD: PW.drsmith }, expect: 'fail' },
      { name: 'expired-token', env: { EPETSYNC_TOKEN: expired }, expect: 'fail' },
      { name: 'tampered-token', env: { EPETSYNC_TOKEN: tampered }, expect: 'fail' },
    ];
    for (const run of runs) {
      const res = await runCli(['--json', '--log-file', join(work, `client-${run.name}.log`), '--log-level', 'trace', '--config', join(work, 'config.json'), 'diagnose', '--group', 'config,network,api,auth'], { cwd: work, env: { EPETSYNC_PASSWORD: '', EPETSYNC_TOKEN: '', ...run.env } });
      writeFileSync(join(work, `client-${run.name}.out`), res.stdout);
      writeFileSync(join(work, `client-${run.name}.err`), res.stderr);
      const report = JSON.parse(res.stdout) as { result?: { checks?: Array<{ id: string; status: string }> } };
      const loginCheck = report.result?.checks?.find((c) => c.id === 'auth.login' || c.id === 'auth.permission');
      const statuses = (report.result?.checks ?? []).filter((c) => c.id.startsWith('auth.')).map((c) => c.status);
      expect(loginCheck, `${run.name}: ${res.stdout.slice(0, 600)}`).toBeDefined();
      if (run.expect === 'ok') expect(statuses.every((s) => s === 'ok'), `${run.name}: ${res.stdout.slice(0, 800)}`).toBe(true);
      else expect(statuses.includes('fail'), `${run.name}: ${res.stdout.slice(0, 800)}`).toBe(true);
    }
    registerSecret(tampered);
    // Flush the server's output into the work folder before grepping it.
    saveServeOutput(server, work);
    const files = readdirSync(work).filter((f) => /\.(log|out|err|ndjson)$/.test(f));
    expect(files).toEqual(expect.arrayContaining(['serve.log', 'serve.out', 'serve.err', 'client-right-password.log', 'client-wrong-password.err']));
    const secrets = [...Object.values(PW), ...issued, tampered];
    let lines = 0;
    for (const file of files) {
      const text = readFileSync(join(work, file), 'utf8');
      lines += text.split('\n').length;
      for (const s of secrets) expect(text.includes(s), `${file} holds a password or token (${s.length} characters; seed ${SEED})`).toBe(false);
    }
    // The grep means something only if the log recorded the logins and refusals it is grepped for.
    const serverLog = readFileSync(logFile, 'utf8');
    expect(serverLog).toContain('token issued');
    expect(serverLog).toContain('login failed');
    expect(serverLog).toContain('login refused: too many failed attempts');
    expect(lines).toBeGreaterThan(200);
    recordFigures({
      part: 'access',
      title: `no, expired, tampered and revoked tokens, users without permission and brute-force logins against epetsync serve with Django accounts (${CHAOS_LONG ? 'long' : 'short'})`,
      seconds: Math.round((Date.now() - started) / 1000),
      hostile: tallies,
      checks: {
        'tokens issued (all stored only as SHA-256)': issued.length,
        'answer bodies checked for secrets': bodiesChecked,
        'log and output files grepped': files.length,
        'lines grepped': lines,
        'secrets grepped for': secrets.length,
        'secrets found': 0,
      },
    });
  });
});
