import { existsSync, statSync, chmodSync } from 'node:fs';
import { configCandidates } from '../../config/index.js';
import { isEpetsyncError } from '../../errors.js';
import { editConfigFile, type ConfigEdit } from '../config-file.js';
import type { DiagnoseContext } from '../context.js';
import type { Check, CheckOutcome } from '../types.js';

/** Returns true for a loopback host name or address. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * Returns the configured URL as it should be spelled (trimmed, scheme added: https, or http for a
 * loopback host; no trailing API route), or undefined when it cannot be made into a URL.
 */
export function normaliseUrl(text: string): string | undefined {
  let t = text.trim();
  if (t === '') return undefined;
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(t)) {
    const host = t.split(/[/:]/)[0] ?? '';
    t = `${isLoopbackHost(host) ? 'http' : 'https'}://${t}`;
  }
  let url: URL;
  try {
    url = new URL(t);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  if (url.hostname === '') return undefined;
  // The legacy scripts stored the full sync route; the server root is what discovery wants.
  url.pathname = url.pathname.replace(/\/api\/database\/sync\/?$/, '/');
  return url.href.replace(/\/$/, '');
}

const rawUrl = (ctx: DiagnoseContext): string | undefined => ctx.config().raw.remote_database?.url;

/** Default keys `--fix` adds when missing: they make the file say what epetsync will do. */
function missingDefaults(ctx: DiagnoseContext): ConfigEdit[] {
  const raw = ctx.config().raw;
  const edits: ConfigEdit[] = [];
  if (raw.database.backup_dir === undefined) edits.push({ path: ['database', 'backup_dir'], value: 'backups' });
  if (raw.remote_database !== undefined && raw.remote_database.sync_interval === undefined) edits.push({ path: ['remote_database', 'sync_interval'], value: 30 });
  return edits;
}

