import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { BIN, runCli, type CliRun } from '../helpers/cli.js';
import { corruptPages, errorLines, hashFile, hashTree, makeClinicDb, makeClinicFolder, type ClinicFolder } from '../db/fixtures.js';

const STAMP = '\\d{8}T\\d{9}Z';

/** Builds a clinic with one backup, then changes the live database so a restore is visible. */
async function clinicWithBackup(owners = 10): Promise<ClinicFolder & { backup: string }> {
  const clinic = makeClinicFolder();
  makeClinicDb(clinic.db, { owners });
  const run = await runCli(['backup', '--config', clinic.config], { cwd: clinic.dir });
  expect(run.code).toBe(0);
  const [file] = readdirSync(clinic.backupDir);
  const db = new Database(clinic.db);
  db.exec('DELETE FROM clinic_appointment');
  db.close();
  return { ...clinic, backup: join(clinic.backupDir, file!) };
}

/** Runs the binary on a pseudo-terminal (util-linux `script`) and types `answer` at the prompt. */
function runOnTerminal(args: string[], cwd: string, answer: string): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const command = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
    // Output treats CI=true as "not interactive", so the prompt needs it unset.
    const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
    delete env.CI;
    const child = spawn('script', ['-qec', command, '/dev/null'], { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes('[y/N]') && !child.stdin.writableEnded) child.stdin.end(`${answer}\n`);
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr: '' }));
  });
}

