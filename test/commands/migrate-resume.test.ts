import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLINIC_TABLES, generateClinicDatabase } from '../../src/sync/generate.js';
import { BIN } from '../helpers/cli.js';
import { clinicFolderFor, startMigrateBed, type MigrateBed } from '../helpers/clinic-db.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { pgQuery } from '../helpers/pg.js';

const KEYS: Record<string, string> = { clinic_pet_tags: 'pet_id, tag' };

/** Returns, per table, the row count and an md5 over every row's text in key order: equal only for identical contents. */
async function contents(url: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const t of CLINIC_TABLES) {
    const rows = await pgQuery<{ n: string; h: string }>(url, `SELECT count(*)::text AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY ${KEYS[t] ?? 'id'}), '')) AS h FROM "${t}" t`);
    out[t] = `${rows[0]!.n}:${rows[0]!.h}`;
  }
  const seqs = await pgQuery<{ s: string; v: string | null }>(url, `SELECT sequencename AS s, last_value::text AS v FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1`);
  for (const s of seqs) out[`sequence ${s.s}`] = s.v ?? 'unset';
  return out;
}

async function loadedRows(url: string): Promise<number> {
  const rows = await pgQuery<{ n: string }>(url, `SELECT coalesce(sum(total_rows), 0)::text AS n FROM epetsync.bulk_loads`);
  return Number(rows[0]!.n);
}

describe('migrate killed with SIGKILL', () => {
  let killed: MigrateBed;
  let reference: MigrateBed;
  let total = 0;

  beforeAll(async () => {
    [killed, reference] = await Promise.all([startMigrateBed('eps_migkill'), startMigrateBed('eps_migref')]);
    total = generateClinicDatabase(killed.folder.db, { scale: 5600, seed: 21 }).totalRows;
    copyFileSync(killed.folder.db, reference.folder.db);
  }, 120_000);
  afterAll(async () => {
    await Promise.all([killed?.close(), reference?.close()]);
  });

  it('reruns from its checkpoints and ends with exactly the remote contents of an uninterrupted run', async () => {
    expect(total).toBeGreaterThan(45_000);
    const uninterrupted = await reference.cli(['--json', 'migrate']);
    expect(uninterrupted.code, uninterrupted.stdout).toBe(0);

    // Kill points: before any row moved (preflight, backup), after the first checkpoint, in the middle, near the end.
    const points = [0, 5000, 21_000, 38_000];
    for (const point of points) {
      const child = spawn(process.execPath, [BIN, '--config', killed.folder.config, '--json', 'migrate'], {
        env: { ...process.env, NO_COLOR: '1', CI: 'true', EPETSYNC_PASSWORD: 'correct horse battery' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
      const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      let done = false;
      void exited.then(() => { done = true; });
      const started = Date.now();
      for (;;) {
        if (done) throw new Error(`migrate finished before the kill point ${point}: ${stdout}`);
        const rows = point === 0 ? (Date.now() - started > 400 ? 1 : 0) : await loadedRows(killed.pg.url);
        if ((point === 0 && rows > 0) || (point > 0 && rows >= point)) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      child.kill('SIGKILL');
      await exited;
      // Nothing half-written: every row in PostgreSQL is covered by a committed checkpoint. One
      // statement reads both, because a chunk the server received before the kill may still
      // commit (rows and checkpoint together) between two separate reads.
      const [remote] = await pgQuery<{ n: string; loaded: string }>(
        killed.pg.url,
        `SELECT (${CLINIC_TABLES.map((t) => `(SELECT count(*) FROM "${t}")`).join(' + ')})::text AS n,
                (SELECT coalesce(sum(total_rows), 0) FROM epetsync.bulk_loads)::text AS loaded`,
      );
      expect(Number(remote!.n)).toBe(Number(remote!.loaded));
    }

    const rerun = await killed.cli(['--json', 'migrate']);
    expect(rerun.code, rerun.stdout).toBe(0);
    const out = JSON.parse(rerun.stdout) as { result: { resumed: boolean; mismatched: string[]; tables: Array<{ table: string; verified: boolean; loaded: number }> } };
    expect(out.result.resumed).toBe(true);
    expect(out.result.mismatched).toEqual([]);
    expect(out.result.tables.reduce((n, t) => n + t.loaded, 0)).toBe(total - 3 - 1); // all but django_session (3) and django_migrations (1)
    expect(await contents(killed.pg.url)).toEqual(await contents(reference.pg.url));
  }, 170_000);

  it('survives a lost answer, the network going away and a revoked token: checks the checkpoint, retries, and loads every row once', async () => {
    const bed = await startMigrateBed('eps_mignet');
    const proxy = await startFaultProxy(bed.server.url);
    try {
      const { folder } = clinicFolderFor(bed);
      const config = JSON.parse(readFileSync(folder.config, 'utf8')) as { remote_database: { url: string } };
      config.remote_database.url = proxy.url;
      writeFileSync(folder.config, JSON.stringify(config));
      const generated = generateClinicDatabase(folder.db, { scale: 3000, seed: 5 });
      const child = spawn(process.execPath, [BIN, '--config', folder.config, '--json', 'migrate'], {
        env: { ...process.env, NO_COLOR: '1', CI: 'true', EPETSYNC_PASSWORD: 'correct horse battery' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
      const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      const waitRows = async (n: number): Promise<void> => {
        while ((await loadedRows(bed.pg.url)) < n) await new Promise((r) => setTimeout(r, 10));
      };
      let done = false;
      void exited.then(() => { done = true; });
      const logFile = join(folder.root, 'logs', 'epetsync.log');
      const lost = (): boolean => existsSync(logFile) && readFileSync(logFile, 'utf8').includes('answer was lost');
      await waitRows(1);
      // Cut off the next answer until one of them was a bulk answer the server had already committed.
      while (!lost() && !done) {
        proxy.resetAfter(0);
        const before = await loadedRows(bed.pg.url);
        while (!done && (await loadedRows(bed.pg.url)) <= before) await new Promise((r) => setTimeout(r, 10));
        await new Promise((r) => setTimeout(r, 50));
      }
      proxy.clear();
      // Every token revoked in the middle of the load: the next bulk request is refused and migrate logs in again.
      await pgQuery(bed.pg.url, `DELETE FROM epetsync.tokens`);
      const revokedWhileRunning = !done;
      // Then the network goes away for a while: shorter than the client's least retry budget (four
      // backoffs of at least 125 + 250 + 500 + 1000 ms, docs/client.md) with room for a loaded machine.
      await proxy.refuse();
      await new Promise((r) => setTimeout(r, 600));
      await proxy.accept();
      expect(await exited, stdout).toBe(0);
      const out = JSON.parse(stdout) as { result: { mismatched: string[]; tables: Array<{ table: string; loaded: number; verified: boolean }> } };
      expect(out.result.mismatched).toEqual([]);
      for (const t of out.result.tables) {
        expect(t.verified, t.table).toBe(true);
        expect(t.loaded, t.table).toBe(generated.rows[t.table]);
        const remote = await pgQuery<{ n: string }>(bed.pg.url, `SELECT count(*)::text AS n FROM "${t.table}"`);
        expect(Number(remote[0]!.n), t.table).toBe(generated.rows[t.table]);
      }
      const log = readFileSync(join(folder.root, 'logs', 'epetsync.log'), 'utf8');
      expect(log).toContain('checking the checkpoint and retrying');
      expect(log).toContain('the bulk request committed but its answer was lost; continuing after it');
      if (revokedWhileRunning) expect(log).toContain('token rejected');
    } finally {
      await proxy.close();
      await bed.close();
    }
  }, 120_000);
});
