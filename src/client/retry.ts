/** Backoff, Retry-After and abortable sleeping for the client's retry loop. */
import { setTimeout as delay } from 'node:timers/promises';

/** Describes the retry policy; see docs/client.md. */
export interface RetryPolicy {
  /** Retries after the first attempt (default 4). */
  retries: number;
  /** First backoff step in ms (default 250). */
  baseDelayMs: number;
  /** Longest backoff step in ms (default 10 s). */
  maxDelayMs: number;
  /** A Retry-After longer than this is not waited for: the error is reported instead (default 120 s). */
  maxRetryAfterMs: number;
}

/** Lists the default retry policy. */
export const DEFAULT_RETRY: RetryPolicy = { retries: 4, baseDelayMs: 250, maxDelayMs: 10_000, maxRetryAfterMs: 120_000 };

/** Returns the wait before retry number `attempt` (0-based): exponential with "equal jitter", so waits never collapse to zero. */
export function backoffDelay(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt);
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** Returns the ms a `Retry-After` header asks to wait (seconds or HTTP date), or undefined when absent or unreadable. */
export function parseRetryAfter(header: string | string[] | undefined, now = Date.now()): number | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined || value.trim() === '') return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** Sleeps `ms`, rejecting with the signal's reason as soon as it aborts. */
export async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  await delay(ms, undefined, signal ? { signal } : undefined);
}
