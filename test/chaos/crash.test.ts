/**
 * Chaos part 2, crashes (docs/reliability.md): SIGKILL at random moments, the way a power cut or
 * the task manager ends a process, many times in a row, restarting each time.
 *
 * - `epetsync migrate` on a seeded clinic database, until it completes: the result must equal an
 *   uninterrupted run into a second database (row counts, an md5 over every row, sequences) and
 *   the desktop file row by row.
 * - `epetsync monitor` while both sides write: after the last restart, both databases equal row by
 *   row and as each writer meant, nothing lost or duplicated.
 * - `epetsync serve` under a running monitor, restarted behind the same URL (the fault proxy stays
 *   in front, as a load balancer would): the same end state.
 */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLINIC_TABLES, DJANGO_POSTGRES_SCHEMA, generateClinicDatabase } from '../../src/sync/generate.js';
import { pgQuery } from '../helpers/pg.js';
import {
  ClinicWorkload,
  compareClinic,
  compareSides,
  readSides,
  runWorkloads,
  sleep,
  startChaosBed,
  startDesktopWriter,
  startWebWriter,
  until,
  waitForConvergence,
  type ChaosBed,
  type CliProcess,
  type WebRetries,
} from './bed.js';
import { CHAOS_SEED, prng, recordFigures, scaled } from './kit.js';

const beds: ChaosBed[] = [];
afterAll(async () => {
  await Promise.all(beds.map((b) => b.close()));
});

const replay = `seed ${CHAOS_SEED} (replay with EPETSYNC_CHAOS_SEED=${CHAOS_SEED})`;

/** Returns, per table, the row count and an md5 over every row's text in key order, and each sequence's position: equal only for identical contents. */
async function contents(url: string): Promise<Record<string, string>> {
  const keys: Record<string, string> = { clinic_pet_tags: 'pet_id, tag' };
  const out: Record<string, string> = {};
  for (const t of CLINIC_TABLES) {
    const [row] = await pgQuery<{ n: string; h: string }>(url, `SELECT count(*)::text AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY ${keys[t] ?? 'id'}), '')) AS h FROM "${t}" t`);
    out[t] = `${row!.n}:${row!.h}`;
  }
  for (const s of await pgQuery<{ s: string; v: string | null }>(url, `SELECT sequencename AS s, last_value::text AS v FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1`)) {
    out[`sequence ${s.s}`] = s.v ?? 'unset';
  }
  return out;
}

/** Starts the two writers and their workloads on a bed. */
async function startWriters(bed: ChaosBed, seed: number): Promise<{ workloads: ClinicWorkload[]; retries(): WebRetries; close(): Promise<void> }> {
  const desktopWriter = startDesktopWriter(bed.dbPath, join(bed.dir, 'desktop-writer.err'));
  const webWriter = await startWebWriter(bed.pg.url);
  const tag = String(seed % 100_000);
  return {
    workloads: [new ClinicWorkload('desktop', tag, prng(seed + 10), desktopWriter.exec), new ClinicWorkload('web', tag, prng(seed + 20), webWriter.exec)],
    retries: webWriter.retries,
    async close() {
      await desktopWriter.close();
      await webWriter.close();
    },
  };
}

/**
 * What every crash case under a monitor ends with: wait (bounded) for both sides to converge, stop
 * the monitor cleanly, compare both sides row by row, and gather the figures the report shows.
 */
async function settleAndCompare(bed: ChaosBed, writers: Awaited<ReturnType<typeof startWriters>>, monitor: CliProcess) {
  const { converged, comparison, waitedMs } = await waitForConvergence(bed, writers.workloads, scaled(60_000, 120_000));
  expect(monitor.done(), `the monitor ended (${monitor.ending()}), ${replay}:\n${monitor.output()}`).toBe(false);
  expect(converged, `not converged after ${waitedMs} ms (${bed.pending()} pending), ${replay}: ${comparison.problems.join('\n')}\n${monitor.output().slice(-3000)}`).toBe(true);
  expect(await monitor.stop(), monitor.output()).toBe(0);
  bed.registerCachedToken();
  const final = await compareClinic(bed, writers.workloads);
  const [desktop, web] = writers.workloads as [ClinicWorkload, ClinicWorkload];
  return {
    final,
    rows: { desktop_written: desktop.written, web_written: web.written, lost: final.lost, duplicated: final.duplicated },
    checks: {
      'differing rows': final.differing,
      'rows on each side at the end': final.desktopRows,
      'seconds to converge after the last restart': Math.round(waitedMs / 100) / 10,
      'web transactions retried after a deadlock': writers.retries().deadlock,
      'web inserts retried: id taken by an upload': writers.retries().duplicateKey,
      'web owner deletes refused: a desktop row pointed at the owner': web.refusedDeletes,
    },
  };
}

