import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { createInterface } from 'node:readline/promises';
import type { CommandContext } from '../cli/context.js';
import type { Output } from '../cli/output.js';
import type { CommandModule } from '../cli/spec.js';
import type { CheckResult, DiagnoseSummary } from '../diagnose/index.js';
import { UsageError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';
import { renderChecks } from './diagnose.js';

/** Lists the options `epetsync init` takes. */
export interface InitCommandOptions {
  db?: string;
  url?: string;
  username?: string;
  dir?: string;
  force?: boolean;
  storePassword?: boolean;
}

/** Reports `epetsync init` (the `--json` result; documented in README.md). */
export interface InitResult {
  /** True when every quick check passed (warnings allowed). */
  ok: boolean;
  config: string;
  action: 'created' | 'replaced';
  /** The previous config.json, kept when --force replaced it. */
  backup: string | null;
  /** Where the password for the checks came from; it is written to the file only with --store-password. */
  passwordSource: 'env' | 'prompt' | 'none';
  passwordStored: boolean;
  checks: CheckResult[];
  summary: DiagnoseSummary;
  nextSteps: string[];
}

/** Groups init runs: the quick checks that say whether the written config can reach and log in to the server. */
const QUICK_GROUPS = ['config', 'local', 'network', 'api', 'auth'];

/** Writes config.json for a real clinic from flags (or prompts on a terminal), then validates it with the quick diagnose checks. */
async function run(ctx: CommandContext, options: InitCommandOptions): Promise<InitResult> {
  const dir = resolve(ctx.cwd, options.dir ?? '.');
  const configPath = join(dir, 'config.json');
  const exists = existsSync(configPath);
  if (exists && options.force !== true) {
    throw new UsageError('EPS_USAGE', `${configPath} already exists`, { hint: 'Pass --force to replace it (the old file is kept as config.json.bak), or --dir to write elsewhere.' });
  }
  const db = options.db ?? (await ask(ctx, '--db', 'Path of the desktop database (db.sqlite3): '));
  const url = options.url ?? (await ask(ctx, '--url', 'URL of the web app or sync server (https://…): '));
  const username = options.username ?? (await ask(ctx, '--username', 'Sync account username: '));

  let password = nonEmpty(ctx.env.EPETSYNC_PASSWORD);
  let passwordSource: InitResult['passwordSource'] = password === undefined ? 'none' : 'env';
  if (password === undefined && canPrompt(ctx)) {
    password = nonEmpty(await askHidden(ctx, `Password of ${username} (not written to config.json${options.storePassword ? ' unless --store-password' : ''}): `));
    if (password !== undefined) passwordSource = 'prompt';
  }

  const previous = exists ? readExisting(configPath) : {};
  const dbAbsolute = resolve(ctx.cwd, db);
  const dbRelative = relative(dir, dbAbsolute);
  const remote: Record<string, unknown> = { ...asObject(previous.remote_database), enabled: true, url, username };
  if (options.storePassword === true && password !== undefined) remote.password = password;
  const next: Record<string, unknown> = {
    ...previous,
    database: { ...asObject(previous.database), path: dbRelative.startsWith('..') || isAbsolute(dbRelative) ? dbAbsolute : dbRelative },
    remote_database: remote,
  };

  mkdirSync(dir, { recursive: true });
  let backup: string | null = null;
  if (exists) {
    backup = `${configPath}.bak`;
    copyFileSync(configPath, backup);
  }
  writeFileSync(configPath, `${JSON.stringify(next, null, 2)}\n`, { mode: 0o600 });
  // The file names the sync account: readable by its owner only, as diagnose's config.permissions expects.
  chmodSync(configPath, 0o600);
  const passwordStored = options.storePassword === true && password !== undefined;
  if (passwordStored) {
    ctx.out.warn(`the password is stored in plain text in ${configPath}; anyone who can read the file can sync. Prefer EPETSYNC_PASSWORD.`);
  }

  const env: NodeJS.ProcessEnv = { ...ctx.env };
  if (password !== undefined) env.EPETSYNC_PASSWORD = password;
  const { CHECKS, runDiagnose } = await import('../diagnose/index.js');
  const activity = await ctx.out.activity('Checking the new config');
  const report = await runDiagnose(CHECKS, { configPath, env, cwd: dir, logger: ctx.logger, signal: ctx.signal, groups: QUICK_GROUPS });
  activity.stop();
  const ok = report.summary.fail === 0;
  const nextSteps: string[] = [];
  const configFlag = resolve(ctx.cwd, 'config.json') === configPath ? '' : ` --config ${configPath}`;
  if (!passwordStored) nextSteps.push(`export EPETSYNC_PASSWORD=…        # the sync password, set where epetsync runs (or the scheduled task's environment)`);
  if (!ok) nextSteps.push(`epetsync${configFlag} diagnose --fix   # repair what is safe, then fix the rest as each remedy says`);
  nextSteps.push(`epetsync${configFlag} migrate --check-only   # what a first migrate would do; writes nothing`);
  nextSteps.push(`epetsync${configFlag} migrate               # first time only: copy the desktop database to the web app`);
  nextSteps.push(`epetsync${configFlag} monitor --background  # keep both sides in step from now on`);
  return {
    ok,
    config: configPath,
    action: exists ? 'replaced' : 'created',
    backup,
    passwordSource,
    passwordStored,
    checks: report.checks,
    summary: report.summary,
    nextSteps,
  };
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

function asObject(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

/** Reads the config being replaced so the desktop app's own keys (app, ui, …) survive; a broken file is replaced whole. */
function readExisting(path: string): Record<string, unknown> {
  try {
    return asObject(JSON.parse(readFileSync(path, 'utf8').replace(/^\uFEFF/, '')));
  } catch {
    return {};
  }
}

function canPrompt(ctx: CommandContext): boolean {
  return !ctx.json && (ctx.out.stdin as NodeJS.ReadStream).isTTY === true && (ctx.out.stderr as NodeJS.WriteStream).isTTY === true;
}

async function ask(ctx: CommandContext, flag: string, question: string): Promise<string> {
  if (!canPrompt(ctx)) {
    throw new UsageError('EPS_USAGE', `missing ${flag}`, { hint: 'Pass --db <path> --url <url> --username <name> (run "epetsync init --help" for an example).' });
  }
  const rl = createInterface({ input: ctx.out.stdin, output: ctx.out.stderr });
  try {
    const answer = (await rl.question(question)).trim();
    if (answer === '') throw new UsageError('EPS_USAGE', `missing ${flag}`, { hint: `Answer the question or pass ${flag}.` });
    return answer;
  } finally {
    rl.close();
  }
}

/** Asks without echoing what is typed (a password). */
async function askHidden(ctx: CommandContext, question: string): Promise<string> {
  ctx.out.stderr.write(question);
  const muted = new Writable({ write: (_chunk, _enc, done) => done() });
  const rl = createInterface({ input: ctx.out.stdin, output: muted, terminal: true });
  try {
    return await rl.question('');
  } finally {
    rl.close();
    ctx.out.stderr.write('\n');
  }
}

function render(result: InitResult, out: Output): void {
  out.line(`${result.action === 'created' ? 'Wrote' : 'Replaced'} ${result.config}${result.backup ? ` (the old file is ${result.backup})` : ''}`);
  out.line(result.passwordStored ? 'The password is stored in config.json (plain text).' : `No password in config.json${result.passwordSource === 'none' ? '; none was given, so the login checks could not run' : `; the checks used the one from ${result.passwordSource === 'env' ? 'EPETSYNC_PASSWORD' : 'the prompt'}`}.`);
  out.line('');
  renderChecks(result.checks, out);
  out.line('');
  const s = result.summary;
  out.line(result.ok ? out.color.green(`Config works: ${s.ok} ok, ${s.warn} warning(s).`) : out.color.red(`${s.fail} check(s) failed: follow each remedy (→) above.`));
  out.line('');
  out.line('Next:');
  for (const n of result.nextSteps) out.line(`  ${n}`);
}

/** Implements `epetsync init --db P --url U --username N [--dir D] [--force] [--store-password]`: exit 1 when a quick check failed. */
const init: CommandModule<InitCommandOptions, InitResult> = {
  run,
  render,
  exitCode: (r) => (r.ok ? ExitCode.OK : ExitCode.PROBLEMS),
};

export default init;
