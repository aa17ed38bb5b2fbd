/**
 * The monitor loop over a link that goes down: cycles fail and back off while the desktop keeps
 * writing, nothing is lost, and everything flows once the server is reachable again.
 */
import { spawn } from 'node:child_process';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteDatabaseClient } from '../../src/client/index.js';
import { EpetsyncError } from '../../src/errors.js';
import { SyncEngine, type SyncRemote } from '../../src/sync/engine.js';
import { isTransient, retryDelayMs, runMonitor, type CycleReport } from '../../src/sync/monitor.js';
import { desktopWrite } from '../helpers/desktop-writer.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { PASSWORD, USER, createDesktopDb, openDesktop, startRemote, type Remote } from './fixture.js';

let remote: Remote;
let proxy: FaultProxy;

beforeAll(async () => {
  remote = await startRemote('epsmonloop');
  proxy = await startFaultProxy(remote.server.port);
});
afterAll(async () => {
  await proxy?.close();
  await remote?.close();
});

async function until(check: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > ms) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('runMonitor', () => {
  it('backs off while the server is unreachable, keeps the queue, and catches up when it is back', async () => {
    const path = createDesktopDb();
    const db = openDesktop(path);
    const client = new RemoteDatabaseClient({ url: proxy.url, username: USER, password: PASSWORD, nodeId: 'desk-net', retries: 0 });
    const engine = new SyncEngine({ db, remote: client });
    const reports: CycleReport[] = [];
    const stop = new AbortController();
    const running = runMonitor({ engine, remote: client, dbPath: path, intervalSeconds: 1, realTime: false, once: false, signal: stop.signal, onCycle: (r) => reports.push(r) });
    await until(() => reports.some((r) => r.ok), 10_000);

    await proxy.refuse();
    desktopWrite(path, [[["INSERT INTO clinic_species VALUES ('offline-1', 'Written offline')"]]]);
    await until(() => reports.some((r) => !r.ok), 10_000);
    desktopWrite(path, [[["INSERT INTO clinic_species VALUES ('offline-2', 'Still offline')"]]]);
    const failure = reports.find((r) => !r.ok)!;
    expect(failure).toMatchObject({ ok: false, code: 'EPS_CONNECT_REFUSED', retryInMs: 1000 });
    expect(db.prepare('SELECT count(*) FROM _epetsync_changelog').pluck().get()).toBe(2n);

    await proxy.accept();
    await until(async () => (await remote.sql(`SELECT code FROM clinic_species`)).length === 2, 15_000);
    stop.abort();
    const summary = await running;
    expect(summary.failures).toBeGreaterThanOrEqual(1);
    expect(summary.pushed).toBe(2);
    expect(db.prepare('SELECT count(*) FROM _epetsync_changelog').pluck().get()).toBe(0n);
    db.close();
    await client.close();
  });

  it('waits out a desktop write lock held past the busy timeout, then syncs what was written', async () => {
    const path = createDesktopDb();
    const db = new Database(path, { timeout: 100 });
    db.defaultSafeIntegers(true);
    const client = new RemoteDatabaseClient({ url: remote.url, username: USER, password: PASSWORD, nodeId: 'desk-busy' });
    const engine = new SyncEngine({ db, remote: client });
    await engine.prepare();
    // The desktop app holds its write lock for 2 s, longer than this connection waits.
    const holder = spawn('python3', ['-c', `
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
con.execute("INSERT INTO clinic_species VALUES ('held', 'Written under a long lock')")
print("locked", flush=True)
time.sleep(2)
con.execute("COMMIT")
`, path]);
    await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
    const reports: CycleReport[] = [];
    const stop = new AbortController();
    const running = runMonitor({ engine, remote: client, dbPath: path, intervalSeconds: 1, realTime: false, once: false, signal: stop.signal, onCycle: (r) => reports.push(r) });
    await until(async () => (await remote.sql(`SELECT 1 FROM clinic_species WHERE code = 'held'`)).length === 1, 15_000);
    stop.abort();
    await running;
    expect(reports.find((r) => !r.ok)).toMatchObject({ ok: false, code: 'SQLITE_BUSY' });
    expect(reports.at(-1)).toMatchObject({ ok: true });
    db.close();
    await client.close();
  });

  it('finishes the batch in flight when asked to stop, leaving nothing unacknowledged', async () => {
    const path = createDesktopDb();
    const db = openDesktop(path);
    const client = new RemoteDatabaseClient({ url: remote.url, username: USER, password: PASSWORD, nodeId: 'desk-stop' });
    const stop = new AbortController();
    let uploads = 0;
    // The stop request arrives while the upload is on the wire.
    const slow: SyncRemote = {
      nodeId: client.nodeId,
      info: (o) => client.info(o),
      changesSince: (cursor, o) => client.changesSince(cursor, o),
      allocateIds: (table, count, above, o) => client.allocateIds(table, count, above, o),
      upload: async (batch, o) => {
        uploads += 1;
        stop.abort();
        await new Promise((r) => setTimeout(r, 300));
        return client.upload(batch, o);
      },
    };
    const engine = new SyncEngine({ db, remote: slow, batchSize: 1 });
    await engine.prepare();
    desktopWrite(path, [[["INSERT INTO clinic_species VALUES ('s1', 'One')"], ["INSERT INTO clinic_species VALUES ('s2', 'Two')"]]]);
    const summary = await runMonitor({ engine, remote: slow, dbPath: path, intervalSeconds: 60, realTime: false, once: false, signal: stop.signal });
    expect(summary).toMatchObject({ cycles: 1, pushed: 1, stoppedBy: 'signal' });
    expect(uploads).toBe(1);
    expect(db.prepare('SELECT count(*) FROM _epetsync_outbox').pluck().get()).toBe(0n);
    expect(db.prepare('SELECT count(*) FROM _epetsync_changelog').pluck().get()).toBe(1n);
    expect((await remote.sql<{ code: string }>(`SELECT code FROM clinic_species WHERE code IN ('s1', 's2')`)).length).toBe(1);
    db.close();
    await client.close();
  });

  it('with --fix keeps retrying a refused login (re-authenticating each time) and syncs once it is accepted; without it, stops', async () => {
    const { AuthError } = await import('../../src/errors.js');
    const path = createDesktopDb();
    const db = openDesktop(path);
    const client = new RemoteDatabaseClient({ url: remote.url, username: USER, password: PASSWORD, nodeId: 'desk-auth' });
    let refusals = 2;
    // The account is refused twice (an administrator fixing it meanwhile), then accepted.
    const flaky: SyncRemote = {
      nodeId: client.nodeId,
      info: async (o) => {
        if (refusals > 0) {
          refusals -= 1;
          throw new AuthError('EPS_AUTH_FAILED', 'The server rejected the username and password');
        }
        return client.info(o);
      },
      changesSince: (cursor, o) => client.changesSince(cursor, o),
      upload: (batch, o) => client.upload(batch, o),
    };
    const strict = new SyncEngine({ db, remote: flaky });
    await expect(runMonitor({ engine: strict, remote: flaky, dbPath: path, intervalSeconds: 1, realTime: false, once: false, signal: new AbortController().signal })).rejects.toThrow('rejected the username');
    const stop = new AbortController();
    const reports: CycleReport[] = [];
    const engine = new SyncEngine({ db, remote: flaky });
    const running = runMonitor({ engine, remote: flaky, dbPath: path, intervalSeconds: 1, realTime: false, once: false, fix: true, signal: stop.signal, onCycle: (r) => reports.push(r) });
    await until(() => reports.some((r) => r.ok), 10_000);
    stop.abort();
    await running;
    expect(reports[0]).toMatchObject({ ok: false, code: 'EPS_AUTH_FAILED' });
    expect(reports.at(-1)).toMatchObject({ ok: true });
    db.close();
    await client.close();
  });

  it('ends with the error that stopped it in real-time mode, instead of waiting forever on the long poll and exiting 0 in silence', async () => {
    // Found by the network chaos test: a fatal cycle error left the long poll waiting for a cycle that never came.
    const path = createDesktopDb();
    const db = openDesktop(path);
    const client = new RemoteDatabaseClient({ url: remote.url, username: USER, password: PASSWORD, nodeId: 'desk-fatal' });
    class FailingEngine extends SyncEngine {
      cycles = 0;
      override async runCycle(signal?: AbortSignal): ReturnType<SyncEngine['runCycle']> {
        this.cycles += 1;
        if (this.cycles > 1) throw new EpetsyncError('EPS_INTERNAL', 'a fatal failure for the test');
        return super.runCycle(signal);
      }
    }
    const engine = new FailingEngine({ db, remote: client });
    const reports: CycleReport[] = [];
    const running = runMonitor({ engine, remote: client, dbPath: path, intervalSeconds: 60, realTime: true, once: false, signal: new AbortController().signal, longPollSeconds: 2, onCycle: (r) => reports.push(r) });
    const outcome = running.then(() => 'returned', (error: unknown) => (error instanceof Error ? error.message : String(error)));
    await until(() => reports.length > 0, 10_000);
    // A remote change wakes the loop through the long poll; that cycle fails for good.
    await remote.sql(`INSERT INTO clinic_species VALUES ('wake', 'Wakes the loop')`);
    const settled = await Promise.race([outcome, new Promise((r) => setTimeout(() => r('still waiting after 15 s'), 15_000))]);
    expect(settled).toBe('a fatal failure for the test');
    expect(engine.cycles).toBe(2);
    db.close();
    await client.close();
  });

  it('classifies failures: network, 5xx and a busy database are transient; auth only with --fix', async () => {
    const { ConnectionError, AuthError, ServerError, LocalDatabaseError } = await import('../../src/errors.js');
    expect(isTransient(new ConnectionError('EPS_CONNECT_REFUSED', 'x'), false)).toBe(true);
    expect(isTransient(new ServerError('EPS_SERVER_ERROR', 'x'), false)).toBe(true);
    expect(isTransient(new LocalDatabaseError('EPS_DB_BUSY', 'x'), false)).toBe(true);
    expect(isTransient(new AuthError('EPS_AUTH_FAILED', 'x'), false)).toBe(false);
    expect(isTransient(new AuthError('EPS_AUTH_FAILED', 'x'), true)).toBe(true);
    expect(isTransient(new LocalDatabaseError('EPS_DB_CORRUPT', 'x'), true)).toBe(false);
    expect([1, 2, 3, 7, 20].map(retryDelayMs)).toEqual([1000, 2000, 4000, 60_000, 60_000]);
  });
});
