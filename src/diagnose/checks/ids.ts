import { z } from 'zod';
import { finishLoad } from '../../client/migrate-api.js';
import { hasAutoincrement, quoteIdent } from '../../db/index.js';
import type { DiagnoseContext } from '../context.js';
import type { Check } from '../types.js';
import { serverInfo } from './remote.js';

const sequencesSchema = z.object({
  sequences: z.array(z.object({ table: z.string(), sequence: z.string(), last_value: z.string().regex(/^-?\d+$/).nullable(), max_id: z.string().regex(/^-?\d+$/).nullable() })),
});

/** Describes the ids of one autoincrement table on both sides. */
export interface IdState {
  table: string;
  /** sqlite_sequence: the largest id the desktop ever handed out. */
  localSequence: string | null;
  localMax: string | null;
  /** pg_sequence_last_value: null when the sequence was never used. */
  remoteSequence: string | null;
  remoteMax: string | null;
}

/** Reads local sqlite_sequence/max(id) and the remote sequence/max(id) of every synced AUTOINCREMENT table with a remote sequence. */
async function idStates(ctx: DiagnoseContext): Promise<IdState[]> {
  const info = serverInfo(ctx)!;
  const db = ctx.db();
  const local = new Map<string, { sql: string }>();
  for (const row of db.prepare(`SELECT name, sql FROM sqlite_master WHERE type = 'table'`).all() as Array<{ name: string; sql: string | null }>) {
    if (row.sql && hasAutoincrement(row.sql)) local.set(row.name, { sql: row.sql });
  }
  const tables = info.tables.filter((t) => local.has(t.name) && t.primary_key.length === 1);
  if (tables.length === 0) return [];
  const answer = await ctx.client().migrateRequest('sequences/', sequencesSchema, { json: { tables: tables.map((t) => t.name) } }, { signal: ctx.options.signal });
  const hasSeqTable = db.prepare(`SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'`).get() !== undefined;
  return answer.sequences.map((s) => {
    const key = tables.find((t) => t.name === s.table)!.primary_key[0]!;
    const seq = hasSeqTable ? (db.prepare('SELECT seq FROM sqlite_sequence WHERE name = ?').pluck().safeIntegers(true).get(s.table) as bigint | undefined) : undefined;
    const max = db.prepare(`SELECT max(${quoteIdent(key)}) FROM ${quoteIdent(s.table)}`).pluck().safeIntegers(true).get() as bigint | null;
    return { table: s.table, localSequence: seq === undefined ? null : String(seq), localMax: max === null ? null : String(max), remoteSequence: s.last_value, remoteMax: s.max_id };
  });
}

const big = (v: string | null): bigint => (v === null ? 0n : BigInt(v));

/** Lists the ids group: remote sequences that lag their table, and local sequences behind the remote's ids. */
export const ID_CHECKS: Check[] = [
  {
    id: 'ids.remote-sequence',
    group: 'ids',
    title: 'remote sequences ahead of their ids',
    needs: ['auth.permission', 'db.integrity'],
    async run(ctx) {
      const states = await idStates(ctx);
      ctx.memo.set('ids.states', states);
      if (states.length === 0) return { status: 'skipped', found: 'no synced AUTOINCREMENT table with a remote sequence' };
      const lagging = states.filter((s) => s.remoteMax !== null && big(s.remoteSequence) < big(s.remoteMax));
      if (lagging.length === 0) return { status: 'ok', found: `${states.length} sequence(s) past their largest id`, data: { tables: states } };
      const list = lagging.map((s) => `${s.table} (sequence ${s.remoteSequence ?? 'unused'}, max(id) ${s.remoteMax})`).join(', ');
      return {
        status: 'fail',
        found: `remote sequence at or below max(id): ${list}: the web app's next insert there fails with a duplicate key`,
        remedy: 'Run "epetsync diagnose --fix" to move them past the largest ids (a bulk load that forgot setval leaves them so).',
        data: { tables: states, lagging: lagging.map((s) => s.table) },
      };
    },
    fix: {
      async apply(ctx, outcome) {
        const tables = (outcome.data?.lagging as string[] | undefined) ?? [];
        const answer = await finishLoad(ctx.client(), tables, { signal: ctx.options.signal });
        return `advanced ${answer.sequences.map((s) => `${s.table} (next ${s.next_value})`).join(', ')}`;
      },
    },
  },
  {
    id: 'ids.overlap',
    group: 'ids',
    title: 'offline inserts will not collide',
    needs: ['ids.remote-sequence'],
    async run(ctx) {
      const states = (ctx.memo.get('ids.states') as IdState[] | undefined) ?? [];
      if (states.length === 0) return { status: 'skipped', found: 'no synced AUTOINCREMENT table with a remote sequence' };
      // The next desktop id is max(sqlite_sequence, max(id)) + 1; an id the web app already holds collides for certain.
      const behind = states.filter((s) => {
        const next = (big(s.localSequence) > big(s.localMax) ? big(s.localSequence) : big(s.localMax)) + 1n;
        return s.remoteMax !== null && next <= big(s.remoteMax);
      });
      if (behind.length === 0) return { status: 'ok', found: `the desktop's next ids are past every remote id in ${states.length} table(s)`, data: { tables: states } };
      const list = behind.map((s) => `${s.table} (desktop next ${(big(s.localSequence) > big(s.localMax) ? big(s.localSequence) : big(s.localMax)) + 1n}, remote max(id) ${s.remoteMax})`).join(', ');
      return {
        status: 'warn',
        found: `id ranges overlap: ${list}: the next offline insert takes an id the web app already uses`,
        remedy: 'Run "epetsync monitor --once" before working offline: pulling moves the desktop sequences past the remote ids (a collision is re-keyed, but ids then change).',
        data: { tables: states, behind: behind.map((s) => s.table) },
      };
    },
  },
];
