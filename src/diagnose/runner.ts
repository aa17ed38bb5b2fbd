import { isEpetsyncError } from '../errors.js';
import { redactText, redactValue } from '../redact.js';
import { DiagnoseContext, type DiagnoseOptions } from './context.js';
import type { Check, CheckOutcome, CheckResult, DiagnoseReport, DiagnoseSummary, FixRecord } from './types.js';

/** Describes a diagnose run beyond its context: repairs and how a risky repair is confirmed. */
export interface RunDiagnoseOptions extends DiagnoseOptions {
  fix?: boolean;
  /** Answers a risky repair's question (restore): true for --yes or a yes on the terminal. */
  confirm?: (question: string) => Promise<boolean>;
  /** Reports progress (check id and status) as checks finish; for spinners. */
  onCheck?: (result: CheckResult) => void;
  /** Run only these groups (default: all). */
  groups?: string[];
}

const PASSING = new Set(['ok', 'warn']);
/** Repair passes at most: a fix can make the next one possible (URL, then discovery). */
const MAX_FIX_PASSES = 3;

/** Runs the checks in order once; a check whose needed check did not pass is `skipped`. */
export async function runChecks(checks: readonly Check[], ctx: DiagnoseContext, onCheck?: (r: CheckResult) => void): Promise<CheckResult[]> {
  const byId = new Map<string, CheckResult>();
  const out: CheckResult[] = [];
  for (const check of checks) {
    const blocker = (check.needs ?? []).map((id) => byId.get(id)).find((r) => r !== undefined && !PASSING.has(r.status));
    const unselected = (check.needs ?? []).find((id) => !byId.has(id));
    let outcome: CheckOutcome;
    if (unselected !== undefined) {
      outcome = { status: 'skipped', found: `not run: needs ${unselected}, which was not run (see --group)` };
    } else if (blocker) {
      outcome = { status: 'skipped', found: `not run: ${blocker.id} ${blocker.status === 'skipped' ? 'was skipped' : 'failed'}` };
    } else {
      try {
        outcome = await check.run(ctx);
      } catch (error) {
        outcome = failure(error);
      }
    }
    const result: CheckResult = {
      id: check.id,
      group: check.group,
      title: check.title,
      status: outcome.status,
      // Findings quote config values and server answers: never let a secret through.
      found: redactText(outcome.found),
      remedy: outcome.status === 'ok' || outcome.status === 'skipped' ? null : outcome.remedy === undefined ? null : redactText(outcome.remedy),
      fixable: check.fix !== undefined,
      ...(outcome.data === undefined ? {} : { data: redactValue(outcome.data) as Record<string, unknown> }),
    };
    byId.set(check.id, result);
    out.push(result);
    onCheck?.(result);
  }
  return out;
}

/** Turns an error thrown by a check into a failed outcome that names the error and its hint. */
export function failure(error: unknown, remedy?: string): CheckOutcome {
  if (isEpetsyncError(error)) return { status: 'fail', found: error.message, remedy: remedy ?? error.hint, data: { code: error.code } };
  return { status: 'fail', found: error instanceof Error ? error.message : String(error), remedy: remedy ?? 'This looks like a bug in epetsync; please report it with the log file.' };
}

/** Runs the catalogue, and with `fix` repairs what it can, re-checks, and reports before → after. */
export async function runDiagnose(checks: readonly Check[], options: RunDiagnoseOptions): Promise<DiagnoseReport> {
  const selected = options.groups ? checks.filter((c) => options.groups!.includes(c.group)) : checks;
  const ctx = new DiagnoseContext(options);
  try {
    let results = await runChecks(selected, ctx, options.fix ? undefined : options.onCheck);
    const first = new Map(results.map((r) => [r.id, r]));
    const fixes: FixRecord[] = [];
    if (options.fix) {
      const attempted = new Set<string>();
      for (let pass = 0; pass < MAX_FIX_PASSES; pass += 1) {
        let applied = 0;
        for (const check of selected) {
          const result = results.find((r) => r.id === check.id)!;
          if (!check.fix || attempted.has(check.id) || result.status === 'ok' || result.status === 'skipped') continue;
          const outcome: CheckOutcome = { status: result.status, found: result.found, remedy: result.remedy ?? undefined, data: result.data };
          if (check.fix.applies && !check.fix.applies(outcome, ctx)) continue;
          attempted.add(check.id);
          const before = first.get(check.id)?.status ?? result.status;
          if (check.fix.confirm !== undefined && !(await (options.confirm ?? (async () => false))(check.fix.confirm))) {
            fixes.push({ id: check.id, action: `not done: ${check.fix.confirm} (pass --yes or answer on a terminal)`, outcome: 'declined', before, after: before });
            continue;
          }
          try {
            const action = redactText(await check.fix.apply(ctx, outcome));
            fixes.push({ id: check.id, action, outcome: 'fixed', before, after: before });
            applied += 1;
          } catch (error) {
            const message = redactText(error instanceof Error ? error.message : String(error));
            fixes.push({ id: check.id, action: `could not repair: ${message}`, outcome: 'failed', before, after: before });
          }
          // Later checks of this pass may depend on what was just repaired: re-run before going on.
          await ctx.reset();
          results = await runChecks(selected, ctx);
        }
        if (applied === 0) break;
      }
      await ctx.reset();
      results = await runChecks(selected, ctx, options.onCheck);
      for (const f of fixes) {
        f.after = results.find((r) => r.id === f.id)?.status ?? f.after;
        if (f.outcome === 'fixed' && f.after === 'fail') f.outcome = 'failed';
      }
    }
    const config = ctx.maybeConfig();
    return { config: config?.file ?? null, deep: ctx.deep, fix: options.fix ?? false, checks: results, fixes, summary: summarize(results) };
  } finally {
    await ctx.reset();
  }
}

/** Counts results per status. */
export function summarize(results: readonly CheckResult[]): DiagnoseSummary {
  const s: DiagnoseSummary = { ok: 0, warn: 0, fail: 0, skipped: 0 };
  for (const r of results) s[r.status] += 1;
  return s;
}
