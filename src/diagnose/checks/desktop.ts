import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import type { Check } from '../types.js';

/** Describes a process that has the database (or its -wal/-shm) open. */
export interface FileHolder {
  pid: number;
  command: string;
  files: string[];
}

/** Lists other processes holding `paths` open, by reading /proc/<pid>/fd (Linux only; others' processes may be hidden without root). */
export function processesHolding(paths: readonly string[], self = process.pid): FileHolder[] {
  const wanted = new Set(paths);
  const out: FileHolder[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === self) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${entry}/fd`);
    } catch {
      continue;
    }
    const files = new Set<string>();
    for (const fd of fds) {
      try {
        const target = readlinkSync(`/proc/${entry}/fd/${fd}`);
        if (wanted.has(target)) files.add(target);
      } catch {
        // The descriptor closed meanwhile.
      }
    }
    if (files.size === 0) continue;
    let command = '';
    try {
      command = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ').slice(0, 160);
    } catch {
      command = '?';
    }
    out.push({ pid: Number(entry), command, files: [...files] });
  }
  return out;
}

/** Lists pids holding a read lock on a WAL reader slot of `shm` (bytes 123..127 of the -shm file: a read transaction in progress), from /proc/locks. */
export function walReaders(shm: string): number[] {
  let inode: number;
  try {
    inode = statSync(shm).ino;
  } catch {
    return [];
  }
  const pids = new Set<number>();
  for (const line of readFileSync('/proc/locks', 'utf8').split('\n')) {
    // e.g. "1: POSIX  ADVISORY  READ 4242 08:01:123456 124 124"
    const m = /POSIX\s+ADVISORY\s+READ\s+(\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s+(\d+)\s+(\d+|EOF)/.exec(line);
    if (!m || Number(m[2]) !== inode) continue;
    const start = Number(m[3]);
    // Slot 0 (byte 123) reads the database file itself: a checkpoint cannot write under it either.
    if (start >= 123 && start <= 127) pids.add(Number(m[1]));
  }
  pids.delete(process.pid);
  return [...pids];
}

/** Lists the desktop-app group: which processes hold the database open, and readers that block checkpoints. */
export const DESKTOP_CHECKS: Check[] = [
  {
    id: 'desktop.holders',
    group: 'desktop',
    title: 'processes with the database open',
    needs: ['db.exists'],
    async run(ctx) {
      if ((ctx.options.platform ?? process.platform) !== 'linux') return { status: 'skipped', found: 'not available on this platform (Linux /proc only)' };
      const path = ctx.config().database.path;
      const holders = processesHolding([path, `${path}-wal`, `${path}-shm`, `${path}-journal`]);
      if (holders.length === 0) return { status: 'ok', found: 'no other process has the database open', data: { holders: [] } };
      return { status: 'ok', found: `open in ${holders.map((h) => `pid ${h.pid} (${h.command})`).join(', ')}`, data: { holders } };
    },
  },
  {
    id: 'desktop.readers',
    group: 'desktop',
    title: 'no reader blocking checkpoints',
    needs: ['db.exists'],
    async run(ctx) {
      if ((ctx.options.platform ?? process.platform) !== 'linux') return { status: 'skipped', found: 'not available on this platform (Linux /proc/locks only)' };
      const path = ctx.config().database.path;
      const readers = walReaders(`${path}-shm`);
      if (readers.length === 0) return { status: 'ok', found: 'no read transaction is open', data: { readers: [] } };
      const holders = processesHolding([path, `${path}-wal`, `${path}-shm`]);
      const names = readers.map((pid) => `pid ${pid}${holders.find((h) => h.pid === pid) ? ` (${holders.find((h) => h.pid === pid)!.command})` : ''}`);
      return {
        status: 'warn',
        found: `${names.join(', ')} ${readers.length > 1 ? 'are' : 'is'} in a read transaction: the WAL cannot be checkpointed past it and grows`,
        remedy: 'If it stays (see db.wal-size), restart that program (the desktop app: app.restart_command, or epetsync fix).',
        data: { readers },
      };
    },
  },
];
