/**
 * Secret scrubbing shared by logs, error messages and output.
 *
 * Two layers: key names that always hold secrets (password, token, authorization, …) are
 * replaced wholesale, and every secret value epetsync has seen (config password, tokens) is
 * registered so that it is scrubbed wherever it turns up in text, even inside an error message
 * written by a library.
 */

/** Replaces a secret in output. */
export const REDACTED = '[REDACTED]';

const SECRET_KEY = /^(password|passwd|pass|secret|token|access_token|refresh_token|authorization|cookie|set-cookie|api[_-]?key|x-api-key|proxy-authorization)$/i;
const secrets = new Set<string>();

/** Registers a secret value so that {@link redactText} scrubs it everywhere; short values are ignored to avoid scrubbing common words. */
export function registerSecret(value: string | undefined | null): void {
  if (typeof value === 'string' && value.length >= 4) secrets.add(value);
}

/** Forgets every registered secret (tests only). */
export function clearSecrets(): void {
  secrets.clear();
}

/** Returns true when an object key by its name always holds a secret. */
export function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key);
}

/** Returns `text` with registered secrets, URL credentials and Authorization values scrubbed. */
export function redactText(text: string): string {
  let out = text;
  for (const secret of secrets) {
    if (out.includes(secret)) out = out.split(secret).join(REDACTED);
    // JSON-escaped spelling of the same secret (a quote or backslash inside a password).
    const escaped = JSON.stringify(secret).slice(1, -1);
    if (escaped !== secret && out.includes(escaped)) out = out.split(escaped).join(REDACTED);
  }
  return out
    .replace(/([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s"']+):[^@/?#\s"']+@/gi, `$1:${REDACTED}@`)
    .replace(/\b(Bearer|Token|Basic)\s+[A-Za-z0-9._~+/=-]{8,}/g, `$1 ${REDACTED}`);
}

/** Returns a deep copy of `value` with secret keys replaced and all strings scrubbed; errors become plain objects. */
export function redactValue(value: unknown, depth = 0): unknown {
  if (depth > 8) return '[…]';
  if (typeof value === 'string') return redactText(value);
  if (value === null || typeof value !== 'object') return value;
  if (value instanceof Error) {
    const plain: Record<string, unknown> = { type: value.name, message: redactText(value.message) };
    if (value.stack) plain.stack = redactText(value.stack);
    for (const [k, v] of Object.entries(value)) plain[k] = isSecretKey(k) ? REDACTED : redactValue(v, depth + 1);
    if (value.cause !== undefined) plain.cause = redactValue(value.cause, depth + 1);
    return plain;
  }
  if (Array.isArray(value)) return value.map((v) => redactValue(v, depth + 1));
  if (value instanceof URL) return redactText(value.href);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = isSecretKey(k) && v != null ? REDACTED : redactValue(v, depth + 1);
  return out;
}
