import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readState, resolveNodeId, stateFilePath, updateState, writeState } from '../../src/client/index.js';
import { ConfigError } from '../../src/errors.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'eps-state-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('client state file', () => {
  it('lives in .epetsync beside the config', () => {
    expect(stateFilePath('/srv/clinic')).toBe('/srv/clinic/.epetsync/state.json');
  });

  it('reads a missing file as an empty state', () => {
    expect(readState(join(dir, 'none.json'))).toEqual({});
  });

  it('writes atomically with mode 0600 and keeps keys it does not know', () => {
    const file = stateFilePath(dir);
    writeState(file, { nodeId: 'desk-1', sync: { cursor: 'c1.9.9' } });
    updateState(file, (s) => {
      s.token = { value: 'eps_secret_value', expiresAt: null, username: 'drsmith', server: 'https://x' };
    });
    const state = readState(file);
    expect(state).toEqual({ nodeId: 'desk-1', sync: { cursor: 'c1.9.9' }, token: { value: 'eps_secret_value', expiresAt: null, username: 'drsmith', server: 'https://x' } });
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readdirSync(join(dir, '.epetsync'))).toEqual(['state.json']);
  });

  it('names the file and the fix when the state is not JSON', () => {
    const file = join(dir, 'state.json');
    writeFileSync(file, '{"nodeId":');
    expect(() => readState(file)).toThrow(ConfigError);
    expect(() => readState(file)).toThrow(`State file ${file} is not valid JSON`);
  });

  it('generates a node id once and keeps it', () => {
    const file = stateFilePath(dir);
    const first = resolveNodeId(file);
    expect(first).toMatch(/^[A-Za-z0-9._:-]{1,128}$/);
    expect(resolveNodeId(file)).toBe(first);
    expect(JSON.parse(readFileSync(file, 'utf8')).nodeId).toBe(first);
  });
});
