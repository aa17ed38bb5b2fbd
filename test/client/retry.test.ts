import { describe, expect, it } from 'vitest';
import { backoffDelay, DEFAULT_RETRY, parseRetryAfter } from '../../src/client/retry.js';
import { isRetryable, candidateBases, RequestRejectedError } from '../../src/client/index.js';
import { AuthError, ConnectionError, ProtocolError, ServerError } from '../../src/errors.js';

describe('client retry policy', () => {
  it('grows exponentially with jitter between half and all of the step, capped', () => {
    const policy = { ...DEFAULT_RETRY, baseDelayMs: 100, maxDelayMs: 1000 };
    expect(backoffDelay(0, policy, () => 0)).toBe(50);
    expect(backoffDelay(0, policy, () => 1)).toBe(100);
    expect(backoffDelay(3, policy, () => 0.5)).toBe(600);
    expect(backoffDelay(10, policy, () => 1)).toBe(1000);
  });

  it('reads Retry-After in seconds or as an HTTP date', () => {
    expect(parseRetryAfter('3')).toBe(3000);
    expect(parseRetryAfter(new Date(10_000).toUTCString(), 4000)).toBe(6000);
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter(undefined)).toBeUndefined();
  });

  it('retries transport failures, 5xx, 408 and 429 only', () => {
    expect(isRetryable(new ConnectionError('EPS_CONNECT_REFUSED', 'x'))).toBe(true);
    expect(isRetryable(new ConnectionError('EPS_CONNECT_RESET', 'x'))).toBe(true);
    expect(isRetryable(new ConnectionError('EPS_CONNECT_TLS', 'x'))).toBe(false);
    expect(isRetryable(new ConnectionError('EPS_CONNECT_DNS', 'x'))).toBe(false);
    expect(isRetryable(new ServerError('EPS_SERVER_ERROR', 'x'))).toBe(true);
    expect(isRetryable(new RequestRejectedError(429, 'RATE_LIMITED', 'x'))).toBe(true);
    expect(isRetryable(new RequestRejectedError(408, 'HTTP_408', 'x'))).toBe(true);
    expect(isRetryable(new RequestRejectedError(400, 'BAD_REQUEST', 'x'))).toBe(false);
    expect(isRetryable(new AuthError('EPS_AUTH_FAILED', 'x'))).toBe(false);
    expect(isRetryable(new ProtocolError('EPS_PROTOCOL_MALFORMED', 'x'))).toBe(false);
  });
});

describe('client discovery candidates', () => {
  it('probes the configured path first, then the known bases', () => {
    expect(candidateBases(new URL('https://h'))).toEqual(['/api/database/', '/vet_portal/api/database/', '/api/v1/database/']);
    expect(candidateBases(new URL('https://h/vet_portal/api/database/sync/'))[0]).toBe('/vet_portal/api/database/');
    expect(candidateBases(new URL('https://h/clinic'))).toEqual(['/clinic/api/database/', '/clinic/', '/api/database/', '/vet_portal/api/database/', '/api/v1/database/']);
  });
});
