import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RemoteDatabaseClient, readState, stateFilePath } from '../../src/client/index.js';
import { parseConfigText } from '../../src/config/index.js';
import { ConfigError } from '../../src/errors.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'eps-fromconfig-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function config(remote: Record<string, unknown>, sync: Record<string, unknown> = {}) {
  const text = JSON.stringify({ database: { path: 'db.sqlite3' }, remote_database: remote, sync });
  return parseConfigText(text, join(dir, 'config.json'), 'flag', { env: {} });
}

describe('RemoteDatabaseClient.fromConfig', () => {
  it('generates a node id once, keeps it beside the config and reuses it', () => {
    const first = RemoteDatabaseClient.fromConfig(config({ url: 'https://clinic.example.org', username: 'u', password: 'p-secret-1' }));
    const saved = readState(stateFilePath(dir)).nodeId;
    expect(first.nodeId).toBe(saved);
    expect(RemoteDatabaseClient.fromConfig(config({ url: 'https://clinic.example.org' })).nodeId).toBe(saved);
  });

  it('prefers sync.node_id from the config', () => {
    const c = RemoteDatabaseClient.fromConfig(config({ url: 'https://clinic.example.org' }, { node_id: 'front-desk-1' }));
    expect(c.nodeId).toBe('front-desk-1');
  });

  it('needs remote_database.url', () => {
    expect(() => RemoteDatabaseClient.fromConfig(config({}))).toThrow(ConfigError);
    expect(() => RemoteDatabaseClient.fromConfig(config({}))).toThrow('remote_database.url is not set');
  });

  it('honours allow_http and insecure_tls from the config', () => {
    expect(() => RemoteDatabaseClient.fromConfig(config({ url: 'http://192.168.1.20:8000' }))).toThrow('Refusing plain http:// to 192.168.1.20:8000');
    const warnings: string[] = [];
    RemoteDatabaseClient.fromConfig(config({ url: 'http://192.168.1.20:8000', allow_http: true, insecure_tls: true }), { onWarning: (m) => warnings.push(m) });
    expect(warnings).toHaveLength(2);
  });
});
