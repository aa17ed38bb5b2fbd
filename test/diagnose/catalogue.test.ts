/**
 * The catalogue in-process (src/diagnose), each broken condition made for real in files, a real
 * server over real PostgreSQL, or a real TLS socket: what the end-to-end tests in
 * test/commands/diagnose.test.ts do not already cover.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHECKS, runDiagnose, type DiagnoseReport } from '../../src/diagnose/index.js';
import { backupFileName } from '../../src/db/index.js';
import { installCapture, writeMeta } from '../../src/sync/local-capture.js';
import { tempDir } from '../db/fixtures.js';
import { sendJson, startFakeServer } from '../helpers/fake-server.js';
import { PASSWORD, USER, createDesktopDb, startRemote, type Remote } from '../sync/fixture.js';

let remote: Remote;
beforeAll(async () => {
  remote = await startRemote('eps_diagcat');
}, 60_000);
afterAll(async () => {
  await remote?.close();
});

/** Writes a clinic folder (desktop schema of test/sync/fixture.ts) and returns its paths. */
function folder(config: Record<string, unknown> | string): { dir: string; config: string; db: string } {
  const dir = tempDir();
  const db = createDesktopDb(dir);
  const file = join(dir, 'config.json');
  writeFileSync(file, typeof config === 'string' ? config : JSON.stringify(config, null, 2), { mode: 0o600 });
  return { dir, config: file, db };
}

const base = (url: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  database: { path: 'db.sqlite3', backup_dir: 'backups' },
  remote_database: { enabled: true, url, username: USER, sync_interval: 30, ...extra },
  sync: { node_id: 'catalogue-1' },
});

async function diagnose(config: string, groups: string[], options: { now?: () => Date; env?: NodeJS.ProcessEnv; deep?: boolean } = {}): Promise<DiagnoseReport> {
  return runDiagnose(CHECKS, { configPath: config, env: { EPETSYNC_PASSWORD: PASSWORD, ...options.env }, cwd: '/', groups, now: options.now, deep: options.deep });
}

const get = (r: DiagnoseReport, id: string) => r.checks.find((c) => c.id === id)!;

