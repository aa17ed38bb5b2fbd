import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { backupFileName, formatStamp, listBackups, parseStamp, pruneBackups, takeBackup } from '../../src/db/index.js';
import { EpetsyncError } from '../../src/errors.js';
import { corruptPages, hashTree, makeClinicDb, tempDir } from './fixtures.js';

const BETTER_SQLITE3 = createRequire(import.meta.url).resolve('better-sqlite3');
const ACCOUNTS = 50;
const OPENING_BALANCE = 1000;

// Each transaction moves an amount between two accounts and appends to a ledger, so in any
// consistent snapshot the balances sum to ACCOUNTS * OPENING_BALANCE and ledger rows = counter.
const WRITER = `
const Database = require(process.argv[2]);
const db = new Database(process.argv[3], { timeout: 10000 });
db.pragma('journal_mode = wal');
const move = db.transaction((from, to, amount) => {
  db.prepare('UPDATE account SET balance = balance - ? WHERE id = ?').run(amount, from);
  db.prepare('UPDATE account SET balance = balance + ? WHERE id = ?').run(amount, to);
  db.prepare('INSERT INTO ledger (from_id, to_id, amount, memo) VALUES (?, ?, ?, ?)').run(from, to, amount, 'm'.repeat(300));
  db.prepare('UPDATE counter SET n = n + 1').run();
});
let commits = 0;
let stop = false;
process.stdin.on('end', () => { stop = true; });
process.stdin.resume();
function loop() {
  for (let i = 0; i < 20; i += 1) {
    const from = 1 + ((commits * 7) % ${ACCOUNTS});
    const to = 1 + ((commits * 13 + 5) % ${ACCOUNTS});
    move(from, to, 1 + (commits % 17));
    commits += 1;
    if (commits === 1) process.stdout.write('ready\\n');
  }
  if (stop) { db.close(); process.stdout.write('commits ' + commits + '\\n'); return; }
  setImmediate(loop);
}
loop();
`;

function bankDb(path: string): void {
  const db = new Database(path);
  db.pragma('journal_mode = wal');
  db.exec(`
    CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, filler BLOB);
    CREATE TABLE ledger (id INTEGER PRIMARY KEY AUTOINCREMENT, from_id INTEGER, to_id INTEGER, amount INTEGER, memo TEXT);
    CREATE TABLE counter (n INTEGER NOT NULL);
    INSERT INTO counter VALUES (0);
  `);
  const insert = db.prepare('INSERT INTO account (id, balance, filler) VALUES (?, ?, zeroblob(3000))');
  db.transaction(() => {
    for (let i = 1; i <= ACCOUNTS; i += 1) insert.run(i, OPENING_BALANCE);
  })();
  db.close();
}

const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
});

function startWriter(dir: string, db: string): { child: ChildProcess; ready: Promise<void>; done: Promise<number> } {
  const script = join(dir, 'writer.cjs');
  writeFileSync(script, WRITER);
  const child = spawn(process.execPath, [script, BETTER_SQLITE3, db], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(child);
  let out = '';
  let markReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => { markReady = resolve; });
  const done = new Promise<number>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready\n')) markReady();
    });
    child.on('close', (code) => {
      const m = /commits (\d+)/.exec(out);
      if (code === 0 && m) resolve(Number(m[1]));
      else reject(new Error(`writer exited with ${code}: ${out}`));
    });
  });
  return { child, ready, done };
}

async function failure(p: Promise<unknown>): Promise<EpetsyncError> {
  try {
    await p;
  } catch (error) {
    if (error instanceof EpetsyncError) return error;
    throw error;
  }
  throw new Error('expected an EpetsyncError');
}

