import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

/**
 * A private PostgreSQL cluster for tests that must stop and start the database server itself
 * (the shared server on 5432 belongs to every test file at once). `initdb` runs in a temp folder,
 * the server listens on a free loopback port with its unix socket inside that folder and trust
 * authentication, and the folder is removed at the end. PostgreSQL refuses to run as root, so
 * under root every binary runs as the `postgres` user (runuser) on a folder chowned to it.
 */

/** Describes a running (or stopped) private cluster. */
export interface PrivatePg {
  /** The temp folder holding `data/`, the unix socket and `postgres.log`. */
  dir: string;
  port: number;
  /** The server's own log (startup, shutdown, recovery). */
  logFile: string;
  /** Returns the connection string of a database on this cluster (user postgres, no password). */
  url(database?: string): string;
  /** True while the server runs (as far as this helper knows). */
  readonly running: boolean;
  /** Starts the server again on the same port; resolves once it accepts connections. */
  start(): Promise<void>;
  /** Stops the server: `fast` (clients are told and disconnected, a clean shutdown) or `immediate` (no shutdown checkpoint; recovery runs at the next start). */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  /** Runs SQL on a short-lived connection to `database` (default postgres). */
  query<Row = Record<string, unknown>>(text: string, params?: unknown[], database?: string): Promise<Row[]>;
  /** Creates a database and returns its connection string. */
  createDatabase(name: string): Promise<string>;
  /** Stops the server (immediately) if it runs and deletes the folder. */
  remove(): Promise<void>;
}

/** Returns the bin folder of the newest PostgreSQL installed under /usr/lib/postgresql (or PG_BIN). */
export function postgresBinDir(): string {
  if (process.env.PG_BIN) return process.env.PG_BIN;
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length === 0) throw new Error(`No PostgreSQL server binaries under ${root} (initdb not found); install postgresql or set PG_BIN`);
  return join(root, versions[0]!, 'bin');
}

/** Returns a TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** Runs one PostgreSQL binary, as the postgres user when we are root; rejects with its output on failure. */
function runPgBinary(bin: string, args: string[], timeoutMs = 120_000): Promise<string> {
  const [file, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
  return new Promise((resolve, reject) => {
    execFile(file, argv, { timeout: timeoutMs, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${bin.split('/').pop()} ${args.join(' ')} failed: ${error.message}\n${stdout}${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Holds every cluster still running, so an exiting test process does not leave a postmaster behind. */
const live = new Set<{ stopNow(): void }>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of live) c.stopNow();
  });
}

/** Creates a cluster with initdb in a new temp folder and starts it on a free port. */
export async function startPrivatePg(options: { prefix?: string } = {}): Promise<PrivatePg> {
  const bin = postgresBinDir();
  // Its own temp folder, not a chaos work folder: those sit under root-only (0700) folders the postgres user cannot enter.
  const dir = mkdtempSync(join(tmpdir(), `${options.prefix ?? 'epetsync-pg'}-`));
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    chownSync(dir, uid, gid);
  }
  chmodSync(dir, 0o700);
  const data = join(dir, 'data');
  const logFile = join(dir, 'postgres.log');
  await runPgBinary(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync', '--no-instructions']);
  const port = await freePort();
  let running = false;
  // fsync off: nothing here survives a machine crash anyway, and the shared two cores are spared the flushes.
  const serverOptions = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50`;
  const url = (database = 'postgres'): string => `postgres://postgres@127.0.0.1:${port}/${database}`;
  const handle = {
    stopNow(): void {
      if (!running) return;
      try {
        const args = ['stop', '-D', data, '-m', 'immediate', '-w'];
        execFileSync(asRoot ? 'runuser' : join(bin, 'pg_ctl'), asRoot ? ['-u', 'postgres', '--', join(bin, 'pg_ctl'), ...args] : args, { stdio: 'ignore', timeout: 30_000 });
      } catch {
        // Already gone.
      }
      running = false;
    },
  };
  installExitHook();
  const cluster: PrivatePg = {
    dir,
    port,
    logFile,
    url,
    get running() {
      return running;
    },
    async start() {
      await runPgBinary(join(bin, 'pg_ctl'), ['start', '-D', data, '-l', logFile, '-w', '-t', '60', '-o', serverOptions]);
      running = true;
      live.add(handle);
    },
    async stop(mode = 'fast') {
      await runPgBinary(join(bin, 'pg_ctl'), ['stop', '-D', data, '-m', mode, '-w', '-t', '60']);
      running = false;
      live.delete(handle);
    },
    async query<Row = Record<string, unknown>>(text: string, params: unknown[] = [], database = 'postgres'): Promise<Row[]> {
      const client = new pg.Client({ connectionString: url(database), connectionTimeoutMillis: 5000 });
      await client.connect();
      try {
        return (await client.query(text, params)).rows as Row[];
      } finally {
        await client.end();
      }
    },
    async createDatabase(name) {
      await cluster.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`);
      return url(name);
    },
    async remove() {
      handle.stopNow();
      live.delete(handle);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await cluster.start();
  } catch (error) {
    const log = existsSync(logFile) ? readFileSync(logFile, 'utf8').slice(-2000) : '';
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`${(error as Error).message}\n${log}`);
  }
  return cluster;
}
