import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, runCli, type CliRun } from '../helpers/cli.js';
import { createTestDatabase, pgQuery, type TestDatabase } from '../helpers/pg.js';

const PASSWORD = 'front-desk-Pa55';

/** Runs the built binary inside a pseudo-terminal (util-linux script), typing each answer after its prompt. */
function onTerminal(args: string, cwd: string, answers: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn('script', ['-qec', `"${process.execPath}" "${BIN}" ${args}`, '/dev/null'], {
      cwd,
      env: { ...process.env, NO_COLOR: '1', CI: 'true', DATABASE_URL: '', EPETSYNC_NEW_PASSWORD: '' },
    });
    let output = '';
    let prompts = 0;
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.on('data', (d: Buffer) => {
      output += d.toString();
      // Answer only once the prompt is shown: by then the terminal is in raw mode and echoes nothing.
      const seen = (output.match(/Password for|Repeat the password/g) ?? []).length;
      while (prompts < seen && prompts < answers.length) child.stdin.write(`${answers[prompts++]}\r`);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, output });
    });
  });
}

function lastLines(text: string, n: number): string[] {
  return text.trimEnd().split('\n').slice(-n);
}

describe('serve user (built binary)', () => {
  describe('on the embedded database', () => {
    let dir: string;
    let dataDir: string;
    // Built fresh per call: runCli merges over process.env, so unset keys must be blanked.
    const run = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliRun> =>
      runCli([...args, '--data-dir', dataDir], { cwd: dir, env: { DATABASE_URL: '', EPETSYNC_NEW_PASSWORD: '', ...env } });

    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'eps-serve-user-'));
      dataDir = join(dir, 'pg');
    });

    afterAll(() => {
      rmSync(dir, { recursive: true, force: true });
    });

    // Until the CLI hands --data-dir to 'serve user' (see the next test), the default folder is used.
    const usedDir = (): string => (existsSync(join(dataDir, 'PG_VERSION')) ? dataDir : join(dir, '.epetsync', 'pgdata'));

    it('adds an account with the password from EPETSYNC_NEW_PASSWORD', async () => {
      const added = await run(['serve', 'user', 'add', 'frontdesk'], { EPETSYNC_NEW_PASSWORD: PASSWORD });
      expect(added.stderr).toBe('');
      expect(added).toEqual({ code: 0, stdout: `Added account "frontdesk".\nDatabase: ${usedDir()}\n`, stderr: '' });
      const again = await run(['serve', 'user', 'add', 'frontdesk'], { EPETSYNC_NEW_PASSWORD: `${PASSWORD}2` });
      expect(again).toEqual({ code: 0, stdout: `Updated the password of "frontdesk" and revoked its tokens.\nDatabase: ${usedDir()}\n`, stderr: '' });
      const second = await run(['--json', 'serve', 'user', 'add', 'vet.on-call'], { EPETSYNC_NEW_PASSWORD: PASSWORD });
      expect(second.code).toBe(0);
      expect(JSON.parse(second.stdout)).toEqual({
        ok: true,
        command: 'epetsync serve user add',
        result: { username: 'vet.on-call', action: 'created', engine: 'pglite', database: usedDir() },
      });
      expect(second.stdout + second.stderr).not.toContain(PASSWORD);
    });

    it('keeps the embedded database in the --data-dir folder', () => {
      expect(existsSync(join(dataDir, 'PG_VERSION')), `no database in ${dataDir}`).toBe(true);
    });

    it('lists the accounts as JSON and as a table', async () => {
      const listed = await run(['--json', 'serve', 'user', 'list']);
      expect(listed.code).toBe(0);
      const doc = JSON.parse(listed.stdout) as { ok: boolean; command: string; result: { source: string; database: string; accounts: Array<Record<string, unknown>> } };
      expect(doc.result.database).toBe(usedDir());
      expect(doc.ok).toBe(true);
      expect(doc.command).toBe('epetsync serve user list');
      expect(doc.result.source).toBe('epetsync');
      expect(doc.result.accounts).toEqual([
        { username: 'frontdesk', active: true, created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/), active_tokens: 0 },
        { username: 'vet.on-call', active: true, created_at: expect.any(String), active_tokens: 0 },
      ]);
      const table = await run(['serve', 'user', 'list']);
      expect(table.code).toBe(0);
      expect(table.stderr).toBe(`Database: ${usedDir()}\n`);
      expect(table.stdout.split('\n')[0]).toMatch(/^USERNAME\s+ACTIVE\s+CREATED\s+TOKENS$/);
      expect(table.stdout).toMatch(/^frontdesk\s+yes\s+\S+\s+0$/m);
    });

    it('removes an account, and says so when there is none', async () => {
      const removed = await run(['serve', 'user', 'remove', 'vet.on-call']);
      expect(removed).toEqual({ code: 0, stdout: `Removed account "vet.on-call" (0 tokens revoked).\nDatabase: ${usedDir()}\n`, stderr: '' });
      const missing = await run(['serve', 'user', 'remove', 'vet.on-call']);
      expect(missing.code).toBe(2);
      expect(lastLines(missing.stderr, 2)).toEqual(['Error: There is no epetsync account named "vet.on-call".', 'Try: Run "epetsync serve user list" to see the accounts.']);
      const listed = JSON.parse((await run(['--json', 'serve', 'user', 'list'])).stdout) as { result: { accounts: Array<{ username: string }> } };
      expect(listed.result.accounts.map((a) => a.username)).toEqual(['frontdesk']);
    });

    it('fails with exit 2 when no password is given and stdin is not a terminal', async () => {
      const failed = await run(['serve', 'user', 'add', 'nopass']);
      expect(failed.code).toBe(2);
      expect(failed.stdout).toBe('');
      expect(lastLines(failed.stderr, 2)).toEqual([
        'Error: No password given for the account "nopass".',
        'Try: Set EPETSYNC_NEW_PASSWORD in the environment, or run the command on a terminal to be asked for it.',
      ]);
      const json = await run(['--json', 'serve', 'user', 'add', 'nopass']);
      expect(json.code).toBe(2);
      expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, error: { code: 'EPS_USAGE', hint: expect.stringContaining('EPETSYNC_NEW_PASSWORD') } });
    });

    // Needs util-linux `script` for the pseudo-terminal, as the restore prompt test does; CI runs on Linux.
    it('asks for the password twice on a terminal without echoing it', async () => {
      const typed = 'typed-on-a-tty-9';
      const ok = await onTerminal(`serve user add ttyuser --data-dir ${dataDir}`, dir, [typed, typed]);
      expect(ok.code).toBe(0);
      expect(ok.output).not.toContain(typed);
      expect(ok.output).toMatch(/^Password for "ttyuser": \r?\nRepeat the password: \r?\nAdded account "ttyuser"\./);
      const differ = await onTerminal(`serve user add ttyuser2 --data-dir ${dataDir}`, dir, [typed, `${typed}x`]);
      expect(differ.code).toBe(2);
      expect(differ.output).toContain('Error: The two passwords differ; nothing was changed.');
      // Typed ahead in one burst, with a mistake rubbed out: still hidden, still read as two answers.
      const burst = await onTerminal(`serve user add ttyuser3 --data-dir ${dataDir}`, dir, [`${typed}\rtyped-on-a-tty-8\u007f9`]);
      expect(burst.code).toBe(0);
      expect(burst.output).not.toContain('typed-on');
      const listed = JSON.parse((await run(['--json', 'serve', 'user', 'list'])).stdout) as { result: { accounts: Array<{ username: string }> } };
      expect(listed.result.accounts.map((a) => a.username)).toContain('ttyuser');
      expect(listed.result.accounts.map((a) => a.username)).toContain('ttyuser3');
      expect(listed.result.accounts.map((a) => a.username)).not.toContain('ttyuser2');
    });

    it('does not create a database to list or remove in a folder that has none', async () => {
      const empty = mkdtempSync(join(tmpdir(), 'eps-serve-user-empty-'));
      try {
        for (const args of [['serve', 'user', 'list'], ['serve', 'user', 'remove', 'frontdesk']]) {
          const failed = await runCli([...args, '--data-dir', join(empty, 'typo')], { cwd: empty, env: { DATABASE_URL: '' } });
          expect(failed.code).toBe(2);
          expect(lastLines(failed.stderr, 2)).toEqual([
            expect.stringMatching(/^Error: There is no embedded database in \/.+\.$/),
            'Try: Pass the --data-dir (or --database-url) that epetsync serve uses; "epetsync serve user add" creates the embedded database.',
          ]);
        }
        expect(readdirSync(empty)).toEqual([]);
      } finally {
        rmSync(empty, { recursive: true, force: true });
      }
    });

    it('refuses a short password and a username Django would refuse', async () => {
      const short = await run(['serve', 'user', 'add', 'shorty'], { EPETSYNC_NEW_PASSWORD: 'abc12' });
      expect(short.code).toBe(2);
      expect(lastLines(short.stderr, 2)[0]).toBe('Error: The password is too short (at least 8 characters).');
      const bad = await run(['serve', 'user', 'add', 'dr smith'], { EPETSYNC_NEW_PASSWORD: PASSWORD });
      expect(bad.code).toBe(2);
      expect(lastLines(bad.stderr, 2)[0]).toBe('Error: The username "dr smith" is not valid.');
    });
  });

  describe('on PostgreSQL (DATABASE_URL)', () => {
    let pgdb: TestDatabase;
    let dir: string;

    beforeAll(async () => {
      pgdb = await createTestDatabase('eps_serve_user');
      dir = mkdtempSync(join(tmpdir(), 'eps-serve-user-pg-'));
    });

    afterAll(async () => {
      await pgdb?.drop();
      rmSync(dir, { recursive: true, force: true });
    });

    it("adds an account, then refuses once the web app's Django auth_user table exists", async () => {
      const env = { DATABASE_URL: pgdb.url, EPETSYNC_NEW_PASSWORD: PASSWORD };
      const added = await runCli(['serve', 'user', 'add', 'frontdesk'], { cwd: dir, env });
      const shown = new URL(pgdb.url);
      expect(added).toEqual({ code: 0, stdout: `Added account "frontdesk".\nDatabase: postgres://${shown.host}/${pgdb.name}\n`, stderr: '' });
      const rows = await pgQuery<{ username: string; password_hash: string }>(pgdb.url, 'SELECT username, password_hash FROM epetsync.users');
      expect(rows).toEqual([{ username: 'frontdesk', password_hash: expect.stringMatching(/^scrypt\$32768\$8\$1\$/) }]);
      expect(existsSync(join(dir, '.epetsync'))).toBe(false);

      await pgQuery(pgdb.url, 'CREATE TABLE public.auth_user (id serial PRIMARY KEY, password varchar(128) NOT NULL, last_login timestamptz, is_superuser boolean NOT NULL, username varchar(150) UNIQUE NOT NULL, is_staff boolean NOT NULL, is_active boolean NOT NULL)');
      const refused = await runCli(['serve', 'user', 'add', 'second'], { cwd: dir, env });
      expect(refused.code).toBe(2);
      const [error, hint] = lastLines(refused.stderr, 2);
      expect(error).toBe(`Error: This database has the web app's Django auth_user table, so epetsync serve uses the web app's users; "second" was not added.`);
      expect(hint).toMatch(/^Try: Create or edit the user in the web app/);
      const listed = await runCli(['--json', 'serve', 'user', 'list'], { cwd: dir, env });
      expect(JSON.parse(listed.stdout)).toMatchObject({ ok: true, result: { source: 'django', accounts: [{ username: 'frontdesk' }] } });
    });
  });
});