describe('db/backup', () => {
  it('takes consistent, verified backups while another process commits in a loop', async () => {
    const dir = tempDir();
    const db = join(dir, 'bank.sqlite3');
    bankDb(db);
    const backupDir = join(dir, 'backups');
    const writer = startWriter(dir, db);
    await writer.ready;
    const seen: number[] = [];
    let stamp = Date.parse('2026-11-25T10:15:00.000Z');
    for (let i = 0; i < 6; i += 1) {
      const result = await takeBackup({ databasePath: db, backupDir, busyTimeoutMs: 10_000, now: () => new Date((stamp += 1000)) });
      expect(result.integrity.ok).toBe(true);
      expect(result.journalMode).toBe('wal');
      // Read-write on purpose: closing it removes the -wal/-shm a WAL-mode copy needs while open.
      const copy = new Database(result.backup.path, { fileMustExist: true });
      expect(copy.pragma('integrity_check', { simple: true })).toBe('ok');
      expect(copy.prepare('SELECT sum(balance) FROM account').pluck().get()).toBe(ACCOUNTS * OPENING_BALANCE);
      const counter = copy.prepare('SELECT n FROM counter').pluck().get() as number;
      expect(copy.prepare('SELECT count(*) FROM ledger').pluck().get()).toBe(counter);
      seen.push(counter);
      copy.close();
      await new Promise((r) => setTimeout(r, 30));
    }
    writer.child.stdin!.end();
    const commits = await writer.done;
    expect(commits).toBeGreaterThan(seen[0]!);
    // The writer kept committing between backups: the snapshots are not all the same.
    expect(new Set(seen).size).toBeGreaterThan(1);
    expect(readdirSync(backupDir).filter((f) => f.includes('.partial') || f.endsWith('-wal') || f.endsWith('-shm'))).toEqual([]);
  });

  it('names backups <db>-<UTC stamp with ms>.sqlite3 and lists them newest first with size and age', async () => {
    const dir = tempDir();
    const db = makeClinicDb(join(dir, 'db.sqlite3'), { owners: 5 });
    const backupDir = join(dir, 'backups');
    const first = await takeBackup({ databasePath: db, backupDir, now: () => new Date('2026-11-25T10:15:00.123Z') });
    expect(first.backup.file).toBe('db-20261125T101500123Z.sqlite3');
    expect(first.backup.takenAt).toBe('2026-11-25T10:15:00.123Z');
    // Same millisecond: the second one moves on by 1 ms instead of overwriting.
    const second = await takeBackup({ databasePath: db, backupDir, now: () => new Date('2026-11-25T10:15:00.123Z') });
    expect(second.backup.file).toBe('db-20261125T101500124Z.sqlite3');
    const list = listBackups(db, backupDir, new Date('2026-11-25T10:16:00.124Z'));
    expect(list.map((b) => [b.file, b.ageSeconds])).toEqual([
      ['db-20261125T101500124Z.sqlite3', 60],
      ['db-20261125T101500123Z.sqlite3', 60.001],
    ]);
    expect(list[0]!.sizeBytes).toBe(first.pages * first.pageSize);
    expect(formatStamp(new Date('2026-01-02T03:04:05.006Z'))).toBe('20260102T030405006Z');
    expect(parseStamp('20260102T030405006Z')?.toISOString()).toBe('2026-01-02T03:04:05.006Z');
    expect(parseStamp('20261341T000000000Z')).toBeUndefined();
    expect(backupFileName('/x/clinic.data.db', new Date('2026-01-02T03:04:05.006Z'))).toBe('clinic.data-20260102T030405006Z.sqlite3');
  });

  it('rotation keeps exactly N of its own backups and never touches other files', async () => {
    const dir = tempDir();
    const db = makeClinicDb(join(dir, 'db.sqlite3'), { owners: 5 });
    const backupDir = join(dir, 'backups');
    mkdirSync(backupDir);
    const others = ['notes.txt', 'db-manual-copy.sqlite3', 'db-20200101T000000000Z.sqlite3.partial', 'other-20200101T000000000Z.sqlite3', 'db-2020.sqlite3'];
    for (const f of others) writeFileSync(join(backupDir, f), 'keep me');
    let t = Date.parse('2026-11-25T00:00:00.000Z');
    const taken: string[] = [];
    for (let i = 0; i < 5; i += 1) taken.push((await takeBackup({ databasePath: db, backupDir, now: () => new Date((t += 60_000)) })).backup.file);
    const result = await takeBackup({ databasePath: db, backupDir, keep: 3, now: () => new Date((t += 60_000)) });
    expect(result.kept).toBe(3);
    expect(result.removed.map((r) => r.file)).toEqual([taken[2], taken[1], taken[0]]);
    expect(listBackups(db, backupDir).map((b) => b.file)).toEqual([result.backup.file, taken[4], taken[3]]);
    for (const f of others) expect(existsSync(join(backupDir, f))).toBe(true);
    expect(pruneBackups(db, backupDir, 1).removed).toHaveLength(2);
    expect(listBackups(db, backupDir)).toHaveLength(1);
    expect(() => pruneBackups(db, backupDir, 0)).toThrow(RangeError);
  });

  it('raises EPS_BACKUP_DIR naming a backup folder under a regular file, and writes nothing', async () => {
    const dir = tempDir();
    const db = makeClinicDb(join(dir, 'db.sqlite3'), { owners: 5 });
    writeFileSync(join(dir, 'blocker'), 'a file, not a folder');
    const backupDir = join(dir, 'blocker', 'backups');
    const before = hashTree(dir);
    const error = await failure(takeBackup({ databasePath: db, backupDir }));
    expect(error.code).toBe('EPS_BACKUP_DIR');
    expect(error.message).toBe(`Cannot create the backup folder ${backupDir} (a file is in the way)`);
    expect(error.hint).toBe('Set database.backup_dir in config.json to a folder epetsync can create and write.');
    expect(hashTree(dir)).toEqual(before);
  });

  it('deletes a copy that fails integrity_check, reports the corrupt original and leaves no folder behind', async () => {
    const dir = tempDir();
    const db = makeClinicDb(join(dir, 'db.sqlite3'), { owners: 300 });
    corruptPages(db, 3);
    const before = hashTree(dir);
    const error = await failure(takeBackup({ databasePath: db, backupDir: join(dir, 'new', 'backups') }));
    expect(error.code).toBe('EPS_DB_CORRUPT');
    expect(error.message).toMatch(new RegExp(`^Database ${db.replace(/\./g, '\\.')} is corrupt \\(.+\\); no backup was kept$`));
    expect(hashTree(dir)).toEqual(before);
  });

  it('reports a missing database without creating the backup folder', async () => {
    const dir = tempDir();
    const error = await failure(takeBackup({ databasePath: join(dir, 'db.sqlite3'), backupDir: join(dir, 'backups') }));
    expect(error.code).toBe('EPS_DB_NOT_FOUND');
    expect(hashTree(dir)).toEqual({});
  });
});