describe('diagnose catalogue', () => {
  it('config: invalid JSON, http to another host, missing credentials', async () => {
    const broken = folder('{ "database": { "path": "db.sqlite3", } }');
    const r1 = await diagnose(broken.config, ['config']);
    expect(get(r1, 'config.valid')).toMatchObject({ status: 'fail', data: { code: 'EPS_CONFIG_SYNTAX' } });
    expect(get(r1, 'config.url').status).toBe('skipped');

    const http = folder(base('http://clinic.example.org'));
    const r2 = await diagnose(http.config, ['config']);
    expect(get(r2, 'config.https').status).toBe('fail');
    expect(get(r2, 'config.https').found).toContain('plain http to clinic.example.org is refused');

    const anonymous = folder(base(remote.url, { username: undefined }));
    const r3 = await diagnose(anonymous.config, ['config'], { env: { EPETSYNC_PASSWORD: '' } });
    expect(get(r3, 'config.credentials')).toMatchObject({ status: 'fail', found: 'remote_database.username is not set; epetsync never connects anonymously' });
  });

  it('config: an unknown key (a typo) is a warning naming it, not a failure', async () => {
    const typo = folder({ ...base(remote.url), sync: { node_id: 'catalogue-1', conflict_polcy: 'client-wins' } });
    const r = await diagnose(typo.config, ['config']);
    expect(get(r, 'config.valid')).toMatchObject({ status: 'warn', found: 'unknown config key sync.conflict_polcy is ignored' });
  });

  it('auth: tokens about to expire are a warning (a real 12 h token, seen from a clock 11 h 57 min ahead)', async () => {
    const clinic = folder(base(remote.url));
    const fresh = await diagnose(clinic.config, ['config', 'network', 'api', 'auth']);
    expect(get(fresh, 'auth.token-expiry').status).toBe('ok');
    const late = await diagnose(clinic.config, ['config', 'network', 'api', 'auth'], { now: () => new Date(Date.now() + (11 * 60 + 57) * 60_000) });
    expect(get(late, 'auth.token-expiry')).toMatchObject({ status: 'warn', remedy: "Raise the server's token lifetime." });
    expect(get(late, 'auth.token-expiry').found).toMatch(/^tokens expire after [0-9] min: every cycle logs in again$/);
  });

  it('local: a missing file, orphan rows, old pending changes; backups: an old and a damaged backup', async () => {
    const missing = folder(base(remote.url));
    writeFileSync(missing.config, JSON.stringify({ ...base(remote.url), database: { path: 'nope.sqlite3', backup_dir: 'backups' } }));
    expect(get(await diagnose(missing.config, ['config', 'local']), 'db.exists')).toMatchObject({ status: 'fail' });

    const f = folder(base(remote.url));
    const db = new Database(f.db);
    // The desktop app's own connections (Python sqlite3) do not enforce foreign keys.
    db.pragma('foreign_keys = off');
    db.exec(`INSERT INTO clinic_pet (id, owner_id, name, neutered, updated_at) VALUES (1, 999, 'Orphan', 0, '2026-01-01 00:00:00')`);
    installCapture(db, [{ name: 'clinic_owner', primaryKey: ['id'] }, { name: 'clinic_pet', primaryKey: ['id'] }]);
    db.exec(`INSERT INTO clinic_owner (id, name, updated_at) VALUES (1, 'Waiting', '2026-01-01 00:00:00')`);
    db.close();
    const later = () => new Date(Date.now() + 3 * 3600_000);
    const r = await diagnose(f.config, ['config', 'local', 'backups'], { now: later });
    expect(get(r, 'db.foreign-keys')).toMatchObject({ status: 'warn', data: { count: 1, byTable: { clinic_pet: 1 } } });
    expect(get(r, 'db.journal-mode')).toMatchObject({ status: 'ok', found: 'wal' });
    expect(get(r, 'db.pending')).toMatchObject({ status: 'warn', data: { count: 1 } });
    expect(get(r, 'db.pending').found).toBe('1 change(s) waiting, the oldest for 3 h');

    mkdirSync(join(f.dir, 'backups'));
    const old = join(f.dir, 'backups', backupFileName(f.db, new Date(Date.now() - 10 * 86_400_000)));
    execFileSync('cp', [f.db, old]);
    const r4 = await diagnose(f.config, ['config', 'local', 'backups']);
    expect(get(r4, 'backup.newest')).toMatchObject({ status: 'warn', fixable: true });
    expect(get(r4, 'backup.newest').found).toMatch(/, 10 days old$/);
    expect(get(r4, 'backup.verify')).toMatchObject({ status: 'ok', found: expect.stringMatching(/: quick_check ok$/) });
    const deep = await diagnose(f.config, ['config', 'local', 'backups'], { deep: true });
    expect(get(deep, 'backup.verify')).toMatchObject({ status: 'ok', found: expect.stringMatching(/: integrity_check ok$/) });
    const damaged = join(f.dir, 'backups', backupFileName(f.db, new Date()));
    writeFileSync(damaged, Buffer.concat([Buffer.from('SQLite format 3\0'), Buffer.alloc(8192, 0x5a)]));
    const r5 = await diagnose(f.config, ['config', 'local', 'backups']);
    expect(get(r5, 'backup.verify')).toMatchObject({ status: 'fail' });
    expect(get(r5, 'backup.verify').found).toContain('is damaged');
  });

  it('sync: a clock ten minutes ahead of the server, a cursor from another server', async () => {
    const f = folder(base(remote.url));
    const db = new Database(f.db);
    installCapture(db, [{ name: 'clinic_owner', primaryKey: ['id'] }]);
    writeMeta(db, 'pull_cursor', 'someone-elses-cursor');
    writeMeta(db, 'last_cycle', JSON.stringify({ at: new Date(Date.now() - 3600_000).toISOString(), ok: true }));
    db.close();
    const r = await diagnose(f.config, ['config', 'local', 'network', 'api', 'auth', 'sync'], { now: () => new Date(Date.now() + 600_000) });
    expect(get(r, 'auth.permission').status).toBe('ok');
    expect(get(r, 'sync.clock-skew')).toMatchObject({ status: 'warn' });
    expect(get(r, 'sync.clock-skew').found).toMatch(/^this clock is 6\d\d s ahead of the server$/);
    expect(get(r, 'sync.cursor').status).toBe('fail');
    expect(get(r, 'sync.cursor').found).toContain('is not one this server issues');
    expect(get(r, 'sync.last-cycle')).toMatchObject({ status: 'warn', found: 'the last successful cycle was 70 min ago (interval 30 s)' });
  });

  it('api: a server speaking another protocol version is named', async () => {
    const fake = await startFakeServer((req, res) => {
      if (req.url === '/.well-known/epetsync') return sendJson(res, 200, { service: 'epetsync', protocol: 2, server_version: '9.0.0', endpoints: { sync: '/api/database/sync/', download: '/api/database/download/', upload: '/api/database/upload/' } });
      return false;
    });
    try {
      const f = folder(base(fake.url));
      const r = await diagnose(f.config, ['config', 'network', 'api']);
      expect(get(r, 'api.discovery')).toMatchObject({ status: 'fail', data: { code: 'EPS_PROTOCOL_VERSION' } });
      expect(get(r, 'api.legacy-stub').status).toBe('skipped');
    } finally {
      await fake.close();
    }
  });

  it('network: a certificate nobody trusts fails net.tls; insecure_tls names verification as off', async () => {
    const dir = tempDir();
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '5', '-subj', '/CN=localhost'], { stdio: 'ignore' });
    const server: Server = createHttpsServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }, (_req, res) => res.end('{}'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `https://localhost:${(server.address() as AddressInfo).port}`;
      const f = folder(base(url));
      const r = await diagnose(f.config, ['config', 'network']);
      expect(get(r, 'net.tls').status).toBe('fail');
      expect(get(r, 'net.tls').found).toContain('the certificate of localhost is not trusted');
      const insecure = folder(base(url, { insecure_tls: true }));
      const r2 = await diagnose(insecure.config, ['config', 'network']);
      expect(get(r2, 'net.tls')).toMatchObject({ status: 'warn', data: { subject: 'localhost' } });
      expect(get(r2, 'net.tls').found).toMatch(/^the certificate of localhost expires in [45] day\(s\)$/);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
