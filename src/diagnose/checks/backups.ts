import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { ensureBackupDir, listBackups, takeBackup, verifyCopy } from '../../db/index.js';
import type { DiagnoseContext } from '../context.js';
import type { Check, CheckFix } from '../types.js';
import { formatAge } from './local.js';

/** Sets the age above which the newest backup counts as old. */
export const BACKUP_MAX_AGE_SECONDS = 7 * 86_400;

async function freshBackup(ctx: DiagnoseContext): Promise<string> {
  const config = ctx.config();
  await ctx.reset();
  const r = await takeBackup({ databasePath: config.database.path, backupDir: config.database.backupDir, keep: config.database.backupKeep, busyTimeoutMs: config.database.busyTimeoutMs });
  return `took a verified backup ${r.backup.file}`;
}

const takeFix: CheckFix = { apply: freshBackup };

/** Lists the backups group: folder present and writable, newest backup and its age, newest backup verifies. */
export const BACKUP_CHECKS: Check[] = [
  {
    id: 'backup.folder',
    group: 'backups',
    title: 'backup folder present and writable',
    needs: ['config.valid'],
    async run(ctx) {
      const dir = ctx.config().database.backupDir;
      if (!existsSync(dir)) return { status: 'fail', found: `${dir} does not exist: no backup can be taken or restored`, remedy: 'Run "epetsync diagnose --fix" to create it and take a backup.', data: { dir, exists: false } };
      if (!statSync(dir).isDirectory()) return { status: 'fail', found: `${dir} is not a folder`, remedy: 'Move the file away or set database.backup_dir to a folder.', data: { dir } };
      try {
        accessSync(dir, constants.W_OK);
      } catch {
        return { status: 'fail', found: `${dir} is not writable by this user`, remedy: 'Give this user write access to the folder, or set database.backup_dir to another one.', data: { dir } };
      }
      return { status: 'ok', found: dir, data: { dir } };
    },
    fix: {
      applies: (outcome) => outcome.data?.exists === false,
      async apply(ctx) {
        const config = ctx.config();
        ensureBackupDir(config.database.backupDir);
        const took = existsSync(config.database.path) ? `; ${await freshBackup(ctx)}` : '';
        return `created ${config.database.backupDir}${took}`;
      },
    },
  },
  {
    id: 'backup.newest',
    group: 'backups',
    title: 'newest backup',
    needs: ['backup.folder'],
    async run(ctx) {
      const config = ctx.config();
      const newest = listBackups(config.database.path, config.database.backupDir, ctx.now())[0];
      if (!newest) return { status: 'warn', found: 'no backup of this database yet', remedy: 'Run "epetsync backup" (or diagnose --fix) and schedule it daily.', data: { newest: null } };
      const data = { newest: newest.path, takenAt: newest.takenAt, ageSeconds: Math.round(newest.ageSeconds) };
      if (newest.ageSeconds > BACKUP_MAX_AGE_SECONDS) return { status: 'warn', found: `${newest.file}, ${formatAge(newest.ageSeconds)} old`, remedy: 'Run "epetsync backup" (or diagnose --fix) and schedule it daily.', data };
      return { status: 'ok', found: `${newest.file}, ${formatAge(newest.ageSeconds)} old`, data };
    },
    fix: takeFix,
  },
  {
    id: 'backup.verify',
    group: 'backups',
    title: 'newest backup passes quick_check (integrity_check with --deep)',
    needs: ['backup.newest'],
    async run(ctx) {
      const config = ctx.config();
      const newest = listBackups(config.database.path, config.database.backupDir, ctx.now())[0];
      if (!newest) return { status: 'skipped', found: 'no backup to check' };
      // Like the live file's check: quick_check by default (every page read and checked, about half
      // the time on a large file), integrity_check (indexes compared with rows too) with --deep.
      const check = ctx.deep ? 'integrity_check' : 'quick_check';
      let ok = false;
      let why = '';
      try {
        const r = verifyCopy(newest.path, config.database.busyTimeoutMs, check).integrity;
        ok = r.ok;
        why = r.messages[0] ?? '';
      } catch (error) {
        why = error instanceof Error ? error.message : String(error);
      }
      if (ok) return { status: 'ok', found: `${newest.file}: ${check} ok` };
      return { status: 'fail', found: `${newest.file} is damaged (${why.replace(/\s+/g, ' ').slice(0, 160)})`, remedy: 'Move it aside and take a new backup ("epetsync backup"); an older backup may still be good.', data: { backup: newest.path } };
    },
  },
];
