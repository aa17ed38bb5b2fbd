import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { CommandContext } from '../cli/context.js';
import type { Output } from '../cli/output.js';
import type { CommandModule } from '../cli/spec.js';
import { EpetsyncError, UsageError } from '../errors.js';
import { registerSecret } from '../redact.js';
import { checkUsername, createAccount, detectSource, installAuthSchema, listAccounts, removeAccount, type AccountChange, type AccountSource, type AccountSummary } from '../server/auth/index.js';
import { defaultDataDir } from '../server/data-dir.js';
import { openSqlDatabase, type SqlDatabase } from '../server/sql.js';

/** Lists the options every `serve user` subcommand takes. */
export interface ServeUserOptions {
  databaseUrl?: string;
  dataDir?: string;
}

/** Describes what `serve user add` did. */
export interface AddResult {
  username: string;
  action: AccountChange;
  /** Which engine holds the account: `postgres` (a URL) or `pglite` (embedded). */
  engine: 'postgres' | 'pglite';
  /** The database changed: the embedded folder, or the URL without its credentials. */
  database: string;
}

/** Describes what `serve user remove` did. */
export interface RemoveResult {
  username: string;
  removed: true;
  tokens_revoked: number;
  /** The database changed: the embedded folder, or the URL without its credentials. */
  database: string;
}

/** Describes the accounts `serve user list` found. */
export interface ListResult {
  /** Where `epetsync serve` takes accounts from on this database. */
  source: AccountSource;
  accounts: AccountSummary[];
  /** The database read: the embedded folder, or the URL without its credentials. */
  database: string;
}

const PASSWORD_ENV = 'EPETSYNC_NEW_PASSWORD';
const MIN_PASSWORD_LENGTH = 8;

// Every result names the database it touched, so an account never lands somewhere unnoticed.
async function withDatabase<T>(
  ctx: CommandContext,
  opts: ServeUserOptions,
  mode: 'create' | 'existing',
  fn: (db: SqlDatabase, database: string) => Promise<T>,
): Promise<T> {
  const dataDir = resolve(ctx.cwd, opts.dataDir ?? defaultDataDir(ctx.hasConfig() ? ctx.config().dir : undefined, ctx.cwd));
  let db: SqlDatabase;
  let database: string;
  if (opts.databaseUrl) {
    db = await openSqlDatabase({ databaseUrl: opts.databaseUrl });
    database = displayUrl(opts.databaseUrl);
  } else {
    database = dataDir;
    // Listing or removing must never leave a new, empty database behind in a mistyped folder.
    if (mode === 'existing' && !existsSync(join(dataDir, 'PG_VERSION'))) {
      throw new UsageError('EPS_USAGE', `There is no embedded database in ${dataDir}.`, {
        hint: 'Pass the --data-dir (or --database-url) that epetsync serve uses; "epetsync serve user add" creates the embedded database.',
      });
    }
    try {
      // PGlite creates the data folder itself but not its parents.
      mkdirSync(dirname(dataDir), { recursive: true });
      db = await openSqlDatabase({ dataDir });
    } catch (cause) {
      throw new EpetsyncError('EPS_SERVE_DATABASE', `Cannot open the embedded database in ${dataDir}: ${(cause as Error).message}`, {
        hint: 'Check that the folder is writable, or pass --database-url for an external PostgreSQL.',
        cause,
      });
    }
  }
  try {
    await installAuthSchema(db);
    return await fn(db, database);
  } finally {
    await db.close();
  }
}

/** Adds an epetsync account or replaces its password: `epetsync serve user add <username>`. */
export const add: CommandModule<ServeUserOptions, AddResult> = {
  async run(ctx, opts, args) {
    const username = args[0] ?? '';
    // Fail on a missing password before touching the database.
    checkUsername(username);
    const fromEnv = envPassword(ctx, username);
    return withDatabase(ctx, opts, 'create', async (db, database) => {
      const { source } = await detectSource(db);
      if (source === 'django') {
        throw new UsageError('EPS_USAGE', `This database has the web app's Django auth_user table, so epetsync serve uses the web app's users; "${username}" was not added.`, {
          hint: 'Create or edit the user in the web app (Django admin or "manage.py createsuperuser") and give it staff status or the group named by --sync-permission.',
        });
      }
      const password = checkPassword(fromEnv ?? (await promptPassword(ctx, username)));
      const action = await createAccount(db, username, password);
      ctx.logger.info({ username, action }, `account ${action}`);
      return { username, action, engine: db.kind, database };
    });
  },
  render(result, out) {
    out.line(result.action === 'created' ? `Added account "${result.username}".` : `Updated the password of "${result.username}" and revoked its tokens.`);
    out.line(`Database: ${result.database}`);
  },
};

