import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { appendFileSync, createWriteStream, mkdirSync, mkdtempSync, writeFileSync, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { seededRandom } from '../../src/sync/generate.js';
import { BIN } from '../helpers/cli.js';

/**
 * The shared kit of the reliability suite (issue 9, docs/reliability.md).
 *
 * Every file under test/chaos/ runs twice over: a short version inside the normal `npm test`
 * (one case of each kind, small counts) and the long version under `npm run test:chaos`
 * (`EPETSYNC_CHAOS=long`), which repeats faults and kills many times. Files pick their counts
 * with {@link scaled}, report what they did with {@link recordFigures}, keep every file they
 * make (logs included) under {@link chaosWorkDir}, and name every secret they use with
 * {@link registerSecret}. After a long run, `scripts/chaos.mjs` greps everything under the work
 * folder for every registered secret and writes the figures into docs/reliability.md.
 */

/** True under `npm run test:chaos`. */
export const CHAOS_LONG = process.env.EPETSYNC_CHAOS === 'long';

/** Folder of the current long run's figures, secrets and work files (unset in the normal test run). */
const OUT = process.env.EPETSYNC_CHAOS_OUT;

/** Returns `short` in the normal test run and `long` under `npm run test:chaos`. */
export function scaled<T>(short: T, long: T): T {
  return CHAOS_LONG ? long : short;
}

/** Answers of one kind of hostile request: how many were tried, and how the other side answered each (by status or error name). */
export interface HostileTally {
  tried: number;
  answers: Record<string, number>;
}

/** What one part of the suite did and saw; every field but `part` and `title` is optional. */
export interface ChaosFigures {
  /** Stable id, one file of figures per part (e.g. "network", "crash.migrate"). */
  part: string;
  /** One line saying what ran, for the report. */
  title: string;
  seconds?: number;
  /** Faults injected, by kind (e.g. reset, stall, latency, outage). */
  faults?: Record<string, number>;
  /** SIGKILLs, by process (e.g. monitor, migrate, serve). */
  kills?: Record<string, number>;
  /** Restarts, by what was restarted (e.g. postgresql, serve). */
  restarts?: Record<string, number>;
  /** Rows written on each side during the part, and what the final comparison found. */
  rows?: { desktop_written: number; web_written: number; lost: number; duplicated: number };
  /** Hostile requests or answers, by kind. */
  hostile?: Record<string, HostileTally>;
  /** Anything else worth a line in the report (name → value). */
  checks?: Record<string, number | string | boolean>;
}

/** Adds one answer to a tally (a status code such as "400" or an error name such as "ProtocolError"). */
export function tally(t: HostileTally, answer: string): void {
  t.tried += 1;
  t.answers[answer] = (t.answers[answer] ?? 0) + 1;
}

/** Writes a part's figures for the report; a no-op outside `npm run test:chaos`. */
export function recordFigures(figures: ChaosFigures): void {
  if (!OUT) return;
  mkdirSync(join(OUT, 'figures'), { recursive: true });
  writeFileSync(join(OUT, 'figures', `${figures.part.replace(/[^\w.-]/g, '_')}.json`), `${JSON.stringify(figures, null, 2)}\n`);
}

/** Names a secret (password, token, database password) that must appear in no file the suite wrote. */
export function registerSecret(secret: string): void {
  if (!OUT || secret.length < 6) return;
  appendFileSync(join(OUT, 'secrets.txt'), `${secret}\n`);
}

/** Makes a fresh folder for a part's files (databases, configs, logs); under the run's work folder during a long run, so its logs get grepped. */
export function chaosWorkDir(name: string): string {
  const root = OUT ? join(OUT, 'work') : tmpdir();
  mkdirSync(root, { recursive: true });
  return mkdtempSync(join(root, `epetsync-chaos-${name.replace(/[^\w.-]/g, '_')}-`));
}

/** The seeded PRNG of the clinic generator (mulberry32), so a run's random fault schedule can be replayed from its seed. */
export const prng = seededRandom;

/** The seed of this run: EPETSYNC_CHAOS_SEED when set (to replay a failure), else the time. Print it in failure messages. */
export const CHAOS_SEED = Number(process.env.EPETSYNC_CHAOS_SEED ?? Date.now() % 2 ** 31);

/** Polls `check` every 50 ms until it holds and returns the ms it took; fails after `ms` with the seed and `describe()`. */
export async function waitUntil(check: () => boolean | Promise<boolean>, ms: number, describe: () => string = () => '', seed = CHAOS_SEED): Promise<number> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > ms) throw new Error(`condition not met within ${ms} ms (seed ${seed}) ${describe().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return Date.now() - start;
}

/** A running `epetsync monitor` whose stdout/stderr go to `<name>.out` / `<name>.err` and to memory. */
export interface MonitorProcess {
  child: ChildProcessWithoutNullStreams;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | null>;
}

/**
 * Spawns the built `epetsync monitor` with `config` (password from the environment, as a scheduled
 * task runs it), tees its output into files in `dir` (the long run greps them for secrets) and
 * resolves once it printed "Monitoring "; fails when it exits first. The output files are pushed
 * onto `streams` for the caller to close; `track` sees the child as soon as it is spawned.
 */
export async function startMonitorProcess(options: {
  config: string;
  cwd: string;
  password: string;
  dir: string;
  name: string;
  streams: WriteStream[];
  args?: string[];
  seed?: number;
  track?: (child: ChildProcessWithoutNullStreams) => void;
}): Promise<MonitorProcess> {
  const child = spawn(process.execPath, [BIN, '--config', options.config, 'monitor', ...(options.args ?? [])], {
    cwd: options.cwd,
    env: { ...process.env, NO_COLOR: '1', CI: 'true', EPETSYNC_PASSWORD: options.password },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  options.track?.(child);
  const outFile = createWriteStream(join(options.dir, `${options.name}.out`));
  const errFile = createWriteStream(join(options.dir, `${options.name}.err`));
  options.streams.push(outFile, errFile);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    outFile.write(d);
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    errFile.write(d);
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  await waitUntil(() => /Monitoring /.test(stdout) || child.exitCode !== null, 30_000, () => stdout + stderr, options.seed);
  if (child.exitCode !== null) throw new Error(`monitor exited early (${child.exitCode}): ${stdout}${stderr}`);
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

/** Writes what an `epetsync serve` child printed so far to `<dir>/serve.out` and `serve.err`, where the secret grep reads it. */
export function saveServeOutput(server: { output(): { stdout: string; stderr: string } }, dir: string): void {
  const { stdout, stderr } = server.output();
  writeFileSync(join(dir, 'serve.out'), stdout);
  writeFileSync(join(dir, 'serve.err'), stderr);
}
