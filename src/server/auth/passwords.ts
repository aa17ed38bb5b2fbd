import { pbkdf2, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

/** Lists the scrypt cost epetsync's own accounts are hashed with (N=2^15, r=8, p=1: 32 MiB, tens of ms). */
export const SCRYPT_PARAMS = { N: 32768, r: 8, p: 1 } as const;

const SCRYPT_KEY_BYTES = 32;
const SCRYPT_SALT_BYTES = 16;
// Node's default maxmem (32 MiB) is exactly 128*N*r for N=2^15, r=8 and rejects it; allow headroom.
const SCRYPT_MAXMEM = 256 * 1024 * 1024;
// Bounds for costs read back from stored hashes, so a corrupt row cannot stall the server.
const MAX_SCRYPT_N = 1 << 20;
const MAX_PBKDF2_ITERATIONS = 20_000_000;

/** Tells what checking a password against a stored hash found; `hasher` names the algorithm, never the hash. */
export interface PasswordCheck {
  ok: boolean;
  /** The hash's algorithm prefix (`pbkdf2_sha256`, `scrypt`, `argon2`, `unusable`, …). */
  hasher: string;
  /** True when epetsync can verify this kind of hash at all. */
  supported: boolean;
}

function scryptAsync(password: string | Buffer, salt: Buffer, keylen: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keylen, options, (error, key) => (error ? reject(error) : resolve(key)));
  });
}

function pbkdf2Async(password: string, salt: string, iterations: number, keylen: number, digest: 'sha256' | 'sha1'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    pbkdf2(password, salt, iterations, keylen, digest, (error, key) => (error ? reject(error) : resolve(key)));
  });
}

function equalBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Returns `scrypt$N$r$p$<salt b64>$<hash b64>` for a new password of epetsync's own accounts. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(SCRYPT_SALT_BYTES);
  const { N, r, p } = SCRYPT_PARAMS;
  const key = await scryptAsync(password.normalize('NFC'), salt, SCRYPT_KEY_BYTES, { N, r, p, maxmem: SCRYPT_MAXMEM });
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

/** Checks a password against an epetsync `scrypt$…` hash. */
export async function verifyScryptHash(password: string, encoded: string): Promise<PasswordCheck> {
  const parts = encoded.split('$');
  const [algorithm, nText, rText, pText, saltText, hashText] = parts;
  if (algorithm !== 'scrypt' || parts.length !== 6) return { ok: false, hasher: hasherOf(encoded), supported: false };
  const N = Number(nText);
  const r = Number(rText);
  const p = Number(pText);
  const salt = Buffer.from(saltText!, 'base64');
  const expected = Buffer.from(hashText!, 'base64');
  const sane = [N, r, p].every(Number.isSafeInteger) && N > 1 && N <= MAX_SCRYPT_N && (N & (N - 1)) === 0 && r >= 1 && r <= 32 && p >= 1 && p <= 16;
  if (!sane || expected.length < 16 || salt.length === 0) return { ok: false, hasher: 'scrypt', supported: false };
  const key = await scryptAsync(password.normalize('NFC'), salt, expected.length, { N, r, p, maxmem: SCRYPT_MAXMEM });
  return { ok: equalBytes(key, expected), hasher: 'scrypt', supported: true };
}

/**
 * Checks a password against a Django `password` column: `pbkdf2_sha256$<iterations>$<salt>$<b64>`
 * or `pbkdf2_sha1$…`. Other hashers (argon2, bcrypt, unusable `!…`) answer `supported: false`.
 */
export async function verifyDjangoHash(password: string, encoded: string): Promise<PasswordCheck> {
  const hasher = hasherOf(encoded);
  if (hasher !== 'pbkdf2_sha256' && hasher !== 'pbkdf2_sha1') return { ok: false, hasher, supported: false };
  const parts = encoded.split('$');
  if (parts.length !== 4) return { ok: false, hasher, supported: false };
  const iterations = Number(parts[1]);
  const salt = parts[2]!;
  const expected = Buffer.from(parts[3]!, 'base64');
  if (!Number.isSafeInteger(iterations) || iterations < 1 || iterations > MAX_PBKDF2_ITERATIONS || salt === '' || expected.length === 0) {
    return { ok: false, hasher, supported: false };
  }
  // Django hashes the UTF-8 bytes of password and salt, with the digest's size as key length.
  const key = await pbkdf2Async(password, salt, iterations, expected.length, hasher === 'pbkdf2_sha256' ? 'sha256' : 'sha1');
  return { ok: equalBytes(key, expected), hasher, supported: true };
}

/** Returns the algorithm prefix of a stored hash (`unusable` for Django's `!…` and empty passwords). */
export function hasherOf(encoded: string): string {
  if (encoded === '' || encoded.startsWith('!')) return 'unusable';
  const prefix = encoded.split('$', 1)[0]!;
  return /^[a-z0-9_]{1,32}$/i.test(prefix) && encoded.includes('$') ? prefix : 'unknown';
}

/** Returns the iteration count of a `pbkdf2_sha256$…` hash, or undefined. */
export function pbkdf2Iterations(encoded: string): number | undefined {
  const match = /^pbkdf2_sha(?:256|1)\$(\d{1,9})\$/.exec(encoded);
  return match ? Number(match[1]) : undefined;
}

/** Returns a Django-format pbkdf2_sha256 hash of a random password: verifying it costs what a real one does. */
export async function dummyDjangoHash(iterations: number): Promise<string> {
  const salt = randomBytes(16).toString('base64url').slice(0, 22);
  const key = await pbkdf2Async(randomBytes(16).toString('hex'), salt, iterations, 32, 'sha256');
  return `pbkdf2_sha256$${iterations}$${salt}$${key.toString('base64')}`;
}

/** Returns an epetsync scrypt hash of a random password, for equal-time checks of unknown usernames. */
export function dummyScryptHash(): Promise<string> {
  return hashPassword(randomBytes(16).toString('hex'));
}
