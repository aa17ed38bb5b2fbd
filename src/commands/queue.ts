import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { CommandContext } from '../cli/context.js';
import type { Output } from '../cli/output.js';
import type { CommandModule } from '../cli/spec.js';
import { EpetsyncError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';
import type { QuarantineRecord } from '../sync/store.js';

/** Describes what `epetsync queue` did (the `--json` result). */
export type QueueResult =
  | { action: 'list'; pending: number; oldestPending: string | null; unacknowledgedBatches: number; quarantine: QuarantineRecord[] }
  | { action: 'retry'; id: number; change: QuarantineRecord }
  | { action: 'discard'; id: number; change: QuarantineRecord; copy: string };

/** Lists, retries or discards quarantined changes; `discard` keeps a verified copy in the backup folder first. */
async function run(ctx: CommandContext, _options: Record<string, unknown>, args: string[]): Promise<QueueResult> {
  const [action = 'list', idText] = args;
  if (action !== 'list' && action !== 'retry' && action !== 'discard') {
    throw new EpetsyncError('EPS_USAGE', `Unknown queue action "${action}"`, { hint: 'Use "epetsync queue list", "epetsync queue retry ID" or "epetsync queue discard ID".' });
  }
  if (action !== 'list' && (idText === undefined || !/^\d+$/.test(idText))) {
    throw new EpetsyncError('EPS_USAGE', `"epetsync queue ${action}" needs the id of a quarantined change`, { hint: 'See the ids with "epetsync queue list".' });
  }
  const config = ctx.config();
  const [{ openDatabase }, store, { readSyncStatus }] = await Promise.all([import('../db/index.js'), import('../sync/store.js'), import('../sync/status.js')]);
  const path = config.database.path;
  const db = openDatabase(path, { mode: action === 'list' ? 'read' : 'write', busyTimeoutMs: config.database.busyTimeoutMs });
  try {
    if (action === 'list') {
      const status = readSyncStatus(db, path, join(config.dir, '.epetsync', 'monitor.pid'));
      return { action, pending: status.pending, oldestPending: status.oldestPending, unacknowledgedBatches: status.unacknowledgedBatches, quarantine: store.listQuarantine(db) };
    }
    const id = Number(idText);
    const found = store.listQuarantine(db).find((q) => q.id === id);
    if (!found) throw new EpetsyncError('EPS_USAGE', `No quarantined change has id ${id}`, { hint: 'See the ids with "epetsync queue list".' });
    if (action === 'retry') {
      if (found.code === 'LOCAL_REFUSED') {
        throw new EpetsyncError('EPS_USAGE', `Change ${id} came from the server and the desktop database refused it; it cannot be sent back`, {
          hint: 'Fix the local constraint or the row on the web; the next change of the row on the server is applied again. "epetsync queue discard" keeps a copy.',
        });
      }
      store.retryQuarantined(db, id);
      return { action, id, change: found };
    }
    const copy = keepCopy(config.database.backupDir, found);
    store.discardQuarantined(db, id);
    return { action, id, change: found, copy };
  } finally {
    db.close();
  }
}

/** Writes the quarantined change to the backup folder, synced to disk and read back, before it is discarded. */
function keepCopy(dir: string, change: QuarantineRecord): string {
  try {
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `quarantine-${change.id}-${new Date().toISOString().replace(/[-:.]/g, '')}.json`);
    const text = `${JSON.stringify(change, null, 2)}\n`;
    const fd = openSync(file, 'wx', 0o600);
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    if (readFileSync(file, 'utf8') !== text) throw new Error('the copy read back differs');
    return file;
  } catch (error) {
    throw new EpetsyncError('EPS_BACKUP_DIR', `Cannot keep a copy of quarantined change ${change.id} in ${dir}: ${(error as Error).message}`, {
      hint: 'Check database.backup_dir is writable; nothing was discarded.',
      cause: error,
    });
  }
}

function render(result: QueueResult, out: Output): void {
  if (result.action === 'retry') {
    out.line(`Change ${result.id} (${result.change.table} ${JSON.stringify(result.change.pk)}) is back in the queue; the next sync sends the row as it is now.`);
    return;
  }
  if (result.action === 'discard') {
    out.line(`Change ${result.id} (${result.change.table} ${JSON.stringify(result.change.pk)}) discarded; a copy is in ${result.copy}.`);
    return;
  }
  out.line(`Pending        ${result.pending} local change(s)${result.oldestPending ? `, oldest from ${result.oldestPending}` : ''}`);
  if (result.unacknowledgedBatches > 0) out.line(`Outbox         ${result.unacknowledgedBatches} batch(es) sent or about to be, awaiting acknowledgement`);
  if (result.quarantine.length === 0) {
    out.line('Quarantine     empty');
    return;
  }
  out.line(`Quarantine     ${result.quarantine.length} change(s) refused by the server:`);
  out.line();
  out.table(
    ['ID', 'Since', 'Table', 'Key', 'Op', 'Code', 'Reason'],
    result.quarantine.map((q) => [q.id, q.quarantinedAt.replace('T', ' ').slice(0, 19), q.table, JSON.stringify(q.pk), q.op, q.code, q.reason.length > 80 ? `${q.reason.slice(0, 79)}…` : q.reason]),
  );
  out.line();
  out.line('Fix the row and run "epetsync queue retry ID", or "epetsync queue discard ID" (a copy is kept in the backup folder).');
}

/** Implements `epetsync queue [list|retry ID|discard ID]`; `list` exits 1 while changes are quarantined. */
const queue: CommandModule<Record<string, unknown>, QueueResult> = {
  run,
  render,
  exitCode: (result) => (result.action === 'list' && result.quarantine.length > 0 ? ExitCode.PROBLEMS : ExitCode.OK),
};

export default queue;
