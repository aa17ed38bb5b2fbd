/**
 * `epetsync diagnose` as a user runs it: the built binary against the real server over real
 * PostgreSQL and real SQLite files; each broken condition is made for real, diagnosed, repaired
 * with --fix where that is safe, and diagnosed clean again.
 */
import { createServer } from 'node:net';
import { existsSync, readFileSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { corruptPages } from '../db/fixtures.js';
import { sendJson, startFakeServer } from '../helpers/fake-server.js';
import { loginToken } from '../helpers/server.js';
import { PASSWORD, check, makeClinic, problems, startBed, type DiagnoseBed } from '../diagnose/bed.js';

let bed: DiagnoseBed;

beforeAll(async () => {
  bed = await startBed('eps_diag');
}, 60_000);
afterAll(async () => {
  await bed?.close();
});

describe('diagnose', () => {
  it('repairs a fresh clinic (backup folder, triggers, endpoint cache) and then finds everything ok', async () => {
    const clinic = makeClinic(bed.server.url);
    // Without sync: a clinic never synced is the fix command's job (test/commands/fix.test.ts).
    const groups = ['--group', 'config,local,backups,network,api,auth,desktop'];
    const before = await clinic.diagnose(groups);
    expect(before.code).toBe(1);
    expect(check(before.doc, 'backup.folder')).toMatchObject({ status: 'fail', fixable: true });
    expect(check(before.doc, 'backup.folder').found).toContain('does not exist');
    expect(check(before.doc, 'backup.newest').status).toBe('skipped');
    expect(check(before.doc, 'db.capture').status).toBe('warn');
    expect(check(before.doc, 'config.found').found).toContain(clinic.config);
    expect(check(before.doc, 'auth.permission').status).toBe('ok');

    const fixed = await clinic.diagnose(['--fix', ...groups]);
    expect(fixed.code, problems(fixed.doc).join('\n')).toBe(0);
    const byId = new Map(fixed.doc.result.fixes.map((f) => [f.id, f]));
    expect(byId.get('backup.folder')).toMatchObject({ outcome: 'fixed', before: 'fail', after: 'ok' });
    expect(byId.get('backup.folder')!.action).toContain('took a verified backup');
    expect(byId.get('db.capture')).toMatchObject({ outcome: 'fixed', before: 'warn', after: 'ok' });
    expect(byId.get('api.cache')).toMatchObject({ outcome: 'fixed', before: 'warn', after: 'ok' });
    expect(readdirSync(clinic.backupDir).filter((f) => f.endsWith('.sqlite3'))).toHaveLength(1);

    const after = await clinic.diagnose(groups);
    expect(after.code).toBe(0);
    expect(problems(after.doc)).toEqual([]);
    expect(after.doc.result.summary.fail).toBe(0);
    // The human checklist: marks, one line per check, a closing summary.
    const human = await clinic.cli(['diagnose', ...groups]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^ {2}✓ config\.found +/m);
    expect(human.stdout).toMatch(/^all good: \d+ ok, 0 warning\(s\), 0 failed, \d+ skipped$/m);
    expect(human.stdout + human.stderr).not.toContain(PASSWORD);
  });

  it('normalises a malformed server URL in place, keeping the formatting and a .bak', async () => {
    const port = bed.server.port;
    const text = `{\n    "database": { "path": "db.sqlite3", "backup_dir": "backups" },\n    "remote_database": {\n        "enabled": true,\n        "url": " 127.0.0.1:${port}/api/database/sync/ ",\n        "username": "frontdesk",\n        "sync_interval": 30\n    }\n}\n`;
    const clinic = makeClinic('', { text });
    const before = await clinic.diagnose(['--group', 'config,network']);
    expect(before.code).toBe(1);
    expect(check(before.doc, 'config.url')).toMatchObject({ status: 'fail', fixable: true });
    expect(check(before.doc, 'config.url').found).toContain(`should be "http://127.0.0.1:${port}"`);
    expect(check(before.doc, 'net.tcp').status).toBe('skipped');

    const fixed = await clinic.diagnose(['--fix', '--group', 'config,network']);
    expect(fixed.doc.result.fixes.find((f) => f.id === 'config.url')).toMatchObject({ outcome: 'fixed', before: 'fail', after: 'ok' });
    expect(readFileSync(`${clinic.config}.bak`, 'utf8')).toBe(text);
    expect(readFileSync(clinic.config, 'utf8')).toBe(text.replace(` 127.0.0.1:${port}/api/database/sync/ `, `http://127.0.0.1:${port}`));
    const after = await clinic.diagnose(['--group', 'config,network']);
    expect(check(after.doc, 'config.url').status).toBe('ok');
    expect(check(after.doc, 'net.tcp').status).toBe('ok');
    expect(after.code).toBe(0);
  });

  it('names a server that is not running: TCP connect refused, the API checks skipped', async () => {
    const port = await closedPort();
    const clinic = makeClinic(`http://127.0.0.1:${port}`);
    const { code, doc } = await clinic.diagnose(['--group', 'config,network,api,auth']);
    expect(code).toBe(1);
    expect(check(doc, 'net.dns').status).toBe('ok');
    expect(check(doc, 'net.tcp')).toMatchObject({ status: 'fail' });
    expect(check(doc, 'net.tcp').found).toBe(`127.0.0.1:${port} refused the connection: nothing is listening there`);
    expect(check(doc, 'net.tcp').remedy).toContain('Check the server is running');
    expect(check(doc, 'api.discovery')).toMatchObject({ status: 'skipped', found: 'not run: net.tcp failed' });
    expect(check(doc, 'auth.login').status).toBe('skipped');
  });

  it('names a host name that does not resolve', async () => {
    const clinic = makeClinic('https://no-such-clinic-host.invalid');
    const { code, doc } = await clinic.diagnose(['--group', 'config,network']);
    expect(code).toBe(1);
    expect(check(doc, 'net.dns').status).toBe('fail');
    expect(check(doc, 'net.dns').found).toContain('no-such-clinic-host.invalid does not resolve');
    expect(check(doc, 'net.tcp').status).toBe('skipped');
  });

  it('names a wrong password, a forbidden account and an expired token', async () => {
    const wrong = makeClinic(bed.server.url);
    const bad = await wrong.diagnose(['--group', 'config,network,api,auth'], { EPETSYNC_PASSWORD: 'not-the-password' });
    expect(bad.code).toBe(1);
    expect(check(bad.doc, 'auth.login')).toMatchObject({ status: 'fail', data: { code: 'EPS_AUTH_FAILED' } });
    expect(check(bad.doc, 'auth.permission').status).toBe('skipped');
    expect(bad.run.stdout).not.toContain('not-the-password');

    const forbidden = makeClinic(bed.server.url, { remote: { username: 'reception' } });
    const denied = await forbidden.diagnose(['--group', 'config,network,api,auth']);
    expect(denied.code).toBe(1);
    expect(check(denied.doc, 'auth.login').status).toBe('ok');
    expect(check(denied.doc, 'auth.permission')).toMatchObject({ status: 'fail', data: { code: 'EPS_AUTH_FORBIDDEN' } });

    const token = await loginToken(bed.server.url, 'frontdesk', PASSWORD);
    await bed.sql(`UPDATE epetsync.tokens SET expires_at = now() - interval '1 minute'`);
    const expired = makeClinic(bed.server.url, { remote: { username: undefined } });
    const old = await expired.diagnose(['--group', 'config,network,api,auth'], { EPETSYNC_TOKEN: token, EPETSYNC_PASSWORD: '' });
    expect(old.code).toBe(1);
    expect(check(old.doc, 'config.credentials').found).toContain('token (from EPETSYNC_TOKEN)');
    expect(check(old.doc, 'auth.permission')).toMatchObject({ status: 'fail', data: { code: 'EPS_AUTH_EXPIRED' } });
    expect(old.run.stdout).not.toContain(token);
  });

  it('recognises the legacy Django stub server', async () => {
    const stub = await startFakeServer((req, res) => {
      if (req.url?.startsWith('/api/database/sync')) return sendJson(res, 200, { status: 'ok', sync_method: 'manual', message: 'Sync endpoint' });
      return false;
    });
    try {
      const clinic = makeClinic(stub.url);
      const { code, doc } = await clinic.diagnose(['--group', 'config,network,api,auth']);
      expect(code).toBe(1);
      expect(check(doc, 'api.discovery')).toMatchObject({ status: 'fail', data: { code: 'EPS_PROTOCOL_LEGACY_STUB' } });
      expect(check(doc, 'api.legacy-stub').status).toBe('fail');
      expect(check(doc, 'api.legacy-stub').remedy).toContain('Deploy the epetsync sync API');
      expect(check(doc, 'auth.login').status).toBe('skipped');
    } finally {
      await stub.close();
    }
  });

  it('finds a corrupt database and restores the newest good backup only with --yes, keeping the damaged file', async () => {
    const clinic = makeClinic(bed.server.url, { scale: 80 });
    expect((await clinic.cli(['backup'])).code).toBe(0);
    const db = new Database(clinic.db);
    db.pragma('wal_checkpoint(TRUNCATE)');
    db.pragma('journal_mode = delete');
    db.close();
    corruptPages(clinic.db, 4);
    const before = await clinic.diagnose(['--group', 'config,local,backups']);
    expect(before.code).toBe(1);
    const integrity = check(before.doc, 'db.integrity');
    expect(integrity.status).toBe('fail');
    expect(integrity.found).toContain('malformed');
    expect(check(before.doc, 'db.capture').status).toBe('skipped');

    const declined = await clinic.diagnose(['--fix', '--group', 'config,local,backups']);
    expect(declined.code).toBe(1);
    expect(declined.doc.result.fixes.find((f) => f.id === 'db.integrity')).toMatchObject({ outcome: 'declined', before: 'fail', after: 'fail' });

    const fixed = await clinic.diagnose(['--fix', '--yes', '--group', 'config,local,backups']);
    const restore = fixed.doc.result.fixes.find((f) => f.id === 'db.integrity' || f.id === 'db.opens');
    expect(restore).toMatchObject({ outcome: 'fixed', before: 'fail', after: 'ok' });
    expect(restore!.action).toMatch(/restored db-\d{8}T\d{9}Z\.sqlite3 .*kept as .*replaced/);
    expect(readdirSync(clinic.dir).some((f) => f.startsWith('db.sqlite3.replaced-'))).toBe(true);
    const after = await clinic.diagnose(['--group', 'config,local,backups']);
    expect(check(after.doc, 'db.integrity').status).toBe('ok');
    expect(after.code).toBe(0);
  });

  it('finds missing capture triggers and reinstalls them', async () => {
    const clinic = makeClinic(bed.server.url);
    const groups = ['--group', 'config,local,backups,network,api,auth'];
    expect((await clinic.diagnose(['--fix', ...groups])).code).toBe(0);
    const db = new Database(clinic.db);
    db.exec('DROP TRIGGER "_epetsync_ai_clinic_pet"');
    db.close();
    const before = await clinic.diagnose(groups);
    expect(before.code).toBe(1);
    expect(check(before.doc, 'db.capture')).toMatchObject({ status: 'fail', fixable: true });
    expect(check(before.doc, 'db.capture').found).toContain('missing on clinic_pet');
    const fixed = await clinic.diagnose(['--fix', ...groups]);
    expect(fixed.doc.result.fixes.find((f) => f.id === 'db.capture')).toMatchObject({ outcome: 'fixed', before: 'fail', after: 'ok' });
    const after = await clinic.diagnose(groups);
    expect(problems(after.doc)).toEqual([]);

    // An endpoint cached for an older deployment of the API is re-discovered.
    const stateFile = `${clinic.dir}/.epetsync/state.json`;
    const state = JSON.parse(readFileSync(stateFile, 'utf8')) as { endpoint: { base: string } };
    state.endpoint.base = `${bed.server.url}/vet_portal/api/database/`;
    writeFileSync(stateFile, JSON.stringify(state));
    const stale = await clinic.diagnose(groups);
    expect(check(stale.doc, 'api.cache')).toMatchObject({ status: 'warn', data: { cached: `${bed.server.url}/vet_portal/api/database/`, discovered: `${bed.server.url}/api/database/` } });
    const recached = await clinic.diagnose(['--fix', ...groups]);
    expect(recached.doc.result.fixes.find((f) => f.id === 'api.cache')).toMatchObject({ outcome: 'fixed', before: 'warn', after: 'ok' });
  });

  it('writes missing defaults with a .bak, tightens an open file holding a password, and flags the password and admin/admin', async () => {
    const clinic = makeClinic(bed.server.url, { database: { backup_dir: undefined }, remote: { sync_interval: undefined, username: 'admin', password: 'admin' } });
    const { chmodSync } = await import('node:fs');
    chmodSync(clinic.config, 0o644);
    const original = readFileSync(clinic.config, 'utf8');
    const before = await clinic.diagnose(['--group', 'config'], { EPETSYNC_PASSWORD: '' });
    expect(before.code).toBe(0);
    expect(check(before.doc, 'config.defaults')).toMatchObject({ status: 'warn', data: { missing: ['database.backup_dir', 'remote_database.sync_interval'] } });
    expect(check(before.doc, 'config.plaintext-password')).toMatchObject({ status: 'warn' });
    expect(check(before.doc, 'config.plaintext-password').remedy).toContain('EPETSYNC_PASSWORD');
    expect(check(before.doc, 'config.default-admin')).toMatchObject({ status: 'warn', found: 'the sync account is the factory default: its username and password are the same well-known word' });
    expect(check(before.doc, 'config.permissions')).toMatchObject({ status: 'warn', data: { mode: '0644' } });
    expect(before.run.stdout).not.toContain('"admin"');

    const fixed = await clinic.diagnose(['--fix', '--group', 'config'], { EPETSYNC_PASSWORD: '' });
    expect(fixed.code).toBe(0);
    expect(readFileSync(`${clinic.config}.bak`, 'utf8')).toBe(original);
    const now = JSON.parse(readFileSync(clinic.config, 'utf8')) as { database: Record<string, unknown>; remote_database: Record<string, unknown> };
    expect(now.database.backup_dir).toBe('backups');
    expect(now.remote_database.sync_interval).toBe(30);
    expect(statSync(clinic.config).mode & 0o777).toBe(0o600);
    expect(check(fixed.doc, 'config.defaults').status).toBe('ok');
    expect(check(fixed.doc, 'config.permissions').status).toBe('ok');
    expect(check(fixed.doc, 'config.plaintext-password').status).toBe('warn');
  });

  it('fails config.found when there is no config file, and exits 2 on a bad flag', async () => {
    const clinic = makeClinic(bed.server.url);
    const { runCli } = await import('../helpers/cli.js');
    const run = await runCli(['--json', 'diagnose'], { cwd: clinic.dir + '/..' });
    expect(run.code).toBe(1);
    const doc = JSON.parse(run.stdout) as { result: { checks: Array<{ id: string; status: string }> } };
    expect(doc.result.checks.find((c) => c.id === 'config.found')?.status).toBe('fail');
    expect(doc.result.checks.find((c) => c.id === 'db.exists')?.status).toBe('skipped');
    expect((await clinic.cli(['diagnose', '--no-such-flag'])).code).toBe(2);
    const badGroup = await clinic.cli(['diagnose', '--group', 'config,weather']);
    expect(badGroup.code).toBe(2);
    expect(badGroup.stderr).toBe('Error: --group "weather" is not a check group\nTry: Pass one or more of config, local, backups, network, api, auth, sync, ids, desktop, separated by commas.\n');
    expect(existsSync(clinic.config)).toBe(true);
    writeFileSync(clinic.config, readFileSync(clinic.config));
  });
});

/** Returns a loopback port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