/** Removes an epetsync account and revokes its tokens: `epetsync serve user remove <username>`. */
export const remove: CommandModule<ServeUserOptions, RemoveResult> = {
  async run(ctx, opts, args) {
    const username = args[0] ?? '';
    return withDatabase(ctx, opts, 'existing', async (db, database) => {
      const { removed, tokensRevoked } = await removeAccount(db, username);
      if (!removed) {
        throw new UsageError('EPS_USAGE', `There is no epetsync account named "${username}".`, { hint: 'Run "epetsync serve user list" to see the accounts.' });
      }
      ctx.logger.info({ username, tokens_revoked: tokensRevoked }, 'account removed');
      return { username, removed: true, tokens_revoked: tokensRevoked, database };
    });
  },
  render(result, out) {
    const tokens = result.tokens_revoked === 1 ? '1 token' : `${result.tokens_revoked} tokens`;
    out.line(`Removed account "${result.username}" (${tokens} revoked).`);
    out.line(`Database: ${result.database}`);
  },
};

/** Lists epetsync's own accounts: `epetsync serve user list`. */
export const list: CommandModule<ServeUserOptions, ListResult> = {
  async run(ctx, opts) {
    return withDatabase(ctx, opts, 'existing', async (db, database) => {
      const { source } = await detectSource(db);
      return { source, accounts: await listAccounts(db), database };
    });
  },
  render(result, out) {
    if (result.source === 'django') {
      out.note("This database has the web app's Django auth_user table: epetsync serve uses the web app's users, not the accounts below.");
    }
    out.note(`Database: ${result.database}`);
    if (result.accounts.length === 0) {
      out.line('No epetsync accounts. Add one with: epetsync serve user add <username>');
      return;
    }
    out.table(
      ['USERNAME', 'ACTIVE', 'CREATED', 'TOKENS'],
      result.accounts.map((a) => [a.username, a.active ? 'yes' : 'no', a.created_at, a.active_tokens]),
    );
  },
};

/** Returns a connection string without its credentials and query (which can hold a password too). */
function displayUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return 'the PostgreSQL database of --database-url';
  }
}

/** Returns the password from EPETSYNC_NEW_PASSWORD, undefined when a terminal can ask for it, else fails. */
function envPassword(ctx: CommandContext, username: string): string | undefined {
  const fromEnv = ctx.env[PASSWORD_ENV];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  const stdin = ctx.out.stdin as NodeJS.ReadStream;
  const stderr = ctx.out.stderr as NodeJS.WriteStream;
  if (stdin.isTTY === true && stderr.isTTY === true && typeof stdin.setRawMode === 'function') return undefined;
  throw new UsageError('EPS_USAGE', `No password given for the account "${username}".`, {
    hint: `Set ${PASSWORD_ENV} in the environment, or run the command on a terminal to be asked for it.`,
  });
}

async function promptPassword(ctx: CommandContext, username: string): Promise<string> {
  const stdin = ctx.out.stdin as NodeJS.ReadStream;
  const [password = '', again] = await askHidden(stdin, ctx.out.stderr, [`Password for "${username}": `, 'Repeat the password: '], ctx.signal);
  registerSecret(password);
  if (again !== password) throw new UsageError('EPS_USAGE', 'The two passwords differ; nothing was changed.', { hint: 'Run the command again.' });
  return password;
}

/**
 * Asks each question in turn on the terminal and reads one line for each without echoing it.
 * Raw mode is on before the first prompt appears and stays on until the last answer, so nothing
 * typed ahead is ever echoed.
 */
function askHidden(stdin: NodeJS.ReadStream, stderr: NodeJS.WritableStream, questions: string[], signal: AbortSignal): Promise<string[]> {
  const wasRaw = stdin.isRaw;
  stdin.setRawMode(true);
  stdin.setEncoding('utf8');
  stdin.resume();
  stderr.write(questions[0] ?? '');
  return new Promise((resolve, reject) => {
    const answers: string[] = [];
    let value = '';
    const finish = (error?: Error): void => {
      stdin.off('data', onData);
      signal.removeEventListener('abort', onAbort);
      stdin.setRawMode(wasRaw);
      stdin.pause();
      if (error) {
        stderr.write('\n');
        reject(error);
      } else {
        resolve(answers);
      }
    };
    const interrupted = (): EpetsyncError => new EpetsyncError('EPS_INTERRUPTED', 'Stopped at the password prompt; nothing was changed.');
    const onAbort = (): void => finish(interrupted());
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') {
          answers.push(value);
          value = '';
          stderr.write('\n');
          if (answers.length === questions.length) return finish();
          stderr.write(questions[answers.length]!);
        } else if (ch === '\u0003' || ch === '\u0004') {
          // Raw mode turns Ctrl+C and Ctrl+D into characters instead of signals.
          return finish(interrupted());
        } else if (ch === '\u007f' || ch === '\b') {
          value = [...value].slice(0, -1).join('');
        } else if (ch >= ' ') {
          value += ch;
        }
      }
    };
    signal.addEventListener('abort', onAbort, { once: true });
    stdin.on('data', onData);
  });
}

function checkPassword(password: string): string {
  registerSecret(password);
  if ([...password].length < MIN_PASSWORD_LENGTH) {
    throw new UsageError('EPS_USAGE', `The password is too short (at least ${MIN_PASSWORD_LENGTH} characters).`, { hint: 'Choose a longer password.' });
  }
  return password;
}
