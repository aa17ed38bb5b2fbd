import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { corruptPages, errorLines, hashTree, makeClinicDb, makeClinicFolder, tempDir } from '../db/fixtures.js';

function kb(bytes: number): string {
  return `${(bytes / 1024).toFixed(1)} KB`;
}

describe('status', () => {
  it('prints path, size, journal mode, checks, backups and row counts, and changes nothing', async () => {
    const clinic = makeClinicFolder();
    makeClinicDb(clinic.db, { owners: 5 });
    const size = statSync(clinic.db).size;
    const before = hashTree(clinic.dir);
    const run = await runCli(['status', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(
      [
        `Database       ${clinic.db}`,
        `Size           ${kb(size)}, ${size / 4096} pages of 4096 B`,
        'Journal mode   delete',
        'Integrity      ok (quick_check)',
        'Foreign keys   ok',
        `Newest backup  none in ${clinic.backupDir} (take one with "epetsync backup")`,
        'Sync           not set up (run "epetsync monitor --once" to start syncing)',
        '',
        'Table               Rows',
        'clinic_appointment  5',
        'clinic_owner        5',
        'clinic_pet          5',
        '',
      ].join('\n'),
    );
    expect(hashTree(clinic.dir)).toEqual(before);
  });

  it('--json: documents the database, checks, newest backup and tables', async () => {
    const clinic = makeClinicFolder();
    makeClinicDb(clinic.db, { owners: 5, journalMode: 'wal' });
    const raw = new Database(clinic.db);
    raw.pragma('foreign_keys = OFF');
    raw.exec('DELETE FROM clinic_owner WHERE id = 4');
    raw.close();
    expect((await runCli(['backup', '--config', clinic.config], { cwd: clinic.dir })).code).toBe(0);
    const run = await runCli(['--json', 'status', '--deep', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout) as { result: { backups: { newest: { file: string } } } };
    expect(doc).toEqual({
      ok: true,
      command: 'epetsync status',
      result: {
        database: {
          path: clinic.db,
          sizeBytes: statSync(clinic.db).size,
          walBytes: 0,
          totalBytes: statSync(clinic.db).size,
          journalMode: 'wal',
          pageSize: 4096,
          pageCount: statSync(clinic.db).size / 4096,
          sqliteVersion: expect.stringMatching(/^3\.\d+\.\d+$/),
        },
        integrity: { check: 'integrity_check', ok: true, messages: [], tables: [], truncated: false },
        foreignKeys: { ok: false, count: 1, byTable: { clinic_pet: 1 }, violations: [{ table: 'clinic_pet', rowid: 4, parent: 'clinic_owner', fkid: 0 }] },
        backups: {
          dir: clinic.backupDir,
          count: 1,
          newest: {
            file: expect.stringMatching(/^db-\d{8}T\d{9}Z\.sqlite3$/),
            path: join(clinic.backupDir, doc.result.backups.newest.file),
            sizeBytes: statSync(join(clinic.backupDir, doc.result.backups.newest.file)).size,
            takenAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
            ageSeconds: expect.any(Number),
          },
        },
        tables: [
          { name: 'clinic_appointment', rows: 5 },
          { name: 'clinic_owner', rows: 4 },
          { name: 'clinic_pet', rows: 5 },
        ],
        sync: {
          captureInstalled: false,
          cursor: null,
          pending: 0,
          oldestPending: null,
          unacknowledgedBatches: 0,
          quarantined: 0,
          conflicts: 0,
          lastCycle: null,
          monitor: { running: false, pid: null, lock: null },
        },
      },
    });
  });

  it('exits 1 and lists the problems when the integrity check fails, changing nothing', async () => {
    const clinic = makeClinicFolder();
    makeClinicDb(clinic.db, { owners: 300 });
    corruptPages(clinic.db, 3);
    const before = hashTree(clinic.dir);
    const run = await runCli(['status', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/^Integrity      FAILED \(quick_check\): \d+\+? problem\(s\) in clinic_\w+/m);
    const json = await runCli(['--json', 'status', '--config', clinic.config], { cwd: clinic.dir });
    expect(json.code).toBe(1);
    const doc = JSON.parse(json.stdout) as { ok: boolean; result: { integrity: { ok: boolean; messages: string[]; tables: string[] } } };
    expect(doc.ok).toBe(false);
    expect(doc.result.integrity.ok).toBe(false);
    expect(doc.result.integrity.messages.length).toBeGreaterThan(0);
    expect(doc.result.integrity.tables.length).toBeGreaterThan(0);
    expect(hashTree(clinic.dir)).toEqual(before);
  });

  it('exits 5 with EPS_DB_CORRUPT when the schema itself is unreadable', async () => {
    const clinic = makeClinicFolder();
    makeClinicDb(clinic.db, { owners: 5 });
    const buf = readFileSync(clinic.db);
    buf.fill(0x5a, 100, 4096);
    writeFileSync(clinic.db, buf);
    const before = hashTree(clinic.dir);
    const run = await runCli(['status', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(5);
    expect(run.stdout).toBe('');
    expect(errorLines(run.stderr)).toEqual([
      `Error: Database ${clinic.db} is corrupt: database disk image is malformed`,
      'Try: Restore the newest good backup with "epetsync restore --latest" (the damaged file is kept beside it).',
    ]);
    expect(hashTree(clinic.dir)).toEqual(before);
  });

  it('exits 2 when no config is found, changing nothing', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'db.sqlite3'), '');
    const before = hashTree(dir);
    const run = await runCli(['status'], { cwd: dir });
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(errorLines(run.stderr)).toEqual([
      `Error: No config file found (looked for ${join(dir, 'config.json')}, ${join(dir, 'vet_desktop_app', 'config.json')})`,
      'Try: Pass --config <path>, set EPETSYNC_CONFIG, or run epetsync from the folder that holds config.json.',
    ]);
    expect(hashTree(dir)).toEqual(before);
  });

  it('exits 2 when the config cannot be read (a directory at its path: tests run as root, so chmod would not stop a read)', async () => {
    const clinic = makeClinicFolder();
    makeClinicDb(clinic.db, { owners: 2 });
    rmSync(clinic.config);
    mkdirSync(clinic.config);
    const before = hashTree(clinic.dir);
    const run = await runCli(['status', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(2);
    expect(errorLines(run.stderr)).toEqual([`Error: Config path ${clinic.config} is a directory, not a file`, 'Try: Point --config at the config.json file itself.']);
    expect(hashTree(clinic.dir)).toEqual(before);
  });

  it('exits 5 with EPS_DB_BUSY when the app holds its lock past database.busy_timeout_ms', async () => {
    const clinic = makeClinicFolder({ busy_timeout_ms: 100 });
    makeClinicDb(clinic.db, { owners: 2 });
    const app = new Database(clinic.db);
    app.exec('BEGIN EXCLUSIVE');
    try {
      const run = await runCli(['status', '--config', clinic.config], { cwd: clinic.dir });
      expect(run.code).toBe(5);
      expect(errorLines(run.stderr)).toEqual([
        `Error: Database ${clinic.db} is locked by another process (waited 100 ms)`,
        'Try: Wait for the Vet Portal app to finish writing, or raise database.busy_timeout_ms in config.json.',
      ]);
    } finally {
      app.exec('ROLLBACK');
      app.close();
    }
  });

  it('names a Windows database path as such when run elsewhere (exit 2)', async () => {
    const clinic = makeClinicFolder({ path: 'C:\\epetcare\\db.sqlite3' });
    const before = hashTree(clinic.dir);
    const run = await runCli(['status', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(errorLines(run.stderr)).toEqual([
      'warn: database.path is a Windows path (C:\\epetcare\\db.sqlite3); it can only be used on Windows',
      `Error: database.path is a Windows path (C:\\epetcare\\db.sqlite3) but epetsync is running on ${process.platform}`,
      'Try: Set database.path to the file\'s path on this machine, or set EPETSYNC_DB for this run.',
    ]);
    expect(hashTree(clinic.dir)).toEqual(before);
  });

  it('exits 5 when the database is missing, a directory, or not SQLite, changing nothing', async () => {
    const clinic = makeClinicFolder();
    let run = await runCli(['status', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(5);
    expect(errorLines(run.stderr)).toEqual([
      `Error: Database file ${clinic.db} does not exist`,
      'Try: Check database.path in config.json (or EPETSYNC_DB); epetsync never creates an empty database in its place.',
    ]);

    mkdirSync(clinic.db);
    let before = hashTree(clinic.dir);
    run = await runCli(['status', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(5);
    expect(errorLines(run.stderr)).toEqual([
      `Error: Database path ${clinic.db} is a directory, not an SQLite file`,
      'Try: Check database.path in config.json (or EPETSYNC_DB): it must name the .sqlite3 file itself, not its folder.',
    ]);
    expect(hashTree(clinic.dir)).toEqual(before);

    rmSync(clinic.db, { recursive: true });
    writeFileSync(clinic.db, 'id,name\n1,Rex\n');
    before = hashTree(clinic.dir);
    run = await runCli(['status', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(5);
    expect(errorLines(run.stderr)).toEqual([
      `Error: Database file ${clinic.db} is not an SQLite database (its first bytes are not "SQLite format 3")`,
      'Try: Check database.path in config.json (or EPETSYNC_DB): it points at a file of another kind.',
    ]);
    expect(hashTree(clinic.dir)).toEqual(before);

    const json = await runCli(['--json', 'status', '--config', clinic.config], { cwd: clinic.dir });
    expect(json.code).toBe(5);
    expect(json.stderr).toBe('');
    expect(JSON.parse(json.stdout)).toEqual({
      ok: false,
      command: 'epetsync status',
      error: {
        code: 'EPS_DB_NOT_SQLITE',
        message: `Database file ${clinic.db} is not an SQLite database (its first bytes are not "SQLite format 3")`,
        hint: 'Check database.path in config.json (or EPETSYNC_DB): it points at a file of another kind.',
        details: { path: clinic.db },
      },
    });
  });
});
