/**
 * `epetsync monitor` as a user runs it: the built binary against the real server over real
 * PostgreSQL and a real SQLite file written by a separate Python process.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BIN, runCli } from '../helpers/cli.js';
import { corruptTablePage } from '../db/fixtures.js';
import { desktopWrite } from '../helpers/desktop-writer.js';
import { PASSWORD, USER, createDesktopDb, startRemote, type Remote } from '../sync/fixture.js';

let remote: Remote;
let dir: string;
let dbPath: string;
let config: string;
const children: ChildProcessWithoutNullStreams[] = [];

beforeAll(async () => {
  remote = await startRemote('epsmonitor');
});
afterAll(async () => {
  await remote?.close();
});
beforeEach(async () => {
  await remote.reset();
  dir = mkdtempSync(join(tmpdir(), 'eps-monitor-'));
  dbPath = createDesktopDb(dir);
  config = join(dir, 'config.json');
  writeConfig({ realTime: false });
});
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  // A background monitor left by a failed test must not outlive it.
  const pidFile = join(dir, '.epetsync', 'monitor.pid');
  if (existsSync(pidFile)) {
    try {
      process.kill(Number(readFileSync(pidFile, 'utf8').trim()), 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
});

function writeConfig(options: { realTime: boolean }): void {
  writeFileSync(
    config,
    JSON.stringify({
      database: { path: 'db.sqlite3', backup_dir: 'backups', real_time_sync: options.realTime },
      remote_database: { enabled: true, url: remote.url, username: USER, password: PASSWORD, sync_interval: 300, auto_sync: true },
      sync: { node_id: 'front-desk-1' },
    }),
  );
}

const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => runCli(['--config', config, ...args], { cwd: dir, env });

function localRows(sql: string): unknown[] {
  const db = new Database(dbPath, { readonly: true });
  try {
    return db.prepare(sql).all();
  } finally {
    db.close();
  }
}

/** Starts `epetsync monitor` and resolves once it printed its start line. */
async function startMonitor(args: string[] = []): Promise<{ child: ChildProcessWithoutNullStreams; out: () => string; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [BIN, '--config', config, 'monitor', ...args], { cwd: dir, env: { ...process.env, NO_COLOR: '1', CI: 'true' }, stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  await until(() => /Monitoring /.test(out) || child.exitCode !== null, 20_000, () => out);
  if (child.exitCode !== null) throw new Error(`monitor exited early: ${out}`);
  return { child, out: () => out, exited };
}

/** Polls `check` every 20 ms until it holds; fails with `describe()` after `ms`. */
async function until(check: () => boolean | Promise<boolean>, ms: number, describe: () => string = () => ''): Promise<number> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > ms) throw new Error(`condition not met within ${ms} ms ${describe()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now() - start;
}

describe('epetsync monitor', () => {
  it('--once pushes local changes, pulls remote ones and says so', async () => {
    // The first run installs change capture; what the desktop writes from then on is pushed.
    expect(await cli(['monitor', '--once'])).toMatchObject({ code: 0, stdout: 'Synced once: pushed 0, pulled 0, conflicts 0.\n', stderr: '' });
    desktopWrite(dbPath, [[["INSERT INTO clinic_species VALUES ('cat', 'Cat')"]]]);
    const first = await cli(['monitor', '--once']);
    expect(first).toMatchObject({ code: 0, stdout: 'Synced once: pushed 1, pulled 0, conflicts 0.\n' });
    await remote.sql(`INSERT INTO clinic_species VALUES ('dog', 'Dog')`);
    const second = await cli(['--json', 'monitor', '--once']);
    expect(second.code).toBe(0);
    expect(JSON.parse(second.stdout)).toMatchObject({ ok: true, command: 'epetsync monitor', result: { action: 'ran', mode: 'once', pushed: 0, pulled: 1, quarantine: 0 } });
    expect(await remote.sql(`SELECT code FROM clinic_species ORDER BY code`)).toEqual([{ code: 'cat' }, { code: 'dog' }]);
    expect(localRows(`SELECT code FROM clinic_species ORDER BY code`)).toEqual([{ code: 'cat' }, { code: 'dog' }]);
    const status = await cli(['status']);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(
      /\nSync monitor   not running\nSync queue     0 pending local change\(s\)\nQuarantine     empty\nConflicts      0 logged\nLast sync      \d{4}-\d\d-\d\dT[\d:.]+Z: pushed 0, pulled 1\n/,
    );
  });

  it('refuses a second monitor on the same database, then stops on SIGTERM with exit 0', async () => {
    const m = await startMonitor();
    const second = await cli(['monitor', '--once']);
    expect(second.code).toBe(7);
    expect(second.stderr).toBe(
      `Error: Another epetsync (monitor, pid ${m.child.pid}) is already syncing ${dbPath}\nTry: Stop it first (epetsync monitor --stop), or wait for it to finish; the lock is ${dbPath}.epetsync.lock.\n`,
    );
    m.child.kill('SIGTERM');
    expect(await m.exited).toBe(0);
    expect(m.out()).toMatch(/Stopped after \d+ cycle\(s\)/);
    expect(existsSync(`${dbPath}.epetsync.lock`)).toBe(false);
  });

  it('takes over a stale lock left by a dead process', async () => {
    writeFileSync(`${dbPath}.epetsync.lock`, JSON.stringify({ pid: 2 ** 22 + 12345, host: '', startedAt: '2026-01-01T00:00:00Z', command: 'monitor' }));
    const r = await cli(['monitor', '--once']);
    expect(r.code).toBe(0);
    expect(existsSync(`${dbPath}.epetsync.lock`)).toBe(false);
  });

  it('survives a kill between upload and acknowledgement, and during apply, without loss or duplicate', async () => {
    expect((await cli(['monitor', '--once'])).code).toBe(0);
    desktopWrite(dbPath, [[["INSERT INTO clinic_owner (name, updated_at) VALUES ('Once only', '2026-11-25 09:00:00')"]]]);
    const killed = await cli(['monitor', '--once'], { EPETSYNC_TEST_CRASH: 'after-upload' });
    expect(killed.code).toBeNull();
    expect(localRows('SELECT count(*) AS n FROM _epetsync_outbox')).toEqual([{ n: 1 }]);
    expect(await cli(['monitor', '--once'])).toMatchObject({ code: 0 });
    expect(await remote.sql(`SELECT id::int AS id, name FROM clinic_owner`)).toEqual([{ id: 1, name: 'Once only' }]);
    expect(localRows('SELECT count(*) AS n FROM _epetsync_changelog')).toEqual([{ n: 0 }]);

    await remote.sql(`INSERT INTO clinic_species VALUES ('a', 'A'), ('b', 'B')`);
    const cursorBefore = localRows(`SELECT value FROM _epetsync_meta WHERE key = 'pull_cursor'`);
    expect((await cli(['monitor', '--once'], { EPETSYNC_TEST_CRASH: 'during-apply' })).code).toBeNull();
    expect(localRows(`SELECT value FROM _epetsync_meta WHERE key = 'pull_cursor'`)).toEqual(cursorBefore);
    expect(localRows('SELECT count(*) AS n FROM clinic_species')).toEqual([{ n: 0 }]);
    expect((await cli(['monitor', '--once'])).code).toBe(0);
    expect(localRows('SELECT code FROM clinic_species ORDER BY code')).toEqual([{ code: 'a' }, { code: 'b' }]);
  });

  it('syncs in real time both ways and reports the latency', async () => {
    writeConfig({ realTime: true });
    await cli(['monitor', '--once']);
    const m = await startMonitor();
    // Let the first cycle and the long poll settle.
    await until(() => /start\s+pushed/.test(m.out()), 10_000, m.out);

    // Timed from the desktop commit itself (the second transaction reads the clock right after it), not from spawning Python.
    const [[committedAt]] = desktopWrite(dbPath, [[["INSERT INTO clinic_species VALUES ('rt-local', 'From the desk')"]], [["SELECT (julianday('now') - 2440587.5) * 86400000.0"]]]) as [[number]];
    await until(async () => (await remote.sql(`SELECT 1 FROM clinic_species WHERE code = 'rt-local'`)).length === 1, 5000, m.out);
    const push = Math.round(Date.now() - committedAt);

    const t1 = Date.now();
    await remote.sql(`INSERT INTO clinic_species VALUES ('rt-web', 'From the web')`);
    await until(() => localRows(`SELECT 1 FROM clinic_species WHERE code = 'rt-web'`).length === 1, 5000, m.out);
    const pull = Date.now() - t1;
    console.log(`real-time latency: desktop -> PostgreSQL ${push} ms, PostgreSQL -> desktop ${pull} ms`);
    expect(push).toBeLessThan(1500);
    expect(pull).toBeLessThan(1500);
    expect(m.out()).toMatch(/\d\d:\d\d:\d\d {2}local +pushed 1 {2}pulled \d+ {2}conflicts 0 {2}pending \d+ {2}lag \d+ s {2}\d+ ms/);
    m.child.kill('SIGINT');
    expect(await m.exited).toBe(0);
  });

  it('starts in the background, shows in status, and stops', async () => {
    expect((await cli(['monitor', '--once'])).code).toBe(0);
    const started = await cli(['monitor', '--background', '--interval', '5']);
    expect(started.code).toBe(0);
    const pid = Number(/pid (\d+)/.exec(started.stdout)?.[1]);
    expect(started.stdout).toBe(`Monitor started in the background (pid ${pid}).\nOutput: ${join(dir, 'logs', 'monitor.out')}; stop it with "epetsync monitor --stop".\n`);
    expect(readFileSync(join(dir, '.epetsync', 'monitor.pid'), 'utf8').trim()).toBe(String(pid));
    desktopWrite(dbPath, [[["INSERT INTO clinic_species VALUES ('bg', 'Background')"]]]);
    await until(async () => (await remote.sql(`SELECT 1 FROM clinic_species WHERE code = 'bg'`)).length === 1, 15_000);
    const again = await cli(['monitor', '--background']);
    expect(again.code).toBe(7);
    const status = await cli(['--json', 'status']);
    expect(JSON.parse(status.stdout).result.sync).toMatchObject({ monitor: { running: true, pid }, pending: 0, quarantined: 0 });
    const stopped = await cli(['monitor', '--stop']);
    expect(stopped).toMatchObject({ code: 0, stdout: `Monitor (pid ${pid}) stopped.\n` });
    expect(existsSync(join(dir, '.epetsync', 'monitor.pid'))).toBe(false);
    expect(await cli(['monitor', '--stop'])).toMatchObject({ code: 0, stdout: 'No background monitor is running.\n' });
  });
  it('--uninstall removes the capture triggers, refusing while changes wait', async () => {
    expect((await cli(['monitor', '--once'])).code).toBe(0);
    desktopWrite(dbPath, [[["INSERT INTO clinic_species VALUES ('waiting', 'Not sent yet')"]]]);
    expect(await cli(['monitor', '--uninstall'])).toMatchObject({
      code: 2,
      stderr: 'Error: 1 local change(s) and 0 batch(es) have not reached the server yet\nTry: Run "epetsync monitor --once" until nothing is pending, then --uninstall.\n',
    });
    expect((await cli(['monitor', '--once'])).code).toBe(0);
    expect(await cli(['monitor', '--uninstall'])).toMatchObject({ code: 0, stdout: 'Removed 12 change-capture trigger(s); desktop edits are no longer recorded until the next monitor run (use migrate to catch up).\n' });
    expect(localRows(`SELECT count(*) AS n FROM sqlite_master WHERE type = 'trigger'`)).toEqual([{ n: 0 }]);
    desktopWrite(dbPath, [[["INSERT INTO clinic_species VALUES ('untracked', 'After uninstall')"]]]);
    expect(localRows('SELECT count(*) AS n FROM _epetsync_changelog')).toEqual([{ n: 0 }]);
  });

  it('--fix re-pulls a snapshot when the only backup predates the first sync', async () => {
    expect((await cli(['backup'])).code).toBe(0);
    expect((await cli(['monitor', '--once'])).code).toBe(0);
    await remote.sql(`INSERT INTO clinic_species VALUES ('web-row', 'Only on the web at first')`);
    expect((await cli(['monitor', '--once'])).code).toBe(0);

    corruptTablePage(dbPath, '_epetsync_changelog');

    const fixed = await cli(['monitor', '--once', '--fix']);
    expect(fixed.code).toBe(0);
    expect(fixed.stdout).toMatch(/^Restored .* over the corrupt database .*\nSynced once: pushed 0, pulled 0, conflicts 0\.\n$/);
    expect(localRows('SELECT code FROM clinic_species')).toEqual([{ code: 'web-row' }]);
    expect(localRows(`SELECT count(*) AS n FROM _epetsync_meta WHERE key = 'pull_cursor'`)).toEqual([{ n: 1 }]);
  });

  it('after "epetsync restore", brings back what this desktop sent after the backup was taken', async () => {
    expect((await cli(['monitor', '--once'])).code).toBe(0);
    desktopWrite(dbPath, [[["INSERT INTO clinic_species VALUES ('before-backup', 'Synced, then backed up')"]]]);
    expect((await cli(['monitor', '--once'])).code).toBe(0);
    expect((await cli(['backup'])).code).toBe(0);
    // Sent by this desktop after the backup: the feed leaves its own uploads out, so a restored
    // file would never see it again without the replay the restore asks for.
    desktopWrite(dbPath, [[["INSERT INTO clinic_species VALUES ('sent-after-backup', 'Only on the server once restored')"]]]);
    expect((await cli(['monitor', '--once'])).code).toBe(0);
    const restored = await cli(['restore', '--latest', '--yes']);
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.stdout).toContain('Marked for sync');
    expect(localRows('SELECT code FROM clinic_species ORDER BY code')).toEqual([{ code: 'before-backup' }]);
    const synced = await cli(['monitor', '--once']);
    expect(synced.code, synced.stderr).toBe(0);
    expect(localRows('SELECT code FROM clinic_species ORDER BY code')).toEqual([{ code: 'before-backup' }, { code: 'sent-after-backup' }]);
    expect(localRows(`SELECT key FROM _epetsync_meta WHERE key = 'restored_from_backup' AND value IS NOT NULL`)).toEqual([]);
  });

  it('--fix restores the newest good backup over a corrupt database, keeps the damaged file and re-pulls', async () => {
    expect((await cli(['monitor', '--once'])).code).toBe(0);
    desktopWrite(dbPath, [[["INSERT INTO clinic_species VALUES ('before-backup', 'Synced, then backed up')"]]]);
    expect((await cli(['monitor', '--once'])).code).toBe(0);
    expect((await cli(['backup'])).code).toBe(0);
    await remote.sql(`INSERT INTO clinic_species VALUES ('after-backup', 'Written on the web later')`);

    const damaged = corruptTablePage(dbPath, '_epetsync_changelog');
    const bytes = readFileSync(dbPath);

    const broken = await cli(['monitor', '--once']);
    expect(broken.code).toBe(5);
    expect(broken.stderr).toMatch(/^Error: Database .* is corrupt/);

    const fixed = await cli(['monitor', '--once', '--fix']);
    expect(fixed.code).toBe(0);
    expect(fixed.stdout).toMatch(/^Restored .*backups.* over the corrupt database \(damaged files kept: .+\); re-pulling from the backup's cursor\.\nSynced once: pushed 0, pulled 1, conflicts 0\.\n$/);
    const kept = /damaged files kept: ([^,)]+)/.exec(fixed.stdout)![1]!;
    // The damaged page is still there in the kept file: nothing was repaired in place or deleted.
    const page = (buf: Buffer): Buffer => buf.subarray(damaged.start, damaged.end);
    expect(page(readFileSync(kept)).equals(page(bytes))).toBe(true);
    expect(localRows('SELECT code FROM clinic_species ORDER BY code')).toEqual([{ code: 'after-backup' }, { code: 'before-backup' }]);
    expect(await remote.sql(`SELECT code FROM clinic_species ORDER BY code`)).toEqual([{ code: 'after-backup' }, { code: 'before-backup' }]);
  });
});
