import { describe, expect, it } from 'vitest';
import { hashPassword, hasherOf, verifyDjangoHash, verifyScryptHash } from '../../src/server/auth/passwords.js';
import { FailureLimiter, clientKey } from '../../src/server/auth/rate-limit.js';
import { looksLikeToken, newToken, tokenHash } from '../../src/server/auth/tokens.js';

describe('auth passwords', () => {
  // RFC 7914 §11 PBKDF2-HMAC-SHA256 vector (P="passwd", S="salt", c=1), first 32 bytes, in Django's layout.
  const RFC7914 = `pbkdf2_sha256$1$salt$${Buffer.from('55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc', 'hex').toString('base64')}`;
  // RFC 6070 PBKDF2-HMAC-SHA1 vector (P="password", S="salt", c=1, dkLen=20).
  const RFC6070 = `pbkdf2_sha1$1$salt$${Buffer.from('0c60c80f961f0e71f3a9b524af6012062fe037a6', 'hex').toString('base64')}`;

  it('verifies Django pbkdf2_sha256 and pbkdf2_sha1 hashes against published vectors', async () => {
    expect(await verifyDjangoHash('passwd', RFC7914)).toEqual({ ok: true, hasher: 'pbkdf2_sha256', supported: true });
    expect(await verifyDjangoHash('passwd!', RFC7914)).toEqual({ ok: false, hasher: 'pbkdf2_sha256', supported: true });
    expect(await verifyDjangoHash('password', RFC6070)).toEqual({ ok: true, hasher: 'pbkdf2_sha1', supported: true });
  });

  it('names other hashers without verifying them', async () => {
    expect(await verifyDjangoHash('x', 'argon2$argon2id$v=19$m=102400,t=2,p=8$c2FsdA$aGFzaA')).toMatchObject({ ok: false, hasher: 'argon2', supported: false });
    expect(await verifyDjangoHash('x', 'bcrypt_sha256$$2b$12$abcdefghijklmnopqrstuv')).toMatchObject({ hasher: 'bcrypt_sha256', supported: false });
    expect(hasherOf('!abc')).toBe('unusable');
    expect(hasherOf('')).toBe('unusable');
    expect(hasherOf('5f4dcc3b5aa765d61d8327deb882cf99')).toBe('unknown');
    expect(await verifyDjangoHash('x', 'pbkdf2_sha256$notanumber$salt$aGFzaA==')).toMatchObject({ ok: false, supported: false });
  });

  it('hashes epetsync passwords with scrypt and a fresh salt', async () => {
    const a = await hashPassword('s3cret-pass');
    const b = await hashPassword('s3cret-pass');
    expect(a).not.toBe(b);
    expect((await verifyScryptHash('s3cret-pass', a)).ok).toBe(true);
    expect((await verifyScryptHash('s3cret-pasS', a)).ok).toBe(false);
    expect(await verifyScryptHash('x', 'scrypt$3$8$1$c2FsdA==$aGFzaA==')).toMatchObject({ ok: false, supported: false });
  });
});

describe('auth tokens', () => {
  it('makes eps_ tokens of 32 random bytes and hashes them with SHA-256', () => {
    const token = newToken();
    expect(looksLikeToken(token)).toBe(true);
    expect(Buffer.from(token.slice(4), 'base64url')).toHaveLength(32);
    expect(tokenHash(token)).toHaveLength(32);
    expect(newToken()).not.toBe(token);
    expect(looksLikeToken(`${token}=`)).toBe(false);
  });
});

describe('auth rate limit', () => {
  it('counts failures in a sliding window and says when to retry', () => {
    const limiter = new FailureLimiter({ max: 3, windowSeconds: 60 });
    limiter.fail('k', 0);
    limiter.fail('k', 10_000);
    expect(limiter.retryAfter('k', 10_000)).toBe(0);
    limiter.fail('k', 20_000);
    expect(limiter.retryAfter('k', 20_000)).toBe(40);
    expect(limiter.retryAfter('k', 59_500)).toBe(1);
    expect(limiter.retryAfter('k', 60_000)).toBe(0);
    expect(limiter.retryAfter('other', 20_000)).toBe(0);
    limiter.reset('k');
    expect(limiter.retryAfter('k', 20_000)).toBe(0);
  });

  it('forgets the oldest keys beyond its cap', () => {
    const limiter = new FailureLimiter({ max: 1, windowSeconds: 60 }, 2);
    limiter.fail('a', 0);
    limiter.fail('b', 1);
    limiter.fail('c', 2);
    expect(limiter.retryAfter('a', 3)).toBe(0);
    expect(limiter.retryAfter('c', 3)).toBe(60);
  });

  it('takes back one failure counted up front', () => {
    const limiter = new FailureLimiter({ max: 2, windowSeconds: 60 });
    limiter.fail('k', 5);
    limiter.fail('k', 5);
    expect(limiter.retryAfter('k', 5)).toBe(60);
    limiter.forgive('k', 5);
    expect(limiter.retryAfter('k', 5)).toBe(0);
    limiter.forgive('k', 5);
    limiter.forgive('k', 5);
    expect(limiter.retryAfter('k', 5)).toBe(0);
  });

  it('keys IPv4 by address and IPv6 by /64', () => {
    expect(clientKey('192.0.2.1')).toBe('192.0.2.1');
    expect(clientKey('::ffff:192.0.2.1')).toBe('192.0.2.1');
    expect(clientKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(clientKey('2001:0DB8:0000:0000:1:2:3:4')).toBe('2001:db8:0:0::/64');
    expect(clientKey('2001:db8:1:2:3::')).toBe('2001:db8:1:2::/64');
    expect(clientKey('::1')).toBe('0:0:0:0::/64');
    expect(clientKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
  });
});
