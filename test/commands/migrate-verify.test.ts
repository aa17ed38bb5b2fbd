import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateClinicDatabase } from '../../src/sync/generate.js';
import { startMigrateBed, type MigrateBed } from '../helpers/clinic-db.js';

describe('migrate verify', () => {
  let bed: MigrateBed;

  beforeAll(async () => {
    bed = await startMigrateBed('eps_migver');
  }, 120_000);
  afterAll(async () => {
    await bed?.close();
  });

  it('reads a table again when the desktop wrote to it during the load, and reports the difference', async () => {
    const generated = generateClinicDatabase(bed.folder.db, { scale: 3000, seed: 11 });
    // The desktop app keeps editing one owner while migrate runs: the load-time checksum of
    // clinic_owner no longer stands for the local table, so verify must read it again and see
    // the phone number the remote does not have yet (monitor would push it later).
    const desktop = new Database(bed.folder.db);
    desktop.pragma('busy_timeout = 10000');
    const edit = desktop.prepare('UPDATE clinic_owner SET phone = ? WHERE id = 1');
    let edits = 0;
    let running = true;
    const editor = (async () => {
      while (running) {
        edit.run(`+33 6 ${String(100000 + edits).padStart(8, '0')}`);
        edits += 1;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    let run;
    try {
      run = await bed.cli(['--json', 'migrate']);
    } finally {
      running = false;
      await editor;
      desktop.close();
    }
    expect(edits).toBeGreaterThan(1);
    expect(run.code, run.stdout).toBe(1);
    const out = JSON.parse(run.stdout) as { result: { mismatched: string[]; tables: Array<{ table: string; loaded: number; verified: boolean }> } };
    expect(out.result.mismatched).toEqual(['clinic_owner']);
    for (const t of out.result.tables) {
      expect(t.loaded, t.table).toBe(generated.rows[t.table]);
      expect(t.verified, t.table).toBe(t.table !== 'clinic_owner');
    }
    const [remote] = await bed.sql(`SELECT phone FROM clinic_owner WHERE id = 1`);
    const local = new Database(bed.folder.db, { readonly: true });
    try {
      expect((local.prepare('SELECT phone FROM clinic_owner WHERE id = 1').get() as { phone: string }).phone).not.toBe((remote as { phone: string }).phone);
    } finally {
      local.close();
    }
  }, 180_000);
});
