/**
 * The sync group for real: a clinic migrated and synced through the built binary is clean; a row
 * written straight into PostgreSQL past the change capture is drift; a lock left by a dead
 * monitor is stale and --fix removes it; a synced table whose triggers vanished is found.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { desktopWrite } from '../helpers/desktop-writer.js';
import { check, makeClinic, problems, startBed, type Clinic, type DiagnoseBed } from './bed.js';

let bed: DiagnoseBed;
let clinic: Clinic;

beforeAll(async () => {
  bed = await startBed('eps_diagsync');
  clinic = makeClinic(bed.server.url);
  const migrated = await clinic.cli(['migrate']);
  if (migrated.code !== 0) throw new Error(`migrate failed: ${migrated.stdout}${migrated.stderr}`);
  const fixed = await clinic.cli(['diagnose', '--fix']);
  if (fixed.code !== 0) throw new Error(`diagnose --fix failed: ${fixed.stdout}${fixed.stderr}`);
  const cycle = await clinic.cli(['monitor', '--once']);
  if (cycle.code !== 0) throw new Error(`monitor --once failed: ${cycle.stdout}${cycle.stderr}`);
}, 120_000);
afterAll(async () => {
  await bed?.close();
});

describe('diagnose sync', () => {
  it('finds a migrated, synced clinic clean: cycle recent, cursor at the head, no drift, clocks agree', async () => {
    const { code, doc } = await clinic.diagnose();
    expect(problems(doc)).toEqual([]);
    expect(code).toBe(0);
    expect(check(doc, 'sync.last-cycle').status).toBe('ok');
    expect(check(doc, 'sync.cursor').found).toContain('(at the head)');
    expect(check(doc, 'sync.drift')).toMatchObject({ status: 'ok', data: { method: 'row counts' } });
    expect(check(doc, 'sync.clock-skew').status).toBe('ok');
    expect(check(doc, 'sync.monitor')).toMatchObject({ status: 'ok', data: { running: false } });
    const deep = await clinic.diagnose(['--deep', '--group', 'config,local,network,api,auth,sync']);
    expect(check(deep.doc, 'db.integrity').found).toBe('integrity_check ok');
    expect(check(deep.doc, 'sync.drift')).toMatchObject({ status: 'ok', data: { method: 'row counts and checksums' } });
  });

  it('names drift after a direct PostgreSQL write that bypassed the change capture', async () => {
    await bed.sql(
      `BEGIN; SET LOCAL session_replication_role = replica;
       INSERT INTO clinic_owner (first_name, last_name, email, is_active, balance, created_at) VALUES ('Direct', 'Write', 'direct@example.com', true, 0, now());
       COMMIT;`,
    );
    try {
      const { code, doc } = await clinic.diagnose(['--group', 'config,local,network,api,auth,sync']);
      expect(code).toBe(1);
      const drift = check(doc, 'sync.drift');
      expect(drift.status).toBe('fail');
      expect(drift.found).toMatch(/^the two sides differ with nothing left to sync: clinic_owner \(local (\d+), remote (\d+)\)$/);
      expect(drift.remedy).toContain('epetsync migrate --verify');
    } finally {
      await bed.sql(`BEGIN; SET LOCAL session_replication_role = replica; DELETE FROM clinic_owner WHERE email = 'direct@example.com'; COMMIT;`);
    }
  });

  it('finds a remote sequence left at or below its max(id) and advances it with --fix', async () => {
    const [{ seq }] = await bed.sql<{ seq: string }>(`SELECT pg_get_serial_sequence('clinic_owner', 'id') AS seq`);
    await bed.sql(`SELECT setval($1::regclass, 1)`, [seq]);
    const groups = ['--group', 'config,local,network,api,auth,ids'];
    const before = await clinic.diagnose(groups);
    expect(before.code).toBe(1);
    const lag = check(before.doc, 'ids.remote-sequence');
    expect(lag).toMatchObject({ status: 'fail', fixable: true, data: { lagging: ['clinic_owner'] } });
    expect(lag.found).toMatch(/^remote sequence at or below max\(id\): clinic_owner \(sequence 1, max\(id\) \d+\)/);
    const fixed = await clinic.diagnose(['--fix', ...groups]);
    expect(fixed.doc.result.fixes.find((f) => f.id === 'ids.remote-sequence')).toMatchObject({ outcome: 'fixed', before: 'fail', after: 'ok' });
    const after = await clinic.diagnose(groups);
    expect(check(after.doc, 'ids.remote-sequence').status).toBe('ok');
    expect(after.code).toBe(0);
  });

  it('warns that the next offline insert collides when the web app holds ids past the desktop sequence', async () => {
    await bed.sql(`INSERT INTO clinic_owner (first_name, last_name, email, is_active, balance, created_at) VALUES ('Web', 'Only', 'web-only@example.com', true, 0, now())`);
    const { doc } = await clinic.diagnose(['--group', 'config,local,network,api,auth,ids']);
    const overlap = check(doc, 'ids.overlap');
    expect(overlap).toMatchObject({ status: 'warn', data: { behind: ['clinic_owner'] } });
    expect(overlap.found).toMatch(/^id ranges overlap: clinic_owner \(desktop next (\d+), remote max\(id\) \1\)/);
    expect((await clinic.cli(['monitor', '--once'])).code).toBe(0);
    const after = await clinic.diagnose(['--group', 'config,local,network,api,auth,ids']);
    expect(check(after.doc, 'ids.overlap').status).toBe('ok');
  });

  it('names a change the server refused, waiting in the quarantine', async () => {
    const [[petId]] = desktopWrite(clinic.db, [[['SELECT min(id) FROM clinic_pet']]]) as number[][];
    // PostgreSQL's CHECK (duration_minutes >= 0) refuses what SQLite's unsigned smallint let through.
    desktopWrite(clinic.db, [[["INSERT INTO clinic_appointment (pet_id, scheduled_at, reason, status, fee, duration_minutes) VALUES (?, '2026-11-25 10:00:00', 'x', 'booked', NULL, -5)", [petId]]]]);
    expect((await clinic.cli(['monitor', '--once'])).code).toBe(1);
    const { doc } = await clinic.diagnose(['--group', 'config,local,sync']);
    const q = check(doc, 'sync.quarantine');
    expect(q).toMatchObject({ status: 'warn', data: { count: 1 } });
    expect(q.found).toMatch(/^1 change\(s\) the server refused wait in the quarantine \(clinic_appointment; first: /);
    expect(q.remedy).toContain('epetsync queue');
    const [[id]] = desktopWrite(clinic.db, [[['SELECT id FROM _epetsync_quarantine']]]) as number[][];
    expect((await clinic.cli(['queue', 'discard', String(id)])).code).toBe(0);
  });

  it('finds a synced table that lost all its capture triggers and reinstalls them', async () => {
    desktopWrite(clinic.db, [[['DROP TRIGGER "_epetsync_ai_clinic_pet_tags"'], ['DROP TRIGGER "_epetsync_au_clinic_pet_tags"'], ['DROP TRIGGER "_epetsync_ad_clinic_pet_tags"']]]);
    const groups = ['--group', 'config,local,network,api,auth,sync'];
    const before = await clinic.diagnose(groups);
    expect(before.code).toBe(1);
    expect(check(before.doc, 'sync.scope')).toMatchObject({ status: 'fail', fixable: true, data: { missing: ['clinic_pet_tags'] } });
    const fixed = await clinic.diagnose(['--fix', ...groups]);
    expect(fixed.doc.result.fixes.find((f) => f.id === 'sync.scope')).toMatchObject({ outcome: 'fixed', before: 'fail', after: 'ok' });
    expect(check(fixed.doc, 'sync.scope').status).toBe('ok');
  });

  it('finds a stale monitor lock and removes it with --fix', async () => {
    const dead = spawnSync(process.execPath, ['-e', 'process.exit(0)']).pid!;
    writeFileSync(`${clinic.db}.epetsync.lock`, `${JSON.stringify({ pid: dead, host: hostname(), startedAt: new Date().toISOString(), command: 'monitor' })}\n`);
    const groups = ['--group', 'config,local,sync'];
    const before = await clinic.diagnose(groups);
    expect(check(before.doc, 'sync.monitor')).toMatchObject({ status: 'warn', fixable: true, data: { stale: true, pid: dead } });
    const fixed = await clinic.diagnose(['--fix', ...groups]);
    expect(fixed.doc.result.fixes.find((f) => f.id === 'sync.monitor')).toMatchObject({ outcome: 'fixed', before: 'warn', after: 'ok' });
    const after = await clinic.diagnose(groups);
    expect(check(after.doc, 'sync.monitor')).toMatchObject({ status: 'ok', data: { running: false } });
  });
});
