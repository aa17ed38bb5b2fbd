import type { DiagnoseContext } from './context.js';

/** Names the outcome of one check: `skipped` when a check it needs did not pass or it does not apply. */
export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skipped';

/** Names the groups of the catalogue, in the order they run. */
export type CheckGroup = 'config' | 'local' | 'backups' | 'network' | 'api' | 'auth' | 'sync' | 'ids' | 'desktop';

/** Describes what one check found. */
export interface CheckOutcome {
  status: CheckStatus;
  /** One line: what was found (never a secret). */
  found: string;
  /** One line: what to do about it (absent when ok). */
  remedy?: string | undefined;
  /** Structured facts for --json. */
  data?: Record<string, unknown> | undefined;
}

/** Describes a repair a check can make with --fix. */
export interface CheckFix {
  /** Returns true when this outcome is one the fix can repair (default: any warn or fail). */
  applies?(outcome: CheckOutcome, ctx: DiagnoseContext): boolean;
  /** Set for a repair that replaces data (restore): asked on a terminal, or allowed by --yes. */
  confirm?: string;
  /** Makes the repair and returns one line saying what it did; throws when it could not. */
  apply(ctx: DiagnoseContext, outcome: CheckOutcome): Promise<string>;
}

/** Declares one check of the catalogue. */
export interface Check {
  id: string;
  group: CheckGroup;
  title: string;
  /** Ids of checks that must pass (ok or warn) for this one to run. */
  needs?: string[];
  run(ctx: DiagnoseContext): Promise<CheckOutcome>;
  fix?: CheckFix;
}

/** Reports one check in a diagnose run (the `checks[]` entries of the --json result). */
export interface CheckResult {
  id: string;
  group: CheckGroup;
  title: string;
  status: CheckStatus;
  found: string;
  remedy: string | null;
  /** True when the check has a --fix repair. */
  fixable: boolean;
  data?: Record<string, unknown> | undefined;
}

/** Reports one repair made (or attempted) by --fix. */
export interface FixRecord {
  id: string;
  /** What was done, or why nothing was. */
  action: string;
  outcome: 'fixed' | 'failed' | 'declined';
  before: CheckStatus;
  after: CheckStatus;
}

/** Counts checks per status. */
export interface DiagnoseSummary {
  ok: number;
  warn: number;
  fail: number;
  skipped: number;
}

/** Reports a whole diagnose run (the `--json` result of `epetsync diagnose`). */
export interface DiagnoseReport {
  /** Config file used, or null when none was found. */
  config: string | null;
  deep: boolean;
  fix: boolean;
  checks: CheckResult[];
  /** Repairs made by --fix, in order (empty without --fix). */
  fixes: FixRecord[];
  summary: DiagnoseSummary;
}