describe('restore', () => {
  it('--latest --yes replaces the database with the backup and names where the old file went', async () => {
    const clinic = await clinicWithBackup();
    const backupHash = hashFile(clinic.backup);
    const oldHash = hashFile(clinic.db);
    const run = await runCli(['restore', '--latest', '--yes', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const aside = readdirSync(clinic.dir).filter((f) => f.startsWith('db.sqlite3.replaced-'));
    expect(aside).toHaveLength(1);
    expect(aside[0]).toMatch(new RegExp(`^db\\.sqlite3\\.replaced-${STAMP}$`));
    expect(run.stdout).toMatch(
      new RegExp(
        [
          `^Restored ${clinic.db.replace(/\./g, '\\.')}`,
          `  from ${clinic.backup.replace(/\./g, '\\.')} \\(\\d+\\.\\d KB, integrity_check ok, identical to the backup\\)`,
          'The previous files were moved aside \\(delete them once you are sure\\):',
          `  ${clinic.db.replace(/\./g, '\\.')} -> ${join(clinic.dir, aside[0]!).replace(/\./g, '\\.')}`,
          '$',
        ].join('\n'),
      ),
    );
    expect(hashFile(clinic.db)).toBe(backupHash);
    expect(hashFile(join(clinic.dir, aside[0]!))).toBe(oldHash);
    expect(hashFile(clinic.backup)).toBe(backupHash);
  });

  it('marks a restored database that had been syncing, so the monitor brings back what it sent after the backup', async () => {
    const clinic = makeClinicFolder();
    makeClinicDb(clinic.db, { owners: 3 });
    // A desktop that syncs: epetsync's meta table holds its pull cursor.
    const live = new Database(clinic.db);
    live.exec(`CREATE TABLE _epetsync_meta (key TEXT PRIMARY KEY, value TEXT); INSERT INTO _epetsync_meta VALUES ('pull_cursor', 'c1.100.1')`);
    live.close();
    expect((await runCli(['backup', '--config', clinic.config], { cwd: clinic.dir })).code).toBe(0);
    const backup = join(clinic.backupDir, readdirSync(clinic.backupDir)[0]!);
    const backupHash = hashFile(backup);
    const run = await runCli(['--json', 'restore', '--latest', '--yes', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout).result).toMatchObject({ restoredFrom: backup, sha256: backupHash, markedForSyncReplay: true });
    const restored = new Database(clinic.db, { readonly: true });
    expect(restored.prepare(`SELECT key FROM _epetsync_meta ORDER BY key`).pluck().all()).toEqual(['pull_cursor', 'restored_from_backup']);
    restored.close();
    expect(hashFile(backup)).toBe(backupHash);
    const human = await runCli(['restore', '--latest', '--yes', '--config', clinic.config], { cwd: clinic.dir });
    expect(human.stdout).toContain('Marked for sync: the next monitor cycle first brings back what this desktop sent after the backup was taken.');
  });

  it('--json: restores a FILE given relative to the cwd and reports every file moved aside', async () => {
    const clinic = await clinicWithBackup();
    writeFileSync(`${clinic.db}-journal`, '');
    const run = await runCli(['--json', 'restore', relative(clinic.dir, clinic.backup), '--yes', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout) as { result: { replaced: Array<{ to: string }> } };
    const stamp = /replaced-(\d{8}T\d{9}Z)$/.exec(doc.result.replaced[0]!.to)![1]!;
    expect(doc).toEqual({
      ok: true,
      command: 'epetsync restore',
      result: {
        database: clinic.db,
        restoredFrom: clinic.backup,
        sizeBytes: expect.any(Number),
        sha256: hashFile(clinic.backup),
        journalMode: 'delete',
        integrity: { check: 'integrity_check', ok: true, messages: [], tables: [], truncated: false },
        replaced: [
          { from: clinic.db, to: `${clinic.db}.replaced-${stamp}` },
          { from: `${clinic.db}-journal`, to: `${clinic.db}-journal.replaced-${stamp}` },
        ],
        durationMs: expect.any(Number),
        markedForSyncReplay: false,
      },
    });
    const db = new Database(clinic.db, { readonly: true });
    expect(db.prepare('SELECT count(*) FROM clinic_appointment').pluck().get()).toBe(10);
    db.close();
  });

  it('refuses without --yes when not on a terminal, exit 2, changing nothing', async () => {
    const clinic = await clinicWithBackup();
    const before = hashTree(clinic.dir);
    const run = await runCli(['restore', '--latest', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(errorLines(run.stderr)).toEqual([
      `Error: Refusing to replace ${clinic.db} with ${clinic.backup} without confirmation (not on a terminal)`,
      'Try: Pass --yes to confirm, e.g. "epetsync restore --latest --yes".',
    ]);
    expect(hashTree(clinic.dir)).toEqual(before);
    const json = await runCli(['--json', 'restore', '--latest', '--config', clinic.config], { cwd: clinic.dir });
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stdout)).toEqual({
      ok: false,
      command: 'epetsync restore',
      error: {
        code: 'EPS_RESTORE_REFUSED',
        message: `Refusing to replace ${clinic.db} with ${clinic.backup} without confirmation (not on a terminal)`,
        hint: 'Pass --yes to confirm, e.g. "epetsync restore --latest --yes".',
        details: { database: clinic.db, backup: clinic.backup },
      },
    });
    expect(hashTree(clinic.dir)).toEqual(before);
  });

  it('asks on a terminal: "n" changes nothing, "y" restores', async () => {
    const clinic = await clinicWithBackup();
    const before = hashTree(clinic.dir);
    const no = await runOnTerminal(['restore', '--latest', '--config', clinic.config], clinic.dir, 'n');
    expect(no.stdout).toContain(`Replace ${clinic.db} with ${clinic.backup}? The current file is moved aside, not deleted. [y/N]`);
    expect(no.stdout).toContain('Error: Restore cancelled at the prompt; nothing was changed');
    expect(no.code).toBe(2);
    expect(hashTree(clinic.dir)).toEqual(before);
    const yes = await runOnTerminal(['restore', '--latest', '--config', clinic.config], clinic.dir, 'y');
    expect(yes.stdout).toContain(`Restored ${clinic.db}`);
    expect(yes.code).toBe(0);
    expect(hashFile(clinic.db)).toBe(hashFile(clinic.backup));
  });

  it('exits 5 for a corrupt backup, changing nothing', async () => {
    const clinic = await clinicWithBackup(300);
    corruptPages(clinic.backup, 3);
    const before = hashTree(clinic.dir);
    const run = await runCli(['restore', '--latest', '--yes', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(5);
    expect(run.stdout).toBe('');
    const lines = errorLines(run.stderr);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(new RegExp(`^Error: Backup ${clinic.backup.replace(/\./g, '\\.')} is corrupt \\(.+\\); nothing was changed$`));
    expect(lines[1]).toBe('Try: Restore an older backup instead: name its file, e.g. "epetsync restore <file> --yes".');
    expect(hashTree(clinic.dir)).toEqual(before);
  });

  it('exits 5 when there is no backup or the named one does not exist, changing nothing', async () => {
    const clinic = makeClinicFolder();
    makeClinicDb(clinic.db, { owners: 2 });
    const before = hashTree(clinic.dir);
    let run = await runCli(['restore', '--latest', '--yes', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(5);
    expect(errorLines(run.stderr)).toEqual([
      `Error: No backup of ${clinic.db} found in ${clinic.backupDir}`,
      'Try: Take one with "epetsync backup", or name a backup file to restore.',
    ]);
    run = await runCli(['restore', 'backups/db-20260101T000000000Z.sqlite3', '--yes', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(5);
    expect(errorLines(run.stderr)).toEqual([
      `Error: Backup file ${join(clinic.backupDir, 'db-20260101T000000000Z.sqlite3')} does not exist`,
      `Try: Name an existing backup (they are in ${clinic.backupDir}) or use --latest.`,
    ]);
    expect(hashTree(clinic.dir)).toEqual(before);
  });

  it('exits 5 for a directory at the database path, changing nothing', async () => {
    const clinic = await clinicWithBackup();
    const backup = join(clinic.root, 'kept.sqlite3');
    copyFileSync(clinic.backup, backup);
    rmSync(clinic.db);
    mkdirSync(clinic.db);
    const before = hashTree(clinic.dir);
    // With or without --yes: a restore that cannot work is refused before any question.
    for (const yes of [['--yes'], []]) {
      const run = await runCli(['restore', backup, ...yes, '--config', clinic.config], { cwd: clinic.dir });
      expect(run.code).toBe(5);
      expect(errorLines(run.stderr)).toEqual([
        `Error: Database path ${clinic.db} is a directory, not an SQLite file`,
        'Try: Check database.path in config.json (or EPETSYNC_DB): it must name the .sqlite3 file itself, not its folder.',
      ]);
    }
    expect(hashTree(clinic.dir)).toEqual(before);
  });

  it('exits 2 for a missing or unreadable config and for FILE with --latest or neither, changing nothing', async () => {
    const clinic = await clinicWithBackup();
    const before = hashTree(clinic.dir);
    let run = await runCli(['restore', '--latest', '--yes'], { cwd: clinic.root });
    expect(run.code).toBe(2);
    expect(errorLines(run.stderr)[0]).toBe(`Error: No config file found (looked for ${join(clinic.root, 'config.json')}, ${join(clinic.root, 'vet_desktop_app', 'config.json')})`);
    run = await runCli(['restore', '--latest', '--yes', '--config', clinic.dir], { cwd: clinic.dir });
    expect(run.code).toBe(2);
    expect(errorLines(run.stderr)).toEqual([`Error: Config path ${clinic.dir} is a directory, not a file`, 'Try: Point --config at the config.json file itself.']);
    run = await runCli(['restore', '--yes', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(2);
    expect(errorLines(run.stderr)).toEqual(['Error: Name the backup file to restore, or pass --latest for the newest', 'Try: Run "epetsync restore --help" for usage.']);
    run = await runCli(['restore', clinic.backup, '--latest', '--yes', '--config', clinic.config], { cwd: clinic.dir });
    expect(run.code).toBe(2);
    expect(errorLines(run.stderr)).toEqual(['Error: Name a backup file or pass --latest, not both', 'Try: Run "epetsync restore --help" for usage.']);
    expect(hashTree(clinic.dir)).toEqual(before);
  });
});
