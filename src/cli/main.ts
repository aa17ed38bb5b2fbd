import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { EpetsyncError, UsageError, isEpetsyncError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';
import { LOG_LEVELS, createLogger, type Logger } from '../logger.js';
import { redactText, redactValue } from '../redact.js';
import { COMMANDS } from './commands.js';
import { lazyConfig, type CommandContext } from './context.js';
import { Output } from './output.js';
import type { CommandModule, CommandSpec } from './spec.js';

/** Describes the process-level surroundings `main` runs in (overridable in tests). */
export interface MainOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  /** Install SIGINT/SIGTERM handlers (default true). */
  handleSignals?: boolean;
}

interface GlobalOptions {
  config?: string;
  json?: boolean;
  logLevel?: (typeof LOG_LEVELS)[number];
  logFile?: string;
  color?: boolean;
}

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Runs the epetsync CLI and returns the process exit code; the only place errors become exit codes. */
export async function main(argv: string[], options: MainOptions = {}): Promise<number> {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  const jsonRequested = argv.includes('--json');
  let exitCode: number = ExitCode.OK;
  let commandName = 'epetsync';

  const program = buildProgram(
    async (spec, module, cmd, args) => {
      exitCode = await runCommand(spec, module, cmd, args, { env, cwd, stdout, stderr, handleSignals: options.handleSignals ?? true });
    },
    { stdout, stderr },
  );
  commandName = commandPath(program, argv.slice(2));

  try {
    await program.parseAsync(argv);
    return exitCode;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help') return ExitCode.OK;
      if (error.code === 'commander.executeSubCommandAsync') return ExitCode.OK;
      const message = error.message.replace(/^error:\s*/, '');
      return reportError(new UsageError('EPS_USAGE', message, { hint: `Run "${commandName} --help" for usage.` }), {
        json: jsonRequested,
        stdout,
        stderr,
        command: commandName,
        color: false,
      });
    }
    return reportError(error, { json: jsonRequested, stdout, stderr, command: commandName, color: false });
  }
}

type Runner = (spec: CommandSpec, module: () => Promise<CommandModule<never, unknown>>, cmd: Command, args: string[]) => Promise<void>;

/** Builds the commander program from the command registry; exported for the registry test. */
export function buildProgram(runner: Runner, io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream } = process): Command {
  const program = new Command('epetsync')
    // Set before the subcommands are added: commander copies it into each one at creation.
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => {
        // Commander's own usage errors are re-rendered by main in the two-line Error/Try form.
        if (!s.startsWith('error:')) io.stderr.write(s);
      },
    })
    .description("Keeps the Vet Portal desktop app's SQLite database and the web app's PostgreSQL database in step.")
    .version(packageVersion(), '-V, --version', 'print the epetsync version')
    .option('-c, --config <path>', 'config.json to use (default: $EPETSYNC_CONFIG, ./config.json, ./vet_desktop_app/config.json)')
    .option('--json', 'print the result (or error) as JSON on stdout')
    .addOption(new Option('--log-level <level>', 'log level for the log file and terminal').choices([...LOG_LEVELS]))
    .option('--log-file <path>', 'write JSON log lines here (default: logs/epetsync.log beside the config)')
    .option('--no-color', 'plain output without colours (also: NO_COLOR=1)')
    .showHelpAfterError(false)
    .exitOverride();
  program.addHelpText('after', `\nExit codes: 0 ok, 1 problems found, 2 usage or config error, 3 remote unreachable,\n4 authentication, 5 local database, 6 remote protocol, 7 locked by another instance, 130 interrupted.\n\nExamples:\n  $ epetsync status\n  $ epetsync backup --keep 14\n  $ epetsync --json status\n`);
  for (const spec of COMMANDS) addCommand(program, spec, runner);
  return program;
}

function addCommand(parent: Command, spec: CommandSpec, runner: Runner): void {
  const cmd = parent.command(spec.args ? `${spec.name} ${spec.args}` : spec.name).description(spec.description).exitOverride();
  spec.define?.(cmd);
  if (spec.examples.length > 0) cmd.addHelpText('after', `\nExamples:\n${spec.examples.map((e) => `  $ ${e}`).join('\n')}\n`);
  for (const sub of spec.subcommands ?? []) addCommand(cmd, sub, runner);
  if (spec.load) {
    const load = spec.load;
    cmd.action(async (...params: unknown[]) => {
      const self = params[params.length - 1] as Command;
      const args = params.slice(0, -2).filter((a): a is string | string[] => a !== undefined).flat();
      await runner(spec, load, self, args);
    });
  }
}