describe('chaos: crashes', () => {
  it('migrate killed at random moments, restarted until it completes, equals an uninterrupted run', async () => {
    const seed = CHAOS_SEED + 2;
    const random = prng(seed);
    const started = Date.now();
    const scale = scaled(250, 2500);
    const clinic = (path: string): void => {
      generateClinicDatabase(path, { scale, seed });
    };
    const [killed, reference] = await Promise.all([
      startChaosBed({ name: 'crash-migrate', pgSchema: DJANGO_POSTGRES_SCHEMA, makeDesktop: clinic, realTime: false }),
      startChaosBed({ name: 'crash-migrate-ref', pgSchema: DJANGO_POSTGRES_SCHEMA, makeDesktop: clinic, realTime: false }),
    ]);
    beds.push(killed, reference);

    const t0 = Date.now();
    const uninterrupted = await reference.run('migrate', ['--json', 'migrate'], 240_000);
    const fullMs = Date.now() - t0;
    expect(uninterrupted.code, uninterrupted.output).toBe(0);

    // Each run is killed after a random 5–60 % of an uninterrupted run's time, so kills land in
    // preflight, backup, login, the bulk load and verify alike; a run that finished first ends the loop.
    const target = scaled(2, 8);
    let kills = 0;
    let runs = 0;
    let completed: { code: number | null; stdout: string } | undefined;
    while (kills < target && !completed) {
      const run = killed.spawn('migrate', ['--json', 'migrate']);
      runs += 1;
      await Promise.race([run.exited, sleep(fullMs * (0.05 + random() * 0.55))]);
      if (await run.kill()) kills += 1;
      else completed = { code: await run.exited, stdout: run.stdout() };
    }
    if (!completed) {
      const last = await killed.run('migrate', ['--json', 'migrate'], 240_000);
      runs += 1;
      completed = last;
    }
    expect(completed.code, `${replay}\n${completed.stdout}`).toBe(0);
    const result = JSON.parse(completed.stdout) as { ok: boolean; result: { mismatched: string[]; tables: Array<{ table: string; verified: boolean }> } };
    expect(result.result.mismatched).toEqual([]);
    for (const t of result.result.tables) expect(t.verified, t.table).toBe(true);

    expect(await contents(killed.pg.url), replay).toEqual(await contents(reference.pg.url));
    const comparison = compareSides(await readSides(killed.dbPath, killed.pg.url, CLINIC_TABLES), { clinic_owner: 'email', 'clinic vaccine log': 'uid' });
    recordFigures({
      part: 'crash.migrate',
      title: `migrate SIGKILLed at random moments and restarted until it completed (scale ${scale})`,
      seconds: Math.round((Date.now() - started) / 1000),
      kills: { migrate: kills },
      restarts: { migrate: runs - 1 },
      rows: { desktop_written: comparison.desktopRows, web_written: 0, lost: comparison.lost, duplicated: comparison.duplicated },
      checks: { 'migrate runs': runs, 'differing rows': comparison.differing, 'equal to an uninterrupted run': true, 'uninterrupted run ms': fullMs },
    });
    expect(comparison, `${replay}: ${comparison.problems.join('\n')}`).toMatchObject({ lost: 0, duplicated: 0, differing: 0 });
    expect(comparison.webRows).toBe(comparison.desktopRows);
    expect(kills).toBeGreaterThanOrEqual(scaled(1, 3));
  }, scaled(150_000, 300_000));

  it('monitor killed at random moments while both sides write, restarted each time, converges to equality', async () => {
    const seed = CHAOS_SEED + 3;
    const random = prng(seed);
    const started = Date.now();
    const bed = await startChaosBed({ name: 'crash-monitor' });
    beds.push(bed);
    const writers = await startWriters(bed, seed);
    let stop = false;
    let writing: Promise<void> | undefined;
    try {
      // The first run installs change capture; from then on every desktop write is recorded.
      const first = await bed.startMonitor();
      writing = runWorkloads(writers.workloads, prng(seed + 30), () => stop, [50, 250]);
      let writeFailed = false;
      writing.catch(() => {
        writeFailed = true;
      });
      let monitor = first;
      let kills = 0;
      const target = scaled(2, 12);
      while (kills < target && !writeFailed) {
        // Anywhere in its life: start-up, login, a push between upload and acknowledgement, a page being applied, idle.
        await sleep(200 + random() * scaled(2000, 3000));
        expect(monitor.done(), `the monitor ended (${monitor.ending()}) before it was killed, ${replay}:\n${monitor.output()}`).toBe(false);
        if (await monitor.kill()) kills += 1;
        bed.registerCachedToken();
        // Restarted at once, as systemd or the Windows task would; the stale lock is taken over.
        monitor = bed.spawn('monitor', ['monitor']);
      }
      stop = true;
      await writing;
      // The last start must get through its first cycle: the convergence below is its work.
      await until(() => monitor.done() || /\d\d:\d\d:\d\d\s+start\s+pushed/.test(monitor.stdout()), 60_000);
      const end = await settleAndCompare(bed, writers, monitor);
      recordFigures({
        part: 'crash.monitor',
        title: 'monitor SIGKILLed at random moments and restarted while both sides write',
        seconds: Math.round((Date.now() - started) / 1000),
        kills: { monitor: kills },
        restarts: { monitor: kills },
        rows: end.rows,
        checks: end.checks,
      });
      expect(end.final, `${replay}: ${end.final.problems.join('\n')}`).toMatchObject({ lost: 0, duplicated: 0, differing: 0 });
      expect(kills).toBe(target);
    } finally {
      stop = true;
      await writing?.catch(() => {});
      await writers.close();
    }
  }, scaled(150_000, 300_000));

  it('serve killed at random moments under a running monitor, restarted behind the same URL, converges to equality', async () => {
    const seed = CHAOS_SEED + 4;
    const random = prng(seed);
    const started = Date.now();
    const bed = await startChaosBed({ name: 'crash-serve' });
    beds.push(bed);
    const writers = await startWriters(bed, seed);
    let stop = false;
    let writing: Promise<void> | undefined;
    try {
      const monitor = await bed.startMonitor();
      writing = runWorkloads(writers.workloads, prng(seed + 30), () => stop, [50, 250]);
      let writeFailed = false;
      writing.catch(() => {
        writeFailed = true;
      });
      let kills = 0;
      const target = scaled(1, 6);
      while (kills < target && !writeFailed) {
        await sleep(500 + random() * scaled(2000, 3000));
        await bed.killServe();
        kills += 1;
        // Down for a moment, as a crashed process under a supervisor is.
        await sleep(random() * 1500);
        await bed.startServe();
        expect(monitor.done(), `the monitor ended (${monitor.ending()}) after the server was killed, ${replay}:\n${monitor.output()}`).toBe(false);
      }
      stop = true;
      await writing;
      const end = await settleAndCompare(bed, writers, monitor);
      recordFigures({
        part: 'crash.serve',
        title: 'serve SIGKILLed at random moments under a running monitor and restarted behind the same URL',
        seconds: Math.round((Date.now() - started) / 1000),
        kills: { serve: kills },
        restarts: { serve: bed.serveStarts() - 1 },
        rows: end.rows,
        checks: end.checks,
      });
      expect(end.final, `${replay}: ${end.final.problems.join('\n')}`).toMatchObject({ lost: 0, duplicated: 0, differing: 0 });
      expect(bed.serveStarts()).toBe(target + 1);
    } finally {
      stop = true;
      await writing?.catch(() => {});
      await writers.close();
    }
  }, scaled(150_000, 300_000));
});
