import { mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { corruptPages, errorLines, hashTree, makeClinicDb, makeClinicFolder, tempDir } from '../db/fixtures.js';

const BACKUP_NAME = /^db-\d{8}T\d{9}Z\.sqlite3$/;

describe('backup', () => {
  it('writes a verified backup and says where, how big and how long', async () => {
    const clinic = makeClinicFolder();
    makeClinicDb(clinic.db, { owners: 20 });
    const run = await runCli(['backup', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const files = readdirSync(clinic.backupDir);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(BACKUP_NAME);
    const path = join(clinic.backupDir, files[0]!);
    const pages = statSync(path).size / 4096;
    const lines = run.stdout.split('\n');
    expect(lines[0]).toBe(`Backup written: ${path}`);
    expect(lines[1]).toMatch(new RegExp(`^  \\d+\\.\\d KB, ${pages} pages, integrity_check ok, \\d+ ms$`));
    expect(lines.slice(2)).toEqual(['Rotation: 1 backup(s) kept (--keep 10), none removed', '']);
    // The backup API rewrites header counters, so compare what the files hold, not their bytes.
    const dump = (file: string): unknown => {
      const db = new Database(file, { readonly: true, fileMustExist: true });
      try {
        return ['clinic_owner', 'clinic_pet', 'clinic_appointment'].map((t) => db.prepare(`SELECT * FROM ${t} ORDER BY id`).all());
      } finally {
        db.close();
      }
    };
    expect(dump(path)).toEqual(dump(clinic.db));
  });

  it('--keep N rotates to exactly N and lists what it removed; --json shape', async () => {
    const clinic = makeClinicFolder({ backup_keep: 5 });
    makeClinicDb(clinic.db, { owners: 5 });
    mkdirSync(clinic.backupDir);
    writeFileSync(join(clinic.backupDir, 'README.txt'), 'not a backup');
    for (let i = 0; i < 4; i += 1) expect((await runCli(['backup', '--config', clinic.config], { cwd: clinic.dir })).code).toBe(0);
    const before = readdirSync(clinic.backupDir).filter((f) => BACKUP_NAME.test(f)).sort();
    expect(before).toHaveLength(4);
    const run = await runCli(['--json', 'backup', '--keep', '2', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout) as { result: { backup: { file: string } } };
    const file = doc.result.backup.file;
    const entry = (name: string): Record<string, unknown> => ({
      file: name,
      path: join(clinic.backupDir, name),
      sizeBytes: statSync(clinic.db).size,
      takenAt: expect.stringMatching(/Z$/),
      ageSeconds: expect.any(Number),
    });
    expect(doc).toEqual({
      ok: true,
      command: 'epetsync backup',
      result: {
        database: clinic.db,
        backup: entry(file),
        pages: statSync(clinic.db).size / 4096,
        pageSize: 4096,
        journalMode: 'delete',
        durationMs: expect.any(Number),
        integrity: { check: 'integrity_check', ok: true, messages: [], tables: [], truncated: false },
        removed: [before[2]!, before[1]!, before[0]!].map(entry),
        kept: 2,
        keep: 2,
        warnings: [],
      },
    });
    expect(readdirSync(clinic.backupDir).sort()).toEqual(['README.txt', before[3]!, file].sort());
  });

  it('copies a WAL-mode database with its uncheckpointed commits and leaves no -wal/-shm in the backup folder', async () => {
    const clinic = makeClinicFolder();
    makeClinicDb(clinic.db, { owners: 5, journalMode: 'wal' });
    const app = new Database(clinic.db);
    app.pragma('wal_autocheckpoint = 0');
    app.exec("INSERT INTO clinic_owner (name, email) VALUES ('In Wal', 'wal@example.com')");
    try {
      const run = await runCli(['backup', '--config', clinic.config], { cwd: clinic.dir });
      expect(run.code).toBe(0);
    } finally {
      app.close();
    }
    const files = readdirSync(clinic.backupDir);
    expect(files).toHaveLength(1);
    const copy = new Database(join(clinic.backupDir, files[0]!), { fileMustExist: true });
    expect(copy.prepare('SELECT count(*) FROM clinic_owner').pluck().get()).toBe(6);
    copy.close();
  });

  it('exits 5 with EPS_BACKUP_DIR when the backup folder cannot be created, changing nothing', async () => {
    const clinic = makeClinicFolder({ backup_dir: 'blocker/backups' });
    makeClinicDb(clinic.db, { owners: 5 });
    writeFileSync(join(clinic.dir, 'blocker'), 'a file where a folder should be');
    const before = hashTree(clinic.dir);
    const run = await runCli(['backup', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(5);
    expect(run.stdout).toBe('');
    expect(errorLines(run.stderr)).toEqual([
      `Error: Cannot create the backup folder ${join(clinic.dir, 'blocker', 'backups')} (a file is in the way)`,
      'Try: Set database.backup_dir in config.json to a folder epetsync can create and write.',
    ]);
    expect(hashTree(clinic.dir)).toEqual(before);
    const json = await runCli(['--json', 'backup', '--config', clinic.config], { cwd: clinic.dir });
    expect(json.code).toBe(5);
    expect(JSON.parse(json.stdout)).toEqual({
      ok: false,
      command: 'epetsync backup',
      error: {
        code: 'EPS_BACKUP_DIR',
        message: `Cannot create the backup folder ${join(clinic.dir, 'blocker', 'backups')} (a file is in the way)`,
        hint: 'Set database.backup_dir in config.json to a folder epetsync can create and write.',
        details: { backupDir: join(clinic.dir, 'blocker', 'backups'), errno: 'ENOTDIR' },
      },
    });
  });

  it('exits 5 with EPS_DB_CORRUPT for a corrupt database and keeps no backup, changing nothing', async () => {
    const clinic = makeClinicFolder();
    makeClinicDb(clinic.db, { owners: 300 });
    corruptPages(clinic.db, 3);
    const before = hashTree(clinic.dir);
    const run = await runCli(['backup', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(5);
    expect(run.stdout).toBe('');
    const lines = errorLines(run.stderr);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(new RegExp(`^Error: Database ${clinic.db.replace(/\./g, '\\.')} is corrupt \\(.+\\); no backup was kept$`));
    expect(lines[1]).toBe('Try: Restore the newest good backup with "epetsync restore --latest" (the damaged file is kept beside it).');
    expect(hashTree(clinic.dir)).toEqual(before);
  });

  it('exits 5 for a directory or a non-SQLite file at the database path, and 2 for a missing config, changing nothing', async () => {
    const clinic = makeClinicFolder();
    mkdirSync(clinic.db);
    let before = hashTree(clinic.dir);
    let run = await runCli(['backup', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(5);
    expect(errorLines(run.stderr)[0]).toBe(`Error: Database path ${clinic.db} is a directory, not an SQLite file`);
    expect(hashTree(clinic.dir)).toEqual(before);

    rmSync(clinic.db, { recursive: true });
    writeFileSync(clinic.db, 'PK\u0003\u0004 a zip file, not a database');
    before = hashTree(clinic.dir);
    run = await runCli(['backup', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(5);
    expect(errorLines(run.stderr)).toEqual([
      `Error: Database file ${clinic.db} is not an SQLite database (its first bytes are not "SQLite format 3")`,
      'Try: Check database.path in config.json (or EPETSYNC_DB): it points at a file of another kind.',
    ]);
    expect(hashTree(clinic.dir)).toEqual(before);

    const empty = tempDir();
    run = await runCli(['backup'], { cwd: empty });
    expect(run.code).toBe(2);
    expect(errorLines(run.stderr)[0]).toBe(`Error: No config file found (looked for ${join(empty, 'config.json')}, ${join(empty, 'vet_desktop_app', 'config.json')})`);
    expect(hashTree(empty)).toEqual({});
  });

  it('refuses --keep 0 with a usage error before touching anything', async () => {
    const clinic = makeClinicFolder();
    makeClinicDb(clinic.db, { owners: 2 });
    const before = hashTree(clinic.dir);
    const run = await runCli(['backup', '--keep', '0', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(2);
    expect(errorLines(run.stderr)).toEqual(['Error: --keep must be 1 or more, got 0', 'Try: Pass --keep 1 or more: rotation never deletes the backup just taken.']);
    expect(hashTree(clinic.dir)).toEqual(before);
  });
});
