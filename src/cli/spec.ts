import type { Command } from 'commander';
import type { CommandContext } from './context.js';
import type { Output } from './output.js';

/** Implements one subcommand: `run` returns the result, `render` prints it for a person. */
export interface CommandModule<Options = Record<string, unknown>, Result = unknown> {
  /** Does the work and returns a JSON-able result; never prints it and never exits. */
  run(ctx: CommandContext, options: Options, args: string[]): Promise<Result>;
  /** Prints the result for a person (not used with --json). */
  render(result: Result, out: Output): void;
  /** Returns the exit code a successful result maps to (default 0), e.g. 1 when problems were found. */
  exitCode?(result: Result): number;
}

/** Declares one subcommand for the CLI: flags, help text and a lazy loader for its module. */
export interface CommandSpec {
  name: string;
  /** Positional arguments in commander syntax, e.g. `[file]`. */
  args?: string;
  description: string;
  /** Example invocations shown in `--help`; each starts with `epetsync`. */
  examples: string[];
  /** Adds the command's own options. */
  define?(cmd: Command): void;
  /** Imports the implementation only when the command runs (keeps --help fast). */
  load?(): Promise<CommandModule<never, unknown>>;
  subcommands?: CommandSpec[];
}
