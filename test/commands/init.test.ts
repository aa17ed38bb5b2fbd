/**
 * `epetsync init` as a user runs it: the built binary writes config.json non-interactively for a
 * real SQLite file and a running embedded sync server, checks it, and `diagnose` then passes with
 * the written file.
 */
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAccount } from '../../src/server/auth/index.js';
import { startSyncServer, type SyncServer } from '../../src/server/index.js';
import { DJANGO_POSTGRES_SCHEMA, generateClinicDatabase } from '../../src/sync/generate.js';
import { tempDir } from '../db/fixtures.js';
import { runCli } from '../helpers/cli.js';

const PASSWORD = 'Init-front-desk-7319';
/** The user's own EPETSYNC_* settings must not leak into the runs. */
const CLEAN = { EPETSYNC_CONFIG: '', EPETSYNC_URL: '', EPETSYNC_USERNAME: '', EPETSYNC_TOKEN: '', EPETSYNC_DB: '' };

let server: SyncServer;

beforeAll(async () => {
  server = await startSyncServer({ memory: true, port: 0, host: '127.0.0.1', schemaRefreshSeconds: 0 });
  for (const sql of DJANGO_POSTGRES_SCHEMA) await server.db.query(sql);
  await server.refreshSchema();
  await createAccount(server.db, 'frontdesk', PASSWORD);
}, 60_000);
afterAll(async () => {
  await server?.close();
});

function clinic(): { dir: string; db: string } {
  const dir = tempDir();
  const db = join(dir, 'db.sqlite3');
  generateClinicDatabase(db, { scale: 3, seed: 7 });
  return { dir, db };
}

describe('init', () => {
  it('writes config.json without the password, checks it, and diagnose passes with the written file', async () => {
    const { dir, db } = clinic();
    const env = { ...CLEAN, EPETSYNC_PASSWORD: PASSWORD };
    const init = await runCli(['init', '--db', db, '--url', server.url, '--username', 'frontdesk', '--dir', dir], { env });
    expect(init.stderr).toBe('');
    expect(init.code).toBe(0);
    const configPath = join(dir, 'config.json');
    expect(init.stdout).toContain(`Wrote ${configPath}`);
    expect(init.stdout).toContain('Config works:');
    expect(init.stdout).toContain('auth.login');
    expect(init.stdout + init.stderr).not.toContain(PASSWORD);
    const written = readFileSync(configPath, 'utf8');
    expect(written).not.toContain(PASSWORD);
    expect(JSON.parse(written)).toEqual({
      database: { path: 'db.sqlite3' },
      remote_database: { enabled: true, url: server.url, username: 'frontdesk' },
    });
    if (process.platform !== 'win32') expect(statSync(configPath).mode & 0o777).toBe(0o600);

    const diagnose = await runCli(['--config', configPath, '--json', 'diagnose', '--group', 'config,local,network,api,auth'], { env, cwd: dir });
    expect(diagnose.code).toBe(0);
    const doc = JSON.parse(diagnose.stdout) as { ok: boolean; result: { checks: Array<{ id: string; status: string }>; summary: { fail: number } } };
    expect(doc.ok).toBe(true);
    expect(doc.result.summary.fail).toBe(0);
    expect(doc.result.checks.find((c) => c.id === 'auth.login')?.status).toBe('ok');
  }, 60_000);

  it('reports --json with the checks, and without a password says how to give one and exits 1', async () => {
    const { dir, db } = clinic();
    const run = await runCli(['--json', 'init', '--db', db, '--url', server.url, '--username', 'frontdesk', '--dir', dir], { env: { ...CLEAN, EPETSYNC_PASSWORD: '' } });
    expect(run.code).toBe(1);
    const doc = JSON.parse(run.stdout) as { ok: boolean; result: { passwordSource: string; passwordStored: boolean; checks: Array<{ id: string; status: string }>; nextSteps: string[] } };
    expect(doc.ok).toBe(false);
    expect(doc.result.passwordSource).toBe('none');
    expect(doc.result.passwordStored).toBe(false);
    expect(doc.result.checks.find((c) => c.id === 'config.credentials')?.status).toBe('fail');
    expect(doc.result.nextSteps[0]).toMatch(/^export EPETSYNC_PASSWORD=/);
  }, 60_000);

  it('names the missing flag when not on a terminal, refuses to overwrite without --force, keeps a .bak with it', async () => {
    const { dir, db } = clinic();
    const missing = await runCli(['init', '--db', db, '--username', 'frontdesk', '--dir', dir], { env: CLEAN });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe('Error: missing --url\nTry: Pass --db <path> --url <url> --username <name> (run "epetsync init --help" for an example).\n');
    expect(existsSync(join(dir, 'config.json'))).toBe(false);

    const desktop = { database: { path: 'old.sqlite3', real_time_sync: true }, app: { sync_interval: 300 }, ui: { theme: 'light' } };
    writeFileSync(join(dir, 'config.json'), JSON.stringify(desktop));
    const args = ['init', '--db', db, '--url', server.url, '--username', 'frontdesk', '--dir', dir];
    const refused = await runCli(args, { env: { ...CLEAN, EPETSYNC_PASSWORD: PASSWORD } });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('already exists');

    const forced = await runCli([...args, '--force', '--store-password'], { env: { ...CLEAN, EPETSYNC_PASSWORD: PASSWORD } });
    expect(forced.code).toBe(0);
    expect(forced.stderr).toContain('Warning: the password is stored in plain text');
    expect(forced.stdout + forced.stderr).not.toContain(PASSWORD);
    expect(JSON.parse(readFileSync(join(dir, 'config.json.bak'), 'utf8'))).toEqual(desktop);
    expect(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))).toEqual({
      database: { path: 'db.sqlite3', real_time_sync: true },
      app: { sync_interval: 300 },
      ui: { theme: 'light' },
      remote_database: { enabled: true, url: server.url, username: 'frontdesk', password: PASSWORD },
    });
  }, 60_000);
});
