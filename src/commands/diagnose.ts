import type { CommandContext } from '../cli/context.js';
import type { Output } from '../cli/output.js';
import type { CommandModule } from '../cli/spec.js';
import type { CheckResult, CheckStatus, DiagnoseReport } from '../diagnose/index.js';
import { UsageError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';

/** Lists the options `epetsync diagnose` takes. */
export interface DiagnoseCommandOptions {
  config?: string;
  fix?: boolean;
  deep?: boolean;
  yes?: boolean;
  group?: string;
}

/** Runs the check catalogue (and with --fix the safe repairs) and returns the report. */
async function run(ctx: CommandContext, options: DiagnoseCommandOptions): Promise<DiagnoseReport> {
  const { CHECKS, runDiagnose } = await import('../diagnose/index.js');
  const groups = options.group?.split(',').map((g) => g.trim()).filter((g) => g !== '');
  const known = [...new Set(CHECKS.map((c) => c.group))];
  const unknown = groups?.find((g) => !known.includes(g as (typeof known)[number]));
  if (unknown !== undefined || groups?.length === 0) {
    throw new UsageError('EPS_USAGE', `--group ${JSON.stringify(unknown ?? '')} is not a check group`, { hint: `Pass one or more of ${known.join(', ')}, separated by commas.` });
  }
  const activity = await ctx.out.activity('Diagnosing');
  try {
    const report = await runDiagnose(CHECKS, {
      configPath: options.config,
      env: ctx.env,
      cwd: ctx.cwd,
      deep: options.deep ?? false,
      fix: options.fix ?? false,
      logger: ctx.logger,
      signal: ctx.signal,
      groups,
      confirm: async (question) => options.yes === true || (await ctx.out.confirm(question)),
      onCheck: (r) => activity.update(`${r.id}: ${r.status}`),
    });
    activity.stop();
    for (const f of report.fixes) ctx.logger.info({ check: f.id, outcome: f.outcome, before: f.before, after: f.after }, f.action);
    return report;
  } catch (error) {
    activity.fail('Diagnose failed');
    throw error;
  }
}

const MARK: Record<CheckStatus, string> = { ok: '✓', warn: '⚠', fail: '✗', skipped: '-' };

/** Prints the checklist grouped, each line with its mark, then the repairs and a summary. */
export function renderChecks(checks: readonly CheckResult[], out: Output): void {
  let group = '';
  for (const c of checks) {
    if (c.group !== group) {
      group = c.group;
      out.line(out.color.bold(group));
    }
    const paint = c.status === 'ok' ? out.color.green : c.status === 'warn' ? out.color.yellow : c.status === 'fail' ? out.color.red : out.color.gray;
    out.line(`  ${paint(MARK[c.status])} ${c.id.padEnd(26)} ${c.found}`);
    if (c.remedy) out.line(`    → ${c.remedy}`);
  }
}

function render(report: DiagnoseReport, out: Output): void {
  renderChecks(report.checks, out);
  if (report.fix) {
    out.line('');
    if (report.fixes.length === 0) out.line('Repairs: nothing to repair');
    else {
      out.line('Repairs:');
      for (const f of report.fixes) out.line(`  ${f.outcome === 'fixed' ? '✓' : f.outcome === 'declined' ? '-' : '✗'} ${f.id}: ${f.action} (${f.before} → ${f.after})`);
    }
  }
  const s = report.summary;
  out.line('');
  const verdict = s.fail > 0 ? out.color.red('problems found') : s.warn > 0 ? out.color.yellow('working, with warnings') : out.color.green('all good');
  out.line(`${verdict}: ${s.ok} ok, ${s.warn} warning(s), ${s.fail} failed, ${s.skipped} skipped`);
}

/** Implements `epetsync diagnose [--fix] [--deep] [--yes]`: exit 1 when any check fails, 0 otherwise (warnings alone do not fail). */
const diagnose: CommandModule<DiagnoseCommandOptions, DiagnoseReport> = {
  run,
  render,
  exitCode: (report) => (report.summary.fail > 0 ? ExitCode.PROBLEMS : ExitCode.OK),
};

export default diagnose;
