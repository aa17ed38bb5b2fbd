import { createInterface } from 'node:readline/promises';
import { Chalk, type ChalkInstance } from 'chalk';

/** Describes the terminal epetsync writes to. */
export interface OutputOptions {
  stdout?: NodeJS.WriteStream | NodeJS.WritableStream;
  stderr?: NodeJS.WriteStream | NodeJS.WritableStream;
  stdin?: NodeJS.ReadableStream;
  /** `--json`: results and errors are JSON on stdout, nothing decorative anywhere. */
  json?: boolean;
  /** false for `--no-color`; undefined decides from NO_COLOR, FORCE_COLOR and the TTY. */
  color?: boolean | undefined;
  env?: NodeJS.ProcessEnv;
}

/** A running spinner or progress line; all methods are safe no-ops when not on a TTY. */
export interface Activity {
  update(text: string): void;
  succeed(text?: string): void;
  fail(text?: string): void;
  stop(): void;
}

/**
 * Renders results for a person: colours and spinners on a terminal, plain lines otherwise.
 * Results go to stdout; spinners, progress and warnings go to stderr.
 */
export class Output {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly stdin: NodeJS.ReadableStream;
  readonly json: boolean;
  /** True when stderr is an interactive terminal (spinners, progress bars, prompts). */
  readonly interactive: boolean;
  readonly color: ChalkInstance;

  constructor(options: OutputOptions = {}) {
    const env = options.env ?? process.env;
    this.stdout = options.stdout ?? process.stdout;
    this.stderr = options.stderr ?? process.stderr;
    this.stdin = options.stdin ?? process.stdin;
    this.json = options.json ?? false;
    const stderrTty = (this.stderr as NodeJS.WriteStream).isTTY === true;
    const stdoutTty = (this.stdout as NodeJS.WriteStream).isTTY === true;
    this.interactive = stderrTty && !this.json && env.CI !== 'true';
    const noColor = env.NO_COLOR !== undefined && env.NO_COLOR !== '';
    const forced = env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '0';
    const useColor = options.color ?? (!noColor && (forced || stdoutTty));
    this.color = new Chalk({ level: useColor && !this.json ? 1 : 0 });
  }

  /** Writes one line of result text to stdout. */
  line(text = ''): void {
    this.stdout.write(`${text}\n`);
  }

  /** Writes a value as one JSON document to stdout. */
  writeJson(value: unknown): void {
    this.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  /** Writes a warning line to stderr (suppressed in --json, where warnings travel in the result). */
  warn(text: string): void {
    if (!this.json) this.stderr.write(`${this.color.yellow('Warning:')} ${text}\n`);
  }

  /** Writes a note line to stderr. */
  note(text: string): void {
    if (!this.json) this.stderr.write(`${text}\n`);
  }

  /** Renders rows as an aligned table on stdout. */
  table(headers: string[], rows: Array<Array<string | number>>): void {
    const cells = [headers, ...rows.map((r) => r.map(String))];
    const widths = headers.map((_, i) => Math.max(...cells.map((r) => visibleLength(r[i] ?? ''))));
    const fmt = (r: string[]): string => r.map((c, i) => c + ' '.repeat(widths[i]! - visibleLength(c))).join('  ').trimEnd();
    this.line(this.color.bold(fmt(headers)));
    for (const r of cells.slice(1)) this.line(fmt(r));
  }

  /** Starts a spinner on a terminal; elsewhere a silent activity (the log file has the detail). */
  async activity(text: string): Promise<Activity> {
    if (!this.interactive) return { update() {}, succeed() {}, fail() {}, stop() {} };
    const { default: ora } = await import('ora');
    const spinner = ora({ text, stream: this.stderr as NodeJS.WriteStream, color: 'cyan' }).start();
    return {
      update: (t) => { spinner.text = t; },
      succeed: (t) => { spinner.succeed(t); },
      fail: (t) => { spinner.fail(t); },
      stop: () => { spinner.stop(); },
    };
  }

  /** Asks a yes/no question on the terminal; returns false without asking when not interactive. */
  async confirm(question: string): Promise<boolean> {
    if (!this.interactive || (this.stdin as NodeJS.ReadStream).isTTY !== true) return false;
    const rl = createInterface({ input: this.stdin, output: this.stderr });
    try {
      const answer = await rl.question(`${question} [y/N] `);
      return /^y(es)?$/i.test(answer.trim());
    } finally {
      rl.close();
    }
  }
}

function visibleLength(s: string): number {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\u001b\[[0-9;]*m/g, '').length;
}

/** Formats a byte count for people (1.2 MB). */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** Formats a duration in seconds for people (45 s, 3 min, 2 h, 4 d). */
export function formatAge(seconds: number): string {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  if (seconds < 36 * 3600) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}
