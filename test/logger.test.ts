import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/logger.js';
import { ConnectionError } from '../src/errors.js';
import { clearSecrets, redactText, registerSecret } from '../src/redact.js';

const PASSWORD = 'Fluffy-Cat-2026!';
const TOKEN = 'eps_Zm9vYmFyYmF6cXV4cXV1eA';

afterEach(() => clearSecrets());

describe('logger', () => {
  it('never writes a password, token or Authorization header to the log file, at any level', () => {
    const dir = mkdtempSync(join(tmpdir(), 'eps-log-'));
    const file = join(dir, 'logs', 'epetsync.log');
    const terminal = new PassThrough();
    let terminalText = '';
    terminal.on('data', (d: Buffer) => { terminalText += d.toString(); });
    registerSecret(PASSWORD);
    registerSecret(TOKEN);
    const logger = createLogger({ file, fileLevel: 'trace', terminalLevel: 'trace', terminal });

    logger.trace(`logging in with ${PASSWORD}`);
    logger.debug({ password: PASSWORD, nested: { token: TOKEN, list: [{ authorization: `Bearer ${TOKEN}` }] } }, 'request');
    logger.info({ headers: { Authorization: `Token ${TOKEN}` } }, 'headers');
    logger.warn({ url: `https://admin:${encodeURIComponent(PASSWORD)}@vet.example.org/api/` }, 'connecting');
    const cause = new Error(`login failed for password=${PASSWORD}`);
    logger.error({ err: new ConnectionError('EPS_CONNECT_REFUSED', `connect to https://admin:${PASSWORD}@vet.example.org failed`, { cause }) }, 'failed');
    logger.fatal({ error: { message: `token ${TOKEN} rejected` } }, `Authorization: Bearer ${TOKEN}`);
    logger.flush();

    const text = readFileSync(file, 'utf8');
    const lines = text.trim().split('\n');
    expect(lines).toHaveLength(6);
    for (const line of lines) expect(() => JSON.parse(line)).not.toThrow();
    for (const output of [text, terminalText]) {
      expect(output).not.toContain(PASSWORD);
      expect(output).not.toContain(encodeURIComponent(PASSWORD));
      expect(output).not.toContain(TOKEN);
      expect(output).toContain('[REDACTED]');
    }
    expect(JSON.parse(lines[1]!).password).toBe('[REDACTED]');
    expect(terminalText).toContain('warn: connecting');
  });

  it('redacts credentials in URLs and Authorization values even when the secret was never registered', () => {
    expect(redactText('GET https://clinic:s3cretpw@vet.example.org/api/ failed')).toBe('GET https://clinic:[REDACTED]@vet.example.org/api/ failed');
    expect(redactText('Authorization: Bearer abcdefghijklmnop')).toBe('Authorization: Bearer [REDACTED]');
    expect(redactText('postgres://vet:pw123456@db:5432/vet')).toBe('postgres://vet:[REDACTED]@db:5432/vet');
  });
});
