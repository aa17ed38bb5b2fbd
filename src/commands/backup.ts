import { formatBytes, type Output } from '../cli/output.js';
import type { CommandContext } from '../cli/context.js';
import type { CommandModule } from '../cli/spec.js';
import { takeBackup, type BackupResult } from '../db/index.js';
import { UsageError } from '../errors.js';

/** Holds the options `epetsync backup` accepts. */
export interface BackupOptions {
  keep?: number;
}

/** Reports `epetsync backup` (the `--json` result; documented in docs/local-database.md). */
export interface BackupCommandResult extends BackupResult {
  /** The retention applied: newest N backups kept. */
  keep: number;
}

/** Takes a verified online backup into the backup folder, then keeps only the newest N. */
async function run(ctx: CommandContext, options: BackupOptions): Promise<BackupCommandResult> {
  const config = ctx.config();
  const keep = options.keep ?? config.database.backupKeep;
  if (keep < 1) {
    throw new UsageError('EPS_USAGE', `--keep must be 1 or more, got ${keep}`, {
      hint: 'Pass --keep 1 or more: rotation never deletes the backup just taken.',
    });
  }
  const activity = await ctx.out.activity(`Backing up ${config.database.path}`);
  try {
    const result = await takeBackup({
      databasePath: config.database.path,
      backupDir: config.database.backupDir,
      keep,
      busyTimeoutMs: config.database.busyTimeoutMs,
    });
    activity.stop();
    for (const w of result.warnings) ctx.logger.warn(w);
    ctx.logger.info({ backup: result.backup.path, pages: result.pages, removed: result.removed.map((r) => r.file) }, 'backup taken');
    return { ...result, keep };
  } catch (error) {
    activity.fail('Backup failed');
    throw error;
  }
}

function render(result: BackupCommandResult, out: Output): void {
  out.line(`Backup written: ${result.backup.path}`);
  out.line(`  ${formatBytes(result.backup.sizeBytes)}, ${result.pages} pages, integrity_check ${out.color.green('ok')}, ${result.durationMs} ms`);
  if (result.removed.length === 0) {
    out.line(`Rotation: ${result.kept} backup(s) kept (--keep ${result.keep}), none removed`);
  } else {
    out.line(`Rotation: ${result.kept} backup(s) kept (--keep ${result.keep}), removed ${result.removed.length}:`);
    for (const r of result.removed) out.line(`  ${r.file}`);
  }
  for (const w of result.warnings) out.warn(w);
}

/** Implements `epetsync backup [--keep N]`. */
const backup: CommandModule<BackupOptions, BackupCommandResult> = { run, render };

export default backup;
