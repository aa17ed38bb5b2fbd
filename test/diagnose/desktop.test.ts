/**
 * The desktop-app group and the WAL check, for real: a separate process holds the database open
 * in a read transaction (as the Vet Portal app does while a screen is open), the WAL grows past
 * it, diagnose names the process, --fix cannot checkpoint past it and says so, and once the
 * reader is gone --fix checkpoints and the next diagnose is clean.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { check, makeClinic } from './bed.js';

const children: ChildProcessWithoutNullStreams[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
});

/** Starts a node process that opens `db` and keeps a read transaction open until killed. */
async function startReader(db: string): Promise<ChildProcessWithoutNullStreams> {
  const betterSqlite = fileURLToPath(new URL('../../node_modules/better-sqlite3/lib/index.js', import.meta.url));
  const script = `const D = require(${JSON.stringify(betterSqlite)}); const db = new D(${JSON.stringify(db)}, { readonly: true });
    db.prepare('BEGIN').run(); db.prepare('SELECT count(*) FROM clinic_owner').get(); console.log('ready'); setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('reader did not start')), 10_000);
    child.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => reject(new Error(`reader exited ${code}`)));
  });
  return child;
}

describe('diagnose desktop', () => {
  it('names the process holding the database in a read transaction, and checkpoints the grown WAL once it is gone', async () => {
    const clinic = makeClinic('http://127.0.0.1:9');
    const reader = await startReader(clinic.db);
    const writer = new Database(clinic.db);
    writer.pragma('wal_autocheckpoint = 0');
    writer.exec('CREATE TABLE IF NOT EXISTS scratch (b BLOB)');
    const insert = writer.prepare('INSERT INTO scratch (b) VALUES (randomblob(1048576))');
    for (let i = 0; i < 36; i += 1) insert.run();
    expect(statSync(`${clinic.db}-wal`).size).toBeGreaterThan(32 * 1024 * 1024);

    const groups = ['--group', 'config,local,desktop'];
    const before = await clinic.diagnose(groups);
    const holders = check(before.doc, 'desktop.holders');
    expect(holders.status).toBe('ok');
    expect(holders.found).toContain(`pid ${reader.pid}`);
    const readers = check(before.doc, 'desktop.readers');
    expect(readers).toMatchObject({ status: 'warn', data: { readers: [reader.pid] } });
    expect(check(before.doc, 'db.wal-size')).toMatchObject({ status: 'warn', fixable: true });

    const blocked = await clinic.diagnose(['--fix', ...groups]);
    const attempt = blocked.doc.result.fixes.find((f) => f.id === 'db.wal-size');
    expect(attempt).toMatchObject({ outcome: 'failed', before: 'warn', after: 'warn' });
    expect(attempt!.action).toContain('a reader blocked the checkpoint');

    reader.kill('SIGKILL');
    await new Promise((r) => reader.once('exit', r));
    const fixed = await clinic.diagnose(['--fix', ...groups]);
    expect(fixed.doc.result.fixes.find((f) => f.id === 'db.wal-size')).toMatchObject({ outcome: 'fixed', before: 'warn', after: 'ok' });
    writer.close();
    const after = await clinic.diagnose(groups);
    expect(check(after.doc, 'db.wal-size').status).toBe('ok');
    expect(check(after.doc, 'desktop.readers').status).toBe('ok');
    expect(check(after.doc, 'desktop.holders')).toMatchObject({ status: 'ok', found: 'no other process has the database open' });
  });
});