/** Returns the command path named on the command line (e.g. `epetsync serve user`), for usage hints. */
function commandPath(program: Command, args: string[]): string {
  const names = ['epetsync'];
  let cmd = program;
  const takesValue = new Set(['-c', '--config', '--log-level', '--log-file']);
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i]!;
    if (takesValue.has(arg)) i += 1;
    if (arg.startsWith('-')) continue;
    const sub = cmd.commands.find((c) => c.name() === arg || c.aliases().includes(arg));
    if (!sub) break;
    names.push(sub.name());
    cmd = sub;
  }
  return names.join(' ');
}

function fullName(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

async function runCommand(
  spec: CommandSpec,
  load: () => Promise<CommandModule<never, unknown>>,
  cmd: Command,
  args: string[],
  io: Required<MainOptions>,
): Promise<number> {
  const globals = cmd.optsWithGlobals<GlobalOptions>();
  const json = globals.json === true;
  const out = new Output({ stdout: io.stdout, stderr: io.stderr, json, color: globals.color === false ? false : undefined, env: io.env });
  const config = lazyConfig(globals.config, io.env, io.cwd);
  const name = fullName(cmd);
  const logger = makeLogger(globals, config, io, name);
  const controller = new AbortController();
  const stopSignals = io.handleSignals ? installSignals(controller, logger) : () => {};
  const ctx: CommandContext = {
    config: () => config.get(),
    hasConfig: () => config.ok(),
    logger,
    out,
    json,
    signal: controller.signal,
    env: io.env,
    cwd: io.cwd,
  };
  try {
    if (config.ok()) for (const w of config.get().warnings) { logger.warn(w); }
    logger.info({ command: name, args: redactValue(args) }, `${name} started`);
    const module = (await load()) as unknown as CommandModule<Record<string, unknown>, unknown>;
    // With globals: a parent's options (serve --data-dir) reach its subcommands (serve user add).
    const result = await module.run(ctx, cmd.optsWithGlobals(), args);
    const code = module.exitCode?.(result) ?? ExitCode.OK;
    if (json) out.writeJson({ ok: code === ExitCode.OK, command: name, result });
    else module.render(result, out);
    logger.info({ command: name, exitCode: code }, `${name} finished`);
    return code;
  } catch (error) {
    logger.error({ err: error, terminal: false }, `${name} failed`);
    return reportError(error, { json, stdout: io.stdout, stderr: io.stderr, command: name, color: out.color.level > 0 });
  } finally {
    stopSignals();
    logger.flush?.();
  }
}

function makeLogger(globals: GlobalOptions, config: ReturnType<typeof lazyConfig>, io: Required<MainOptions>, name: string): Logger {
  const file = globals.logFile ?? (config.ok() ? config.get().logging.file : undefined);
  const level = globals.logLevel ?? (config.ok() ? (config.get().logging.level as GlobalOptions['logLevel']) : undefined);
  try {
    return createLogger({
      file,
      fileLevel: level ?? 'info',
      terminalLevel: globals.json ? 'silent' : (globals.logLevel ?? 'warn'),
      terminal: io.stderr,
      name,
    });
  } catch (error) {
    // An unwritable log folder must not stop the command; say so on the terminal instead.
    io.stderr.write(`Warning: cannot write the log file ${file}: ${(error as Error).message}\n`);
    return createLogger({ terminalLevel: globals.logLevel ?? 'warn', terminal: io.stderr, name });
  }
}

function installSignals(controller: AbortController, logger: Logger): () => void {
  let count = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    count += 1;
    if (count === 1) {
      logger.warn(`${signal} received: finishing the work in flight (press Ctrl+C again to stop at once)`);
      controller.abort(new EpetsyncError('EPS_INTERRUPTED', `Stopped by ${signal}`));
    } else {
      process.exit(ExitCode.INTERRUPTED);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
}

interface ReportTarget {
  json: boolean;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  command: string;
  color: boolean;
}

/** Renders an error (two lines for a person, JSON with --json) and returns its exit code. */
function reportError(error: unknown, target: ReportTarget): number {
  const known: EpetsyncError = isEpetsyncError(error)
    ? error
    : new EpetsyncError('EPS_INTERNAL', error instanceof Error ? error.message : String(error), {
        hint: 'This is a bug in epetsync; please report it with the log file.',
        cause: error,
      });
  const shape = redactValue(known.toJSON()) as ReturnType<EpetsyncError['toJSON']>;
  if (target.json) {
    target.stdout.write(`${JSON.stringify({ ok: false, command: target.command, error: shape }, null, 2)}\n`);
  } else {
    const red = target.color ? '\u001b[31m' : '';
    const reset = target.color ? '\u001b[39m' : '';
    target.stderr.write(`${red}Error:${reset} ${redactText(known.message)}\n`);
    if (known.hint) target.stderr.write(`Try: ${redactText(known.hint)}\n`);
    if (!isEpetsyncError(error) && error instanceof Error && error.stack) target.stderr.write(`${redactText(error.stack)}\n`);
  }
  return known.exitCode;
}
