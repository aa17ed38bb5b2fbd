import { resolve } from 'node:path';
import type { CommandContext } from '../cli/context.js';
import { formatBytes, type Activity, type Output } from '../cli/output.js';
import type { CommandModule } from '../cli/spec.js';
import { RemoteDatabaseClient, readState, stateFilePath } from '../client/index.js';
import type { EpetsyncConfig } from '../config/index.js';
import { UsageError } from '../errors.js';
import { describeKind, runMigrate, type MigrateResult, type TableProgress } from '../sync/migrate/index.js';

/** Holds the options `epetsync migrate` accepts. */
export interface MigrateCommandOptions {
  checkOnly?: boolean;
  force?: boolean;
  verify?: boolean;
  tables?: string;
  createSchema?: boolean;
  rejectFile?: string;
  yes?: boolean;
}

/** Moves the desktop database into the remote PostgreSQL through the sync API, or only checks (--check-only) or verifies (--verify). */
async function run(ctx: CommandContext, options: MigrateCommandOptions): Promise<MigrateResult> {
  if (options.checkOnly && options.verify) throw new UsageError('EPS_USAGE', '--check-only and --verify do not go together', { hint: 'Pass one of them: --check-only before a migrate, --verify after one.' });
  const tables = options.tables === undefined ? undefined : options.tables.split(',').map((t) => t.trim()).filter((t) => t !== '');
  if (tables !== undefined && tables.length === 0) throw new UsageError('EPS_USAGE', '--tables needs at least one table name', { hint: 'Pass --tables clinic_owner,clinic_pet (comma-separated).' });
  const config = ctx.config();
  if (options.force && !options.checkOnly && !options.verify && !options.yes) {
    const confirmed = await ctx.out.confirm('--force replaces the remote data (a verified copy is kept in the backup folder first). Continue?');
    if (!confirmed) {
      throw new UsageError('EPS_USAGE', '--force replaces remote data and needs confirmation', { hint: 'Answer yes on a terminal, or add --yes when running unattended.' });
    }
  }
  const onWarning = (m: string): void => ctx.out.warn(m);
  const client = options.checkOnly ? checkingClient(config, ctx, onWarning) : RemoteDatabaseClient.fromConfig(config, { logger: ctx.logger, signal: ctx.signal, onWarning });
  let activity: Activity | undefined;
  const onProgress = (p: TableProgress): void => {
    if (ctx.out.interactive) {
      activity?.update(progressLine(p));
      return;
    }
    if (p.done) {
      const line = `${p.table}: ${p.rows} rows in ${p.seconds.toFixed(1)} s (${Math.round(p.seconds > 0 ? p.rows / p.seconds : p.rows)} rows/s)`;
      ctx.logger.info({ table: p.table, rows: p.rows, seconds: p.seconds }, 'table migrated');
      ctx.out.note(line);
    }
  };
  try {
    activity = await ctx.out.activity(options.checkOnly ? 'Checking the migrate' : options.verify ? 'Verifying both sides' : 'Migrating');
    const result = await runMigrate(
      { config, client, logger: ctx.logger, signal: ctx.signal, onProgress },
      {
        checkOnly: options.checkOnly === true,
        force: options.force === true,
        verifyOnly: options.verify === true,
        tables,
        createSchema: options.createSchema === true,
        rejectFile: options.rejectFile === undefined ? undefined : resolve(ctx.cwd, options.rejectFile),
      },
    );
    activity.stop();
    return result;
  } catch (error) {
    activity?.fail('Migrate stopped');
    throw error;
  } finally {
    await client.close();
  }
}

/** Returns a client that keeps its endpoint and token in memory only: --check-only writes nothing, not even the state file. */
function checkingClient(config: EpetsyncConfig, ctx: CommandContext, onWarning: (m: string) => void): RemoteDatabaseClient {
  const remote = config.remote;
  if (remote.url === undefined) return RemoteDatabaseClient.fromConfig(config);
  return new RemoteDatabaseClient({
    url: remote.url,
    username: remote.username,
    password: remote.password,
    token: remote.token,
    nodeId: config.sync.nodeId ?? readState(stateFilePath(config.dir)).nodeId ?? 'epetsync-migrate-check',
    allowHttp: remote.allowHttp,
    insecureTls: remote.insecureTls,
    connectTimeoutMs: remote.connectTimeoutMs,
    requestTimeoutMs: remote.requestTimeoutMs,
    maxResponseBytes: remote.maxResponseBytes,
    logger: ctx.logger,
    signal: ctx.signal,
    onWarning,
  });
}

