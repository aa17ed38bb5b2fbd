import type { CommandContext } from '../cli/context.js';
import type { Output } from '../cli/output.js';
import type { CommandModule } from '../cli/spec.js';
import type { ConflictRecord } from '../sync/store.js';

/** Lists the options `epetsync conflicts` takes. */
export interface ConflictsOptions {
  table?: string;
  limit?: number;
}

/** Describes the conflicts log as `epetsync conflicts` reports it (the `--json` result). */
export interface ConflictsResult {
  database: string;
  total: number;
  /** Newest last; at most `limit` entries. */
  conflicts: ConflictRecord[];
}

/** Reads the conflicts log of the desktop database without changing anything. */
async function run(ctx: CommandContext, options: ConflictsOptions): Promise<ConflictsResult> {
  const config = ctx.config();
  const [{ openDatabase }, { listConflicts }] = await Promise.all([import('../db/index.js'), import('../sync/store.js')]);
  const db = openDatabase(config.database.path, { mode: 'read', busyTimeoutMs: config.database.busyTimeoutMs });
  try {
    const all = listConflicts(db).filter((c) => options.table === undefined || c.table === options.table);
    const limit = options.limit ?? 50;
    return { database: config.database.path, total: all.length, conflicts: all.slice(Math.max(0, all.length - limit)) };
  } finally {
    db.close();
  }
}

function key(pk: Record<string, unknown>): string {
  return Object.entries(pk)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(',');
}

function lost(c: ConflictRecord): string {
  if (c.kind === 'id-collision') return c.note ?? 'both rows kept';
  const loser = c.winner === 'local' ? c.remoteValues : c.localValues;
  const side = c.winner === 'local' ? 'remote' : 'local';
  if (loser === null) return `${side} delete`;
  const text = JSON.stringify(loser);
  return `${side} ${text.length > 60 ? `${text.slice(0, 59)}…` : text}`;
}

function render(result: ConflictsResult, out: Output): void {
  if (result.total === 0) {
    out.line(`No conflicts logged in ${result.database}.`);
    return;
  }
  out.table(
    ['ID', 'Detected', 'Table', 'Key', 'Kind', 'Policy', 'Kept', 'Lost version'],
    result.conflicts.map((c) => [c.id, c.detectedAt.replace('T', ' ').slice(0, 19), c.table, key(c.pk), c.kind, c.policy, c.winner, lost(c)]),
  );
  if (result.total > result.conflicts.length) out.line(`(${result.total - result.conflicts.length} older conflict(s) not shown; raise --limit)`);
  out.line('The full losing versions are in --json output.');
}

/** Implements `epetsync conflicts [--table T] [--limit N]`: the conflicts log, every losing version kept. */
const conflicts: CommandModule<ConflictsOptions, ConflictsResult> = { run, render };

export default conflicts;
