import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, EpetsyncError, ProtocolError } from '../src/errors.js';
import { ExitCode } from '../src/exit-codes.js';

const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');

describe('errors', () => {
  it('documents every error code with its exit code, and nothing else', () => {
    const documented = new Map<string, number>();
    for (const match of doc.matchAll(/^\| `(EPS_[A-Z_]+)` \| (\d+) \|/gm)) documented.set(match[1]!, Number(match[2]));
    const defined = new Map(Object.entries(ERROR_CODES).map(([code, { exit }]) => [code, exit as number]));
    expect([...documented.keys()].sort()).toEqual([...defined.keys()].sort());
    for (const [code, exit] of defined) expect(documented.get(code), code).toBe(exit);
  });

  it('documents every exit code', () => {
    for (const value of Object.values(ExitCode)) expect(doc).toMatch(new RegExp(`^\\| ${value} \\|`, 'm'));
  });

  it('carries code, exit code, hint and details into the JSON shape', () => {
    const error = new ProtocolError('EPS_PROTOCOL_LEGACY_STUB', 'The server is the legacy stub', { hint: 'Deploy epetsync serve', details: { url: 'https://x' } });
    expect(error).toBeInstanceOf(EpetsyncError);
    expect(error.name).toBe('ProtocolError');
    expect(error.exitCode).toBe(ExitCode.REMOTE_PROTOCOL);
    expect(error.toJSON()).toEqual({ code: 'EPS_PROTOCOL_LEGACY_STUB', message: 'The server is the legacy stub', hint: 'Deploy epetsync serve', details: { url: 'https://x' } });
  });
});
