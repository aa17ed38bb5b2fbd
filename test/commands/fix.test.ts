/**
 * `epetsync fix` end to end with the built binary: on an empty remote it repairs, backs up,
 * migrates, syncs, verifies and restarts the desktop app (a stand-in restart command whose runs
 * are counted); run again on the healthy system it changes nothing; with the remote populated and
 * edits on both sides it syncs them and restarts again; a wrong password stops it at diagnose
 * with the auth exit code and the remedy.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { desktopWrite } from '../helpers/desktop-writer.js';
import { makeClinic, startBed, type Clinic, type DiagnoseBed } from '../diagnose/bed.js';

interface FixDoc {
  ok: boolean;
  result: { ok: boolean; exitCode: number; steps: Array<{ step: string; status: string; detail: string; remedy?: string }>; failed: { step: string; detail: string; remedy: string | null } | null };
}

let bed: DiagnoseBed;
let clinic: Clinic;

beforeAll(async () => {
  bed = await startBed('eps_fix');
  clinic = makeClinic(bed.server.url, { app: { restart_command: 'sh restart.sh' } });
  writeFileSync(join(clinic.dir, 'restart.sh'), 'echo restarted >> restarts.log\n');
}, 60_000);
afterAll(async () => {
  await bed?.close();
});

const restarts = (): number => {
  try {
    return readFileSync(join(clinic.dir, 'restarts.log'), 'utf8').split('\n').filter(Boolean).length;
  } catch {
    return 0;
  }
};

async function fix(args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; doc: FixDoc; steps: Record<string, string> }> {
  const run = await clinic.cli(['--json', 'fix', ...args], env);
  const doc = JSON.parse(run.stdout) as FixDoc;
  return { code: run.code, doc, steps: Object.fromEntries(doc.result.steps.map((s) => [s.step, s.status])) };
}

const remoteOwners = async (): Promise<number> => Number((await bed.sql<{ n: string }>('SELECT count(*)::text AS n FROM clinic_owner'))[0]!.n);

describe('fix', () => {
  it('migrates into an empty remote, restarts the app, and a second run changes nothing', async () => {
    const first = await fix();
    expect(first.code, JSON.stringify(first.doc.result.steps)).toBe(0);
    expect(first.steps).toEqual({ diagnose: 'changed', backup: 'changed', migrate: 'changed', sync: 'ok', verify: 'ok', restart: 'changed' });
    expect(first.doc.result.failed).toBeNull();
    expect(restarts()).toBe(1);
    expect(await remoteOwners()).toBe(5);

    const second = await fix();
    expect(second.code).toBe(0);
    expect(second.steps).toEqual({ diagnose: 'ok', backup: 'ok', migrate: 'skipped', sync: 'ok', verify: 'ok', restart: 'skipped' });
    expect(restarts()).toBe(1);
    expect(await remoteOwners()).toBe(5);
  });

  it('on a populated remote syncs the edits of both sides instead of migrating, and restarts the app', async () => {
    await bed.sql(`INSERT INTO clinic_owner (first_name, last_name, email, is_active, balance, created_at) VALUES ('Web', 'Owner', 'web@example.com', true, 0, now())`);
    desktopWrite(clinic.db, [[["INSERT INTO clinic_owner (first_name, last_name, email, is_active, balance, created_at) VALUES ('Desk', 'Owner', 'desk@example.com', 1, 0, '2026-11-25 10:00:00')"]]]);
    const run = await fix();
    expect(run.code, JSON.stringify(run.doc.result.steps)).toBe(0);
    expect(run.steps).toMatchObject({ migrate: 'skipped', sync: 'changed', verify: 'ok', restart: 'changed' });
    expect(run.doc.result.steps.find((s) => s.step === 'sync')!.detail).toBe('one cycle: pushed 1, pulled 1');
    expect(restarts()).toBe(2);
    expect(await remoteOwners()).toBe(7);
  });

  it('restarts with app.stop_command then app.start_command, and names a restart command that fails', async () => {
    const doc = JSON.parse(readFileSync(clinic.config, 'utf8')) as Record<string, unknown>;
    writeFileSync(clinic.config, JSON.stringify({ ...doc, app: { stop_command: 'echo stop >> restarts.log', start_command: 'echo start >> restarts.log' } }, null, 2));
    await bed.sql(`INSERT INTO clinic_owner (first_name, last_name, email, is_active, balance, created_at) VALUES ('Web', 'Two', 'web2@example.com', true, 0, now())`);
    const run = await fix();
    expect(run.code, JSON.stringify(run.doc.result.steps)).toBe(0);
    expect(run.steps).toMatchObject({ sync: 'changed', restart: 'changed' });
    expect(readFileSync(join(clinic.dir, 'restarts.log'), 'utf8').split('\n').filter(Boolean).slice(-2)).toEqual(['stop', 'start']);

    writeFileSync(clinic.config, JSON.stringify({ ...doc, app: { restart_command: 'exit 3' } }, null, 2));
    await bed.sql(`INSERT INTO clinic_owner (first_name, last_name, email, is_active, balance, created_at) VALUES ('Web', 'Three', 'web3@example.com', true, 0, now())`);
    const failed = await fix();
    expect(failed.code).toBe(1);
    expect(failed.doc.result.failed).toEqual({ step: 'restart', detail: '"exit 3" exited with 3', remedy: 'Check app.restart_command in config.json; restart the Vet Portal app by hand.' });
    writeFileSync(clinic.config, JSON.stringify(doc, null, 2));
  });

  it('stops at diagnose on a wrong password with the auth exit code and the remedy', async () => {
    const run = await clinic.cli(['fix'], { EPETSYNC_PASSWORD: 'wrong-password-here' });
    expect(run.code).toBe(4);
    expect(run.stdout).toMatch(/^✗ diagnose +auth\.login: /m);
    expect(run.stdout).toMatch(/^Stopped at diagnose: /m);
    expect(run.stdout + run.stderr).not.toContain('wrong-password-here');
    expect(restarts()).toBe(4);
  });
});