/** Lists the config group: found, valid, URL, https, credentials, default admin, plaintext password, permissions, defaults. */
export const CONFIG_CHECKS: Check[] = [
  {
    id: 'config.found',
    group: 'config',
    title: 'config file found',
    async run(ctx) {
      const candidates = configCandidates({ configPath: ctx.options.configPath, env: ctx.options.env, cwd: ctx.options.cwd });
      const found = candidates.find((c) => existsSync(c.path));
      if (!found) {
        return {
          status: 'fail',
          found: `no config file (looked for ${candidates.map((c) => c.path).join(', ')})`,
          remedy: 'Pass --config <path>, set EPETSYNC_CONFIG, or run epetsync from the folder that holds config.json.',
          data: { looked: candidates.map((c) => c.path) },
        };
      }
      return { status: 'ok', found: `${found.path} (from ${found.source})`, data: { file: found.path, source: found.source } };
    },
  },
  {
    id: 'config.valid',
    group: 'config',
    title: 'config file valid',
    needs: ['config.found'],
    async run(ctx) {
      try {
        const config = ctx.config();
        const warnings = config.warnings;
        if (warnings.length > 0) return { status: 'warn', found: warnings.join('; '), remedy: 'Remove or correct the keys named (see docs/configuration.md).' };
        return { status: 'ok', found: 'valid' };
      } catch (error) {
        if (isEpetsyncError(error)) return { status: 'fail', found: error.message, remedy: error.hint, data: { code: error.code } };
        throw error;
      }
    },
  },
  {
    id: 'config.url',
    group: 'config',
    title: 'server URL well formed',
    needs: ['config.valid'],
    async run(ctx) {
      const config = ctx.config();
      const url = config.remote.url;
      if (url === undefined) {
        return config.remote.enabled
          ? { status: 'fail', found: 'remote_database.enabled is true but no remote_database.url is set', remedy: 'Set remote_database.url (or EPETSYNC_URL) to the web app address, e.g. https://vet-app.onrender.com.' }
          : { status: 'skipped', found: 'remote sync is not configured (no remote_database.url)' };
      }
      const normal = normaliseUrl(url);
      // A password typed into the URL must not be echoed back.
      const shown = JSON.stringify(url.replace(/\/\/[^/@\s]*@/, '//…@').slice(0, 200));
      if (normal === undefined) {
        return { status: 'fail', found: `remote_database.url ${shown} is not a web address`, remedy: 'Set remote_database.url to the web app address, e.g. https://vet-app.onrender.com.' };
      }
      let parsed: URL | undefined;
      try {
        parsed = new URL(url);
      } catch {
        parsed = undefined;
      }
      if (parsed?.username || parsed?.password) {
        return { status: 'fail', found: 'remote_database.url carries a username or password', remedy: 'Move the credentials to remote_database.username and EPETSYNC_PASSWORD; keep the URL plain.' };
      }
      const current = parsed === undefined || url.trim() !== url ? undefined : parsed.href.replace(/\/$/, '');
      if (current !== normal) {
        return { status: 'fail', found: `remote_database.url ${shown} should be ${JSON.stringify(normal)}`, remedy: `Run "epetsync diagnose --fix" to write ${normal}.`, data: { url, normalised: normal } };
      }
      return { status: 'ok', found: normal, data: { url: normal } };
    },
    fix: {
      applies: (outcome) => typeof outcome.data?.normalised === 'string',
      async apply(ctx, outcome) {
        const normal = String(outcome.data!.normalised);
        if (ctx.config().remote.fromEnv.includes('remote_database.url')) throw new Error('the URL comes from EPETSYNC_URL; correct the environment variable');
        if (rawUrl(ctx) === undefined) throw new Error('remote_database.url is not in the file');
        const backup = editConfigFile(ctx.config().file, [{ path: ['remote_database', 'url'], value: normal }]);
        return `wrote remote_database.url = ${normal} (previous file kept as ${backup})`;
      },
    },
  },
  {
    id: 'config.https',
    group: 'config',
    title: 'https (http only to loopback)',
    needs: ['config.url'],
    async run(ctx) {
      const config = ctx.config();
      if (config.remote.url === undefined) return { status: 'skipped', found: 'remote sync is not configured' };
      const url = new URL(config.remote.url);
      if (url.protocol === 'https:') return { status: 'ok', found: 'https' };
      if (isLoopbackHost(url.hostname)) return { status: 'ok', found: `http to the loopback host ${url.hostname} (never leaves this machine)` };
      if (config.remote.allowHttp) return { status: 'warn', found: `plain http to ${url.host} (allow_http is set): passwords and tokens travel in clear`, remedy: 'Use https:// and remove remote_database.allow_http.' };
      return { status: 'fail', found: `plain http to ${url.host} is refused: the password and token would travel in clear`, remedy: 'Use https:// (Render serves it by default), or set remote_database.allow_http for a trusted private network.' };
    },
  },
  {
    id: 'config.credentials',
    group: 'config',
    title: 'credentials present',
    needs: ['config.valid'],
    async run(ctx) {
      const r = ctx.config().remote;
      if (r.url === undefined) return { status: 'skipped', found: 'remote sync is not configured' };
      if (r.token !== undefined) return { status: 'ok', found: `token (from ${r.fromEnv.includes('remote_database.token') ? 'EPETSYNC_TOKEN' : 'config.json'})${r.username && r.password ? ' and username/password' : ''}` };
      if (r.username !== undefined && r.password !== undefined) {
        return { status: 'ok', found: `username ${r.username}, password from ${r.fromEnv.includes('remote_database.password') ? 'EPETSYNC_PASSWORD' : 'config.json'}` };
      }
      const missing = r.username === undefined ? 'remote_database.username' : 'the password';
      return { status: 'fail', found: `${missing} is not set; epetsync never connects anonymously`, remedy: 'Set remote_database.username in config.json and the password in EPETSYNC_PASSWORD (or a token in EPETSYNC_TOKEN).' };
    },
  },
  {
    id: 'config.default-admin',
    group: 'config',
    title: 'not the default admin/admin account',
    needs: ['config.credentials'],
    async run(ctx) {
      const r = ctx.config().remote;
      if (r.username === 'admin' && r.password === 'admin') {
        // Said without the words themselves: the password is a registered secret and would be scrubbed out of the sentence.
        return { status: 'warn', found: 'the sync account is the factory default: its username and password are the same well-known word', remedy: 'Create a dedicated sync account with a strong password (epetsync serve user add, or a staff user of the web app) and use it.' };
      }
      return { status: 'ok', found: 'not the factory-default account' };
    },
  },
  {
    id: 'config.plaintext-password',
    group: 'config',
    title: 'no password written in the file',
    needs: ['config.valid'],
    async run(ctx) {
      const raw = ctx.config().raw.remote_database;
      const inFile = [raw?.password ? 'remote_database.password' : undefined, raw?.token ? 'remote_database.token' : undefined].filter((k): k is string => k !== undefined);
      if (inFile.length === 0) return { status: 'ok', found: 'no password or token in config.json' };
      return {
        status: 'warn',
        found: `${inFile.join(' and ')} ${inFile.length > 1 ? 'are' : 'is'} written in config.json in plain text`,
        remedy: 'Remove it from the file and set EPETSYNC_PASSWORD (or EPETSYNC_TOKEN) in the environment of the scheduled task instead.',
        data: { keys: inFile },
      };
    },
  },
  {
    id: 'config.permissions',
    group: 'config',
    title: 'config file not readable by others',
    needs: ['config.valid'],
    async run(ctx) {
      const config = ctx.config();
      if ((ctx.options.platform ?? process.platform) === 'win32') return { status: 'skipped', found: 'file modes do not apply on Windows (NTFS ACLs)' };
      const mode = statSync(config.file).mode & 0o777;
      const secret = Boolean(config.raw.remote_database?.password || config.raw.remote_database?.token);
      const octal = `0${mode.toString(8)}`;
      if (secret && (mode & 0o077) !== 0) {
        return { status: 'warn', found: `config.json holds a secret and has mode ${octal} (group/others can read it)`, remedy: `chmod 600 ${config.file} (epetsync diagnose --fix does it)`, data: { mode: octal } };
      }
      if ((mode & 0o002) !== 0) return { status: 'warn', found: `config.json is writable by everyone (mode ${octal})`, remedy: `chmod 644 ${config.file}`, data: { mode: octal } };
      return { status: 'ok', found: `mode ${octal}`, data: { mode: octal } };
    },
    fix: {
      async apply(ctx) {
        const file = ctx.config().file;
        const mode = statSync(file).mode & 0o777;
        const next = mode & 0o700;
        chmodSync(file, next);
        return `changed the mode of ${file} from 0${mode.toString(8)} to 0${next.toString(8)}`;
      },
    },
  },
  {
    id: 'config.defaults',
    group: 'config',
    title: 'defaults written out',
    needs: ['config.valid'],
    async run(ctx): Promise<CheckOutcome> {
      const edits = missingDefaults(ctx);
      if (edits.length === 0) return { status: 'ok', found: 'every default epetsync relies on is written in the file' };
      const keys = edits.map((e) => `${e.path.join('.')} (${JSON.stringify(e.value)})`);
      return { status: 'warn', found: `not set, defaults apply: ${keys.join(', ')}`, remedy: 'Run "epetsync diagnose --fix" to write them (formatting kept, a .bak copy made).', data: { missing: edits.map((e) => e.path.join('.')) } };
    },
    fix: {
      async apply(ctx) {
        const edits = missingDefaults(ctx);
        const backup = editConfigFile(ctx.config().file, edits);
        return `added ${edits.map((e) => e.path.join('.')).join(', ')} (previous file kept as ${backup})`;
      },
    },
  },
];
