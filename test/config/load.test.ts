import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadConfig, parseConfigText, requireLocalPath } from '../../src/config/index.js';
import { ConfigError } from '../../src/errors.js';

const LEGACY = fileURLToPath(new URL('../fixtures/legacy/config.json', import.meta.url));

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'eps-config-'));
}

/** Returns the ConfigError thrown for `text`, failing the test if none is thrown. */
function errorFor(text: string): ConfigError {
  try {
    parseConfigText(text, '/clinic/config.json', 'flag', { env: {}, platform: 'linux' });
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`expected a ConfigError for ${text}`);
}

const base = (remote: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): string =>
  JSON.stringify({ database: { path: 'db.sqlite3' }, remote_database: { url: 'https://vet.example.org', ...remote }, ...extra });

describe('config', () => {
  it('loads the legacy desktop-app config.json unchanged', () => {
    const config = loadConfig({ configPath: LEGACY, env: {}, cwd: '/' });
    const dir = join(LEGACY, '..');
    expect(config.file).toBe(LEGACY);
    expect(config.source).toBe('flag');
    expect(config.database).toEqual({
      path: join(dir, 'db.sqlite3'),
      backupDir: join(dir, 'backups'),
      realTimeSync: true,
      timezone: 'UTC',
      busyTimeoutMs: 5000,
      backupKeep: 10,
    });
    expect(config.app).toMatchObject({ offlineMode: false, syncInterval: 300, autoBackup: true });
    expect(config.remote).toMatchObject({
      enabled: true,
      url: 'https://vet-app-0obi.onrender.com',
      username: 'admin',
      password: 'admin',
      syncInterval: 30,
      autoSync: true,
      allowHttp: false,
      fromEnv: [],
    });
    expect(config.sync.conflictPolicy).toBe('server-wins');
    expect(config.warnings).toEqual([]);
    expect(config.raw.ui).toEqual({ theme: 'light', font_size: 10, window_width: 1280, window_height: 800 });
  });

  it('looks for --config, then EPETSYNC_CONFIG, then ./config.json, then ./vet_desktop_app/config.json', () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'vet_desktop_app'));
    writeFileSync(join(dir, 'vet_desktop_app', 'config.json'), base());
    expect(loadConfig({ env: {}, cwd: dir }).source).toBe('vet_desktop_app');
    writeFileSync(join(dir, 'config.json'), base());
    expect(loadConfig({ env: {}, cwd: dir }).source).toBe('cwd');
    const other = join(dir, 'other.json');
    writeFileSync(other, base());
    expect(loadConfig({ env: { EPETSYNC_CONFIG: other }, cwd: dir }).file).toBe(other);
    expect(loadConfig({ env: { EPETSYNC_CONFIG: other }, cwd: dir }).source).toBe('env');
    expect(loadConfig({ configPath: 'config.json', env: { EPETSYNC_CONFIG: other }, cwd: dir }).source).toBe('flag');
  });

  it('reports a missing config with every path it looked at', () => {
    const dir = tempDir();
    let error: unknown;
    try {
      loadConfig({ env: {}, cwd: dir });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).code).toBe('EPS_CONFIG_NOT_FOUND');
    expect((error as ConfigError).message).toBe(
      `No config file found (looked for ${join(dir, 'config.json')}, ${join(dir, 'vet_desktop_app', 'config.json')})`,
    );
    expect((error as ConfigError).exitCode).toBe(2);
  });

  it('applies environment overrides and keeps secrets from the environment', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'config.json'), base({ username: 'file-user', password: 'file-pass' }));
    const config = loadConfig({
      env: {
        EPETSYNC_URL: 'https://other.example.org',
        EPETSYNC_USERNAME: 'env-user',
        EPETSYNC_PASSWORD: 'env-pass-123',
        EPETSYNC_TOKEN: 'tok-abcdef',
        EPETSYNC_DB: '/data/clinic.sqlite3',
      },
      cwd: dir,
    });
    expect(config.remote).toMatchObject({ url: 'https://other.example.org', username: 'env-user', password: 'env-pass-123', token: 'tok-abcdef' });
    expect(config.database.path).toBe('/data/clinic.sqlite3');
    expect(config.remote.fromEnv.sort()).toEqual(
      ['database.path', 'remote_database.password', 'remote_database.token', 'remote_database.url', 'remote_database.username'].sort(),
    );
  });

  it('resolves relative paths against the config folder, not the working directory', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ database: { path: 'data/db.sqlite3', backup_dir: '../bk' } }));
    const config = loadConfig({ configPath: join(dir, 'config.json'), env: {}, cwd: '/' });
    expect(config.database.path).toBe(join(dir, 'data', 'db.sqlite3'));
    expect(config.database.backupDir).toBe(join(dir, '..', 'bk'));
    expect(config.logging.file).toBe(join(dir, 'logs', 'epetsync.log'));
  });

  it('reports a Windows path on another system as such', () => {
    const config = parseConfigText(JSON.stringify({ database: { path: 'C:\\epetcare\\db.sqlite3' } }), '/clinic/config.json', 'flag', {
      env: {},
      platform: 'linux',
    });
    expect(config.database.path).toBe('C:\\epetcare\\db.sqlite3');
    expect(config.warnings).toEqual(['database.path is a Windows path (C:\\epetcare\\db.sqlite3); it can only be used on Windows']);
    expect(() => requireLocalPath(config.database.path, 'database.path', 'linux')).toThrow(
      'database.path is a Windows path (C:\\epetcare\\db.sqlite3) but epetsync is running on linux',
    );
    expect(requireLocalPath('C:\\epetcare\\db.sqlite3', 'database.path', 'win32')).toBe('C:\\epetcare\\db.sqlite3');
  });

  it('warns about unknown keys without failing', () => {
    const config = parseConfigText(
      JSON.stringify({ database: { path: 'db.sqlite3', pth: 'x' }, remote_database: { urll: 'y' }, extra: 1, ui: { anything: true } }),
      '/clinic/config.json',
      'flag',
      { env: {}, platform: 'linux' },
    );
    expect(config.warnings).toEqual([
      'unknown config key database.pth is ignored',
      'unknown config key remote_database.urll is ignored',
      'unknown config key extra is ignored',
    ]);
  });

  it('types the keys later features need', () => {
    const config = parseConfigText(
      JSON.stringify({
        database: { path: 'db.sqlite3', timezone: 'Europe/London', busy_timeout_ms: 2000, backup_keep: 3 },
        app: { restart_command: 'restart-vet-portal' },
        remote_database: { token: 'tok-123456' },
        sync: { tables: { include: ['clinic_pet'], exclude: ['clinic_log'] }, conflict_policy: 'newest-wins', updated_at_column: 'updated_at' },
      }),
      '/clinic/config.json',
      'flag',
      { env: {}, platform: 'linux' },
    );
    expect(config.database).toMatchObject({ timezone: 'Europe/London', busyTimeoutMs: 2000, backupKeep: 3 });
    expect(config.app.restartCommand).toBe('restart-vet-portal');
    expect(config.remote.token).toBe('tok-123456');
    expect(config.sync).toMatchObject({ include: ['clinic_pet'], exclude: ['clinic_log'], conflictPolicy: 'newest-wins', updatedAtColumn: 'updated_at' });
    expect(config.warnings).toEqual([]);
  });

  describe('malformed configs each get their own precise message', () => {
    const cases: Array<[string, string, string]> = [
      ['sync interval with a unit', base({ sync_interval: '30s' }), 'remote_database.sync_interval must be a whole number of seconds >= 5, got "30s"'],
      ['sync interval too short', base({ sync_interval: 2 }), 'remote_database.sync_interval must be a whole number of seconds >= 5, got 2'],
      ['fractional sync interval', base({ sync_interval: 7.5 }), 'remote_database.sync_interval must be a whole number of seconds >= 5, got 7.5'],
      ['missing database section', JSON.stringify({ remote_database: {} }), 'database must be an object with at least "path", got nothing (the key is missing)'],
      ['missing database.path', JSON.stringify({ database: { backup_dir: 'b' } }), 'database.path must be the path of the SQLite file (a non-empty string), got nothing (the key is missing)'],
      ['empty database.path', JSON.stringify({ database: { path: '' } }), 'database.path must be the path of the SQLite file (a non-empty string), got ""'],
      ['real_time_sync as a string', JSON.stringify({ database: { path: 'db', real_time_sync: 'yes' } }), 'database.real_time_sync must be true or false, got "yes"'],
      ['enabled as a number', base({ enabled: 1 }), 'remote_database.enabled must be true or false, got 1'],
      ['unknown conflict policy', base({}, { sync: { conflict_policy: 'last-wins' } }), 'sync.conflict_policy must be one of "server-wins", "client-wins", "newest-wins", got "last-wins"'],
      ['include not a list', base({}, { sync: { tables: { include: 'clinic_pet' } } }), 'sync.tables.include must be a list of table names, got "clinic_pet"'],
      ['negative busy timeout', JSON.stringify({ database: { path: 'db', busy_timeout_ms: -1 } }), 'database.busy_timeout_ms must be a whole number of milliseconds from 0 to 600000, got -1'],
      ['zero backups kept', JSON.stringify({ database: { path: 'db', backup_keep: 0 } }), 'database.backup_keep must be a whole number of backups >= 1, got 0'],
      ['remote section as a string', JSON.stringify({ database: { path: 'db' }, remote_database: 'https://x' }), 'remote_database must be an object, got "https://x"'],
      ['top level is a list', '[1, 2]', 'the file must be a JSON object with a "database" section, got [1,2]'],
      ['password of the wrong kind is not echoed', base({ password: 12345678 }), 'remote_database.password must be a string (or leave it out and set EPETSYNC_PASSWORD), got [REDACTED]'],
    ];
    it.each(cases)('%s', (_name, text, expected) => {
      const error = errorFor(text);
      expect(error.code).toBe('EPS_CONFIG_INVALID');
      expect(error.message).toBe(`Invalid config /clinic/config.json: ${expected}`);
      expect(error.hint).toMatch(/Correct the value/);
      expect(error.exitCode).toBe(2);
    });

    it('reports every problem at once', () => {
      const error = errorFor(JSON.stringify({ database: { path: 'db', real_time_sync: 'yes' }, remote_database: { sync_interval: '30s' } }));
      expect(error.details?.problems).toEqual([
        'database.real_time_sync must be true or false, got "yes"',
        'remote_database.sync_interval must be a whole number of seconds >= 5, got "30s"',
      ]);
    });
  });

  describe('malformed JSON reports line and column', () => {
    const cases: Array<[string, string, string]> = [
      ['missing comma', '{\n  "database": {\n    "path": "db"\n    "backup_dir": "b"\n  }\n}', 'line 4, column 5: expected ","'],
      ['trailing comma', '{\n  "database": { "path": "db", }\n}', 'line 2, column 31: expected a property name in double quotes'],
      ['single quotes', "{\n  'database': {}\n}", 'line 2, column 3: unexpected character'],
      ['comment', '{\n  // clinic\n  "database": { "path": "db" }\n}', 'line 2, column 3: comments are not allowed'],
      ['unterminated string', '{ "database": { "path": "db }\n}', 'line 1, column 25: unterminated string'],
      ['empty file', '', 'line 1, column 1: expected a value'],
    ];
    it.each(cases)('%s', (_name, text, expected) => {
      const error = errorFor(text);
      expect(error.code).toBe('EPS_CONFIG_SYNTAX');
      expect(error.message).toBe(`Config /clinic/config.json is not valid JSON at ${expected}`);
    });
  });

  it('accepts a UTF-8 byte-order mark, as Windows Notepad writes it', () => {
    const config = parseConfigText(`\uFEFF${base()}`, '/clinic/config.json', 'flag', { env: {}, platform: 'linux' });
    expect(config.database.path).toBe('/clinic/db.sqlite3');
  });

  it('reports a directory at the config path', () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'config.json'));
    expect(() => loadConfig({ env: {}, cwd: dir })).toThrow(`Config path ${join(dir, 'config.json')} is a directory, not a file`);
  });

  it('leaves the config file untouched', () => {
    const dir = tempDir();
    const text = '{ "database": { "path": "db", "real_time_sync": "yes" } }';
    writeFileSync(join(dir, 'config.json'), text);
    expect(() => loadConfig({ env: {}, cwd: dir })).toThrow(ConfigError);
    expect(readFileSync(join(dir, 'config.json'), 'utf8')).toBe(text);
  });
});
