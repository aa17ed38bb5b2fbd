/** Describes one limit: at most `max` failures within `windowSeconds`. */
export interface LimitRule {
  max: number;
  windowSeconds: number;
}

/**
 * Counts failures per key in a sliding window, in this process's memory only: each server
 * instance keeps its own counts, and a restart forgets them.
 */
export class FailureLimiter {
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly rule: LimitRule,
    /** Caps memory under a spray of distinct keys; the oldest keys are forgotten first. */
    private readonly maxKeys = 10_000,
  ) {}

  /** Returns the seconds until `key` may try again, or 0 when it is not limited. */
  retryAfter(key: string, nowMs: number): number {
    const recent = this.recent(key, nowMs);
    if (recent.length < this.rule.max) return 0;
    // The attempt becomes allowed once enough of the oldest failures leave the window.
    const unlocking = recent[recent.length - this.rule.max]!;
    return Math.max(1, Math.ceil((unlocking + this.rule.windowSeconds * 1000 - nowMs) / 1000));
  }

  /** Records one failure for `key`. */
  fail(key: string, nowMs: number): void {
    const recent = this.recent(key, nowMs);
    recent.push(nowMs);
    this.failures.delete(key);
    this.failures.set(key, recent);
    if (this.failures.size > this.maxKeys) this.evict(nowMs);
  }

  /** Takes back one failure recorded at `atMs` (an attempt counted up front that turned out right). */
  forgive(key: string, atMs: number): void {
    const all = this.failures.get(key);
    const index = all?.lastIndexOf(atMs) ?? -1;
    if (index < 0) return;
    all!.splice(index, 1);
    if (all!.length === 0) this.failures.delete(key);
  }

  /** Forgets the failures of `key` (after a successful login). */
  reset(key: string): void {
    this.failures.delete(key);
  }

  private recent(key: string, nowMs: number): number[] {
    const all = this.failures.get(key);
    if (!all) return [];
    const horizon = nowMs - this.rule.windowSeconds * 1000;
    const recent = all.filter((t) => t > horizon);
    if (recent.length === 0) this.failures.delete(key);
    else if (recent.length !== all.length) this.failures.set(key, recent);
    return recent;
  }

  private evict(nowMs: number): void {
    for (const key of [...this.failures.keys()]) this.recent(key, nowMs);
    // Map order is least recently failed first.
    for (const key of this.failures.keys()) {
      if (this.failures.size <= this.maxKeys) break;
      this.failures.delete(key);
    }
  }
}

/** Returns the rate-limit key of a client address: IPv4 as is, IPv6 by its /64 (one host usually holds the whole /64). */
export function clientKey(ip: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(ip);
  if (mapped) return mapped[1]!;
  if (!ip.includes(':')) return ip;
  const [head = '', tail = ''] = ip.split('%', 1)[0]!.toLowerCase().split('::', 2) as [string?, string?];
  const left = head === '' ? [] : head.split(':');
  const right = ip.includes('::') ? (tail === '' ? [] : tail.split(':')) : [];
  const groups = ip.includes('::') ? [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right] : left;
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}
