import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Writable } from 'node:stream';
import pino, { type Logger, type LevelWithSilent } from 'pino';
import { redactText, redactValue } from './redact.js';

export type { Logger } from 'pino';

/** Lists the log levels `--log-level` accepts. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

/** Describes where and how much to log. */
export interface LoggerOptions {
  /** JSON-lines log file; its folder is created. Omit for no file. */
  file?: string | undefined;
  /** Level for the file (default info). */
  fileLevel?: LevelWithSilent;
  /** Level for human lines on `terminal` (default warn). */
  terminalLevel?: LevelWithSilent;
  /** Where human lines go (default stderr); output results never go here. */
  terminal?: NodeJS.WritableStream;
  /** Name of the component, e.g. the command. */
  name?: string;
}

const LEVEL_NAMES: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };

/** Returns a stream that turns pino JSON lines into `level: message` lines for a person. */
function humanLines(target: NodeJS.WritableStream): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      try {
        const entry = JSON.parse(chunk.toString('utf8')) as { level: number; msg?: string; err?: { message?: string }; terminal?: boolean };
        // An entry the CLI already shows the person in another form (an error's Error/Try lines).
        if (entry.terminal === false) return done();
        const level = LEVEL_NAMES[entry.level] ?? String(entry.level);
        const detail = entry.err?.message && entry.err.message !== entry.msg ? ` (${entry.err.message})` : '';
        target.write(`${level}: ${entry.msg ?? ''}${detail}\n`);
      } catch {
        target.write(chunk);
      }
      done();
    },
  });
}

/**
 * Creates the process logger: JSON lines to the log file, human lines to stderr (entries logged
 * with `terminal: false` go to the file only).
 * Every line passes through secret scrubbing at the very end, so a secret that slipped into a
 * message, an error or a URL is redacted whatever the level.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const streams: pino.StreamEntry[] = [];
  const fileLevel = options.fileLevel ?? 'info';
  const terminalLevel = options.terminalLevel ?? 'warn';
  if (options.file && fileLevel !== 'silent') {
    mkdirSync(dirname(options.file), { recursive: true });
    streams.push({ level: fileLevel, stream: pino.destination({ dest: options.file, sync: true, mkdir: true }) });
  }
  if (terminalLevel !== 'silent') {
    streams.push({ level: terminalLevel, stream: humanLines(options.terminal ?? process.stderr) });
  }
  const levels = [fileLevel, terminalLevel].filter((l) => l !== 'silent');
  const lowest = levels.length === 0 ? 'silent' : levels.reduce((a, b) => (pino.levels.values[a]! <= pino.levels.values[b]! ? a : b));
  return pino(
    {
      name: options.name ?? 'epetsync',
      level: lowest,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      serializers: { err: (e: unknown) => redactValue(e), error: (e: unknown) => redactValue(e) },
      formatters: { log: (obj) => redactValue(obj) as Record<string, unknown> },
      hooks: { streamWrite: (line) => redactText(line) },
    },
    streams.length > 0 ? pino.multistream(streams) : pino.destination('/dev/null'),
  );
}

/** Returns a logger that writes nothing (for library use and tests). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