function progressLine(p: TableProgress): string {
  const width = 24;
  const share = p.total > 0 ? Math.min(1, p.rows / p.total) : 1;
  const filled = Math.round(share * width);
  const rate = p.seconds > 0 ? p.rows / p.seconds : 0;
  const eta = rate > 0 ? Math.max(0, (p.total - p.rows) / rate) : 0;
  return `${p.table} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${p.rows}/${p.total} rows  ${Math.round(rate)} rows/s  ETA ${Math.ceil(eta)} s`;
}

function render(result: MigrateResult, out: Output): void {
  const c = out.color;
  out.line(`Database: ${result.database} (quick_check ${result.quickCheck === 'ok' ? c.green('ok') : c.red(result.quickCheck)})`);
  out.line(`Server:   ${result.server.url} (protocol ${result.server.protocol}, ${result.server.engine}, epetsync ${result.server.serverVersion})`);
  if (result.mode === 'check') {
    out.line('');
    out.table(
      ['table', 'local rows', 'remote rows', 'action', 'size', 'est. time'],
      result.tables.map((t) => [t.table, t.localRows, t.remoteRows ?? '-', t.action === 'check' ? 'load' : t.action === 'create' ? 'create + load' : t.action, formatBytes(t.estimatedBytes), `${t.estimatedSeconds} s`]),
    );
    const findings = result.tables.flatMap((t) => [
      ...t.columns.map((col) => `${col.blocking ? c.red('BLOCKING') : c.yellow('note')}  ${t.table}.${col.column}: ${col.message}`),
      ...t.audit.map((a) => `${a.blocking ? c.red('BLOCKING') : c.yellow('note')}  ${t.table}.${a.column}: ${a.count} value(s) ${describeKind(a.kind)}; keys ${a.samples.map((s) => JSON.stringify(s)).join(', ')}`),
    ]);
    if (findings.length > 0) {
      out.line('');
      out.line('Values and columns:');
      for (const f of findings) out.line(`  ${f}`);
    }
    if (result.schema) {
      out.line('');
      if (result.schema.statements.length === 0) out.line('--create-schema: every table already exists remotely.');
      else {
        out.line('--create-schema would run:');
        for (const statement of result.schema.statements) out.line(`${statement};`);
      }
    }
  } else {
    if (result.backup) out.line(`Backup:   ${result.backup}`);
    if (result.remoteBackup) out.line(`Remote copy (verified): ${result.remoteBackup}`);
    if (result.resumed) out.line('Continued an interrupted migrate from its checkpoints.');
    if (result.schema && result.schema.created.length > 0) out.line(`Created remote tables: ${result.schema.created.join(', ')}`);
    out.line('');
    out.table(
      ['table', 'rows', 'rejected', 'seconds', 'rows/s', 'verified'],
      result.tables.map((t) => [t.table, result.mode === 'verify' ? (t.remoteRows ?? 0) : t.loaded || (t.remoteRows ?? 0), t.rejected, t.seconds, t.rowsPerSecond, t.verified === null ? '-' : t.verified ? c.green('yes') : c.red('NO')]),
    );
    if (result.rejectFile && result.rejected > 0) out.line(`${result.rejected} row(s) set aside in ${result.rejectFile}`);
    if (result.cursor && result.mode === 'migrate') out.line(`Change tracking installed; monitor continues from cursor ${result.cursor}.`);
  }
  for (const s of result.skipped) out.line(c.dim(`skipped ${s.table}: ${s.reason}`));
  for (const n of result.schema?.notCarried ?? []) {
    out.line(c.yellow(`not carried over to "${n.table}":`));
    for (const item of n.items) out.line(`  - ${item}`);
  }
  if (result.blocking.length > 0) {
    out.line('');
    out.line(c.red(`${result.blocking.length} blocking problem(s):`));
    for (const b of result.blocking) {
      out.line(`  ${b.message}`);
      out.line(`    Try: ${b.hint}`);
    }
  }
  if (result.mismatched.length > 0) out.line(c.red(`Verify FAILED for: ${result.mismatched.join(', ')}`));
  else if (result.mode !== 'check') out.line(c.green('Verified: both sides hold the same rows.'));
  else if (result.blocking.length === 0) out.line(c.green('Ready to migrate: nothing was written.'));
}

/** Implements `epetsync migrate [--check-only] [--force] [--verify] [--tables a,b] [--reject-file F] [--yes]`. */
const migrate: CommandModule<MigrateCommandOptions, MigrateResult> = { run, render, exitCode: (r) => (r.ok ? 0 : 1) };

export default migrate;
