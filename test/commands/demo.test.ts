/**
 * `epetsync demo` as a newcomer runs it: the built binary, a fresh temp folder, an embedded server
 * in the same process; it must pass end to end, show both changes arriving, and leave nothing behind.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../db/fixtures.js';
import { runCli } from '../helpers/cli.js';

const CLEAN = { EPETSYNC_CONFIG: '', EPETSYNC_URL: '', EPETSYNC_USERNAME: '', EPETSYNC_PASSWORD: '', EPETSYNC_TOKEN: '', EPETSYNC_DB: '', DATABASE_URL: '' };

describe('demo', () => {
  it('runs end to end in a fresh temp folder, prints the summary and deletes the folder', async () => {
    const cwd = tempDir();
    const run = await runCli(['demo'], { cwd, env: CLEAN, timeoutMs: 90_000 });
    expect(run.code).toBe(0);
    const steps = ['generate', 'serve', 'diagnose', 'migrate', 'monitor', 'desktop-change', 'web-change', 'sync', 'stop'];
    const lines = run.stdout.split('\n');
    expect(lines[0]).toBe('epetsync demo');
    expect(lines.slice(1, 10).map((l) => l.trim().split(/\s+/).slice(0, 2).join(' '))).toEqual(steps.map((s) => `✓ ${s}`));
    expect(run.stdout).toMatch(/^Rows migrated: \d+ \(generated \d+; Django's own django_\* tables are not synced\)$/m);
    expect(run.stdout).toContain('Desktop -> web: clinic_pet 1 name = "Biscuit (edited on the desktop)" arrived\n');
    expect(run.stdout).toContain('Web -> desktop: clinic_owner 1 phone = "555-0100 (web)" arrived\n');
    expect(run.stdout).toContain('The server is stopped; nothing is left running.\n');
    expect(run.stdout).toContain('Demo passed: both sides stayed in step.\n');
    expect(run.stdout).toContain('Next steps for your own clinic:\n  epetsync init --db');
    const folder = /^Demo folder: (.+)$/m.exec(run.stderr)?.[1];
    expect(folder).toBeDefined();
    expect(existsSync(folder!)).toBe(false);
  }, 90_000);

  it('keeps --dir with --keep and reports --json: every step ok, rows migrated, both changes arrived, no password on disk', async () => {
    const dir = join(tempDir(), 'clinic');
    const run = await runCli(['--json', 'demo', '--dir', dir, '--keep', '--scale', '5'], { env: CLEAN, timeoutMs: 90_000 });
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('');
    const doc = JSON.parse(run.stdout) as {
      ok: boolean;
      command: string;
      result: { ok: boolean; dir: string; kept: boolean; steps: Array<{ step: string; status: string }>; rowsMigrated: number; changes: Array<{ from: string; table: string; arrived: boolean }>; passwordStored: boolean; nextSteps: string[] };
    };
    expect(doc.ok).toBe(true);
    expect(doc.command).toBe('epetsync demo');
    expect(doc.result.dir).toBe(dir);
    expect(doc.result.kept).toBe(true);
    expect(doc.result.steps.every((s) => s.status === 'ok')).toBe(true);
    expect(doc.result.steps).toHaveLength(9);
    expect(doc.result.rowsMigrated).toBeGreaterThan(20);
    expect(doc.result.changes.map((c) => [c.from, c.table, c.arrived])).toEqual([['desktop', 'clinic_pet', true], ['web', 'clinic_owner', true]]);
    expect(doc.result.passwordStored).toBe(false);
    expect(existsSync(join(dir, 'db.sqlite3'))).toBe(true);
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { remote_database: Record<string, unknown> };
    expect(config.remote_database.username).toBe('demo');
    expect(config.remote_database).not.toHaveProperty('password');
  }, 90_000);

  it('refuses a --dir that already holds files', async () => {
    const dir = tempDir();
    await runCli(['demo', '--dir', dir, '--keep', '--scale', '1'], { env: CLEAN, timeoutMs: 90_000 });
    const again = await runCli(['demo', '--dir', dir], { env: CLEAN });
    expect(again.code).toBe(2);
    expect(again.stderr).toBe(`Error: --dir ${dir} is not empty\nTry: Pass a new or empty folder, or leave --dir out to use a temporary one.\n`);
  }, 90_000);
});
