import { formatBytes, type Output } from '../cli/output.js';
import type { CommandContext } from '../cli/context.js';
import type { CommandModule } from '../cli/spec.js';
import { requireLocalPath } from '../config/index.js';
import { checkRestoreTarget, findBackup, inspectDatabaseFile, restoreDatabase, type RestoreResult } from '../db/index.js';
import { markForSyncReplay } from '../sync/local-capture.js';
import { LocalDatabaseError, UsageError } from '../errors.js';

/** Describes a restore: the verified copy, and whether the file was marked for the sync replay. */
export type RestoreCommandResult = RestoreResult & { markedForSyncReplay: boolean };

/** Holds the options `epetsync restore` accepts. */
export interface RestoreOptions {
  latest?: boolean;
  yes?: boolean;
}

/** Replaces the local database with a verified backup after confirmation; the current files are moved aside. */
async function run(ctx: CommandContext, options: RestoreOptions, args: string[]): Promise<RestoreCommandResult> {
  const file = args[0];
  if (file !== undefined && options.latest === true) {
    throw new UsageError('EPS_USAGE', 'Name a backup file or pass --latest, not both', { hint: 'Run "epetsync restore --help" for usage.' });
  }
  if (file === undefined && options.latest !== true) {
    throw new UsageError('EPS_USAGE', 'Name the backup file to restore, or pass --latest for the newest', { hint: 'Run "epetsync restore --help" for usage.' });
  }
  const config = ctx.config();
  const database = config.database.path;
  const backupPath = findBackup({ databasePath: database, backupDir: config.database.backupDir, file, latest: options.latest, cwd: ctx.cwd });
  // Whatever can be refused without touching a file is refused before anyone is asked anything.
  checkRestoreTarget(requireLocalPath(database, 'database.path'));
  inspectDatabaseFile(backupPath, { noun: 'Backup' });

  if (options.yes !== true) {
    const onTerminal = ctx.out.interactive && (ctx.out.stdin as NodeJS.ReadStream).isTTY === true;
    if (!onTerminal) {
      throw new LocalDatabaseError('EPS_RESTORE_REFUSED', `Refusing to replace ${database} with ${backupPath} without confirmation (not on a terminal)`, {
        hint: 'Pass --yes to confirm, e.g. "epetsync restore --latest --yes".',
        details: { database, backup: backupPath },
      });
    }
    const confirmed = await ctx.out.confirm(`Replace ${database} with ${backupPath}? The current file is moved aside, not deleted.`);
    if (!confirmed) {
      throw new LocalDatabaseError('EPS_RESTORE_REFUSED', 'Restore cancelled at the prompt; nothing was changed', {
        hint: 'Answer "y" to restore, or pass --yes.',
        details: { database, backup: backupPath },
      });
    }
  }

  const result = restoreDatabase({ databasePath: database, backupPath, busyTimeoutMs: config.database.busyTimeoutMs });
  // Verified identical to the backup; a file that had been syncing is then marked for the monitor's replay.
  const markedForSyncReplay = markForSyncReplay(database, config.database.busyTimeoutMs);
  ctx.logger.info({ database, backup: backupPath, replaced: result.replaced, markedForSyncReplay }, 'database restored from backup');
  return { ...result, markedForSyncReplay };
}


function render(result: RestoreCommandResult, out: Output): void {
  out.line(`Restored ${result.database}`);
  out.line(`  from ${result.restoredFrom} (${formatBytes(result.sizeBytes)}, integrity_check ${out.color.green('ok')}, identical to the backup)`);
  if (result.markedForSyncReplay) out.line('Marked for sync: the next monitor cycle first brings back what this desktop sent after the backup was taken.');
  if (result.replaced.length === 0) {
    out.line('There was no previous database file to move aside.');
    return;
  }
  out.line('The previous files were moved aside (delete them once you are sure):');
  for (const r of result.replaced) out.line(`  ${r.from} -> ${r.to}`);
}

/** Implements `epetsync restore [FILE | --latest] [--yes]`. */
const restore: CommandModule<RestoreOptions, RestoreCommandResult> = { run, render };

export default restore;
