/**
 * Chaos part 1, network faults (docs/reliability.md): `epetsync monitor` in real-time mode syncs a
 * continuous stream of writes made on both sides (a Python desktop writer, a PostgreSQL web
 * writer) through the fault proxy, which resets connections, stalls them, adds latency and goes
 * away entirely, on a schedule drawn from the run's seed. Then the faults and the writers stop,
 * the monitor must bring both databases to equality by itself, and the comparison row by row and
 * against what each writer meant must find nothing lost, duplicated or different.
 */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ClinicWorkload, compareClinic, runWorkloads, sleep, startChaosBed, startDesktopWriter, startWebWriter, until, waitForConvergence, type ChaosBed } from './bed.js';
import { CHAOS_LONG, CHAOS_SEED, prng, recordFigures, scaled } from './kit.js';

type FaultKind = 'reset' | 'stall' | 'latency' | 'outage';
const KINDS: FaultKind[] = ['reset', 'stall', 'latency', 'outage'];

const beds: ChaosBed[] = [];
afterAll(async () => {
  await Promise.all(beds.map((b) => b.close()));
});

/** Returns the fault schedule: every kind once (short), or every kind at least twice and the rest drawn at random (long), shuffled. */
function schedule(random: () => number, count: number): FaultKind[] {
  const plan: FaultKind[] = [...KINDS, ...(CHAOS_LONG ? KINDS : [])];
  while (plan.length < count) plan.push(KINDS[Math.floor(random() * KINDS.length)]!);
  for (let i = plan.length - 1; i > 0; i -= 1) {
    const j = Math.floor(random() * (i + 1));
    [plan[i], plan[j]] = [plan[j]!, plan[i]!];
  }
  return plan;
}

describe('chaos: network faults', () => {
  it('monitor converges both databases row for row through resets, stalls, latency spikes and outages', async () => {
    const seed = CHAOS_SEED + 1;
    const replay = `seed ${CHAOS_SEED} (replay with EPETSYNC_CHAOS_SEED=${CHAOS_SEED})`;
    const random = prng(seed);
    const started = Date.now();
    const bed = await startChaosBed({ name: 'network' });
    beds.push(bed);
    const desktopWriter = startDesktopWriter(bed.dbPath, join(bed.dir, 'desktop-writer.err'));
    const webWriter = await startWebWriter(bed.pg.url);
    const tag = String(seed % 100_000);
    const workloads = [new ClinicWorkload('desktop', tag, prng(seed + 10), desktopWriter.exec), new ClinicWorkload('web', tag, prng(seed + 20), webWriter.exec)];
    const faults: Record<FaultKind, number> = { reset: 0, stall: 0, latency: 0, outage: 0 };
    let stopWriting = false;
    let writing: Promise<void> | undefined;
    try {
      const monitor = await bed.startMonitor();
      writing = runWorkloads(workloads, prng(seed + 30), () => stopWriting, scaled<[number, number]>([60, 300], [100, 600]));
      // A failed write stops the schedule at once (awaited below), rather than surfacing after the test.
      let writeFailed = false;
      writing.catch(() => {
        writeFailed = true;
      });

      for (const kind of schedule(random, scaled(4, 40))) {
        if (writeFailed) break;
        // Quiet time between faults lets some cycles complete, so faults meet work at every stage.
        await sleep(scaled(300, 500) + random() * scaled(700, 2000));
        switch (kind) {
          case 'reset': {
            // Half the time the next answer is cut after a random number of bytes; otherwise every open connection (the long poll included) is reset at once.
            const before = bed.proxy.resetsFired();
            if (random() < 0.5) {
              bed.proxy.resetAfter(Math.floor(random() * 3000));
              await until(() => bed.proxy.resetsFired() > before, 3000);
              bed.proxy.clear();
            }
            // Reset whatever is open (the long poll at least) if the armed reset found no answer to cut.
            if (bed.proxy.resetsFired() === before) {
              await until(() => bed.proxy.openConnections() > 0, 5000);
              bed.proxy.resetAll();
            }
            break;
          }
          case 'stall':
            await bed.proxy.stall(1000 + random() * scaled(2000, 5000));
            break;
          case 'latency':
            bed.proxy.latency(100 + Math.floor(random() * 500));
            await sleep(1000 + random() * 3000);
            bed.proxy.latency(0);
            break;
          case 'outage':
            await bed.proxy.refuse();
            await sleep(1000 + random() * scaled(3000, 6000));
            await bed.proxy.accept();
            break;
        }
        faults[kind] += 1;
        expect(monitor.done(), `the monitor ended (${monitor.ending()}) during the faults, ${replay}:\n${monitor.output()}`).toBe(false);
      }
      bed.proxy.clear();
      stopWriting = true;
      await writing;

      const { converged, comparison, waitedMs } = await waitForConvergence(bed, workloads, scaled(60_000, 120_000));
      expect(monitor.done(), `the monitor ended (${monitor.ending()}), ${replay}:\n${monitor.output()}`).toBe(false);
      expect(converged, `not converged after ${waitedMs} ms (${bed.pending()} pending), ${replay}: ${comparison.problems.join('\n')}\n${monitor.output().slice(-3000)}`).toBe(true);
      expect(await monitor.stop(), monitor.output()).toBe(0);
      bed.registerCachedToken();

      // After the monitor stopped: nothing moves any more, so this is the final word.
      const final = await compareClinic(bed, workloads);
      const desktop = workloads[0]!;
      const web = workloads[1]!;
      recordFigures({
        part: 'network',
        title: 'monitor (real time) through the fault proxy while both sides write',
        seconds: Math.round((Date.now() - started) / 1000),
        faults: { ...faults },
        rows: { desktop_written: desktop.written, web_written: web.written, lost: final.lost, duplicated: final.duplicated },
        checks: {
          'differing rows': final.differing,
          'rows on each side at the end': final.desktopRows,
          'connections reset': bed.proxy.resetsFired(),
          'proxy connections': bed.proxy.connections(),
          'seconds to converge after the faults': Math.round(waitedMs / 100) / 10,
          'web transactions retried after a deadlock': webWriter.retries().deadlock,
          'web inserts retried: id taken by an upload': webWriter.retries().duplicateKey,
          'web owner deletes refused: a desktop row pointed at the owner': web.refusedDeletes,
        },
      });
      expect(final, `${replay}: ${final.problems.join('\n')}`).toMatchObject({ lost: 0, duplicated: 0, differing: 0 });
      expect(final.desktopRows).toBe(final.webRows);
      expect(desktop.written + web.written).toBeGreaterThan(scaled(20, 300));
      expect(Object.values(faults).every((n) => n >= 1)).toBe(true);
      expect(bed.proxy.resetsFired()).toBeGreaterThanOrEqual(faults.reset);
    } finally {
      stopWriting = true;
      await writing?.catch(() => {});
      await desktopWriter.close();
      await webWriter.close();
    }
  }, scaled(150_000, 300_000));
});
