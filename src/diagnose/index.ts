/** The diagnose catalogue: checks as a table (id, group, run, optional fix), run in order with dependencies. */
import { BACKUP_CHECKS } from './checks/backups.js';
import { CONFIG_CHECKS } from './checks/config.js';
import { LOCAL_CHECKS } from './checks/local.js';
import { API_CHECKS, AUTH_CHECKS, NETWORK_CHECKS } from './checks/remote.js';
import { DESKTOP_CHECKS } from './checks/desktop.js';
import { ID_CHECKS } from './checks/ids.js';
import { SYNC_CHECKS } from './checks/sync.js';
import type { Check } from './types.js';

export { runDiagnose, runChecks, summarize, failure, type RunDiagnoseOptions } from './runner.js';
export { DiagnoseContext, type DiagnoseOptions } from './context.js';
export { editConfigFile, type ConfigEdit } from './config-file.js';
export { normaliseUrl, isLoopbackHost } from './checks/config.js';
export type { Check, CheckFix, CheckGroup, CheckOutcome, CheckResult, CheckStatus, DiagnoseReport, DiagnoseSummary, FixRecord } from './types.js';

/** Lists every check in the order they run (docs/diagnose.md is the catalogue for people). */
export const CHECKS: readonly Check[] = [...CONFIG_CHECKS, ...LOCAL_CHECKS, ...BACKUP_CHECKS, ...NETWORK_CHECKS, ...API_CHECKS, ...AUTH_CHECKS, ...SYNC_CHECKS, ...ID_CHECKS, ...DESKTOP_CHECKS];
