import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import pg from 'pg';
import { createAccount, installAuthSchema } from '../../src/server/auth/index.js';
import type { SqlExecutor } from '../../src/server/sql.js';
import { BIN } from './cli.js';

/** Describes a running `epetsync serve` child process. */
export interface ServeProcess {
  /** `http://127.0.0.1:<port>`, read from the "Listening on" line. */
  url: string;
  port: number;
  child: ChildProcessWithoutNullStreams;
  /** Everything the process wrote so far. */
  output(): { stdout: string; stderr: string };
  /** Sends SIGTERM and resolves with the exit code once the process ended (SIGKILL after 15 s). */
  stop(): Promise<number | null>;
}

/** Describes how to spawn the server. */
export interface StartServeOptions {
  /** Serve this PostgreSQL database; otherwise an in-memory embedded one (unless memory is false). */
  databaseUrl?: string;
  memory?: boolean;
  /** Extra arguments after `serve --port 0`. */
  args?: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Milliseconds to wait for the Listening line (default 30 s). */
  timeoutMs?: number;
}

/** Spawns the BUILT binary `node bin/epetsync.js serve --port 0 ...` and resolves when it listens. */
export function startServeProcess(options: StartServeOptions = {}): Promise<ServeProcess> {
  const args = [BIN, ...(options.args?.includes('--json') ? ['--json'] : []), 'serve', '--port', '0'];
  if (options.databaseUrl) args.push('--database-url', options.databaseUrl);
  else if (options.memory !== false) args.push('--memory');
  args.push(...(options.args ?? []).filter((a) => a !== '--json'));
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1', CI: 'true', ...options.env };
  // A DATABASE_URL in the test environment must not redirect an embedded server.
  if (!options.databaseUrl && !options.env?.DATABASE_URL) delete env.DATABASE_URL;
  const child = spawn(process.execPath, args, { cwd: options.cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`epetsync serve did not start within ${options.timeoutMs ?? 30_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, options.timeoutMs ?? 30_000);
    const onData = (): void => {
      const m = /Listening on (http:\/\/[^\s]+)|"event":"listening","url":"(http:\/\/[^"]+)"/.exec(stdout);
      if (!m) return;
      clearTimeout(timer);
      child.stdout.off('data', onData);
      const url = (m[1] ?? m[2])!;
      resolve({
        url,
        port: Number(new URL(url).port),
        child,
        output: () => ({ stdout, stderr }),
        async stop() {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
          const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
          const code = await exited;
          clearTimeout(killer);
          return code;
        },
      });
    };
    child.stdout.on('data', onData);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`epetsync serve exited with ${code} before listening\nstdout: ${stdout}\nstderr: ${stderr}`));
    });
  });
}

/** Creates (or updates) an epetsync sync account in a database given by URL or by an open executor. */
export async function createSyncAccount(target: string | SqlExecutor, username: string, password: string): Promise<void> {
  if (typeof target !== 'string') {
    await installAuthSchema(target);
    await createAccount(target, username, password);
    return;
  }
  const client = new pg.Client({ connectionString: target });
  await client.connect();
  try {
    const executor: SqlExecutor = {
      async query(text, params) {
        const r = await client.query(text, params as unknown[]);
        return { rows: r.rows, rowCount: r.rowCount ?? 0 };
      },
    };
    await installAuthSchema(executor);
    await createAccount(executor, username, password);
  } finally {
    await client.end();
  }
}

/** Logs in through the real `POST /api/auth/token/` of a running server and returns the bearer token. */
export async function loginToken(url: string, username: string, password: string): Promise<string> {
  const res = await fetch(new URL('/api/auth/token/', url), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  const body = (await res.json()) as { token?: string };
  if (res.status !== 200 || !body.token) throw new Error(`login failed: ${res.status} ${JSON.stringify(body)}`);
  return body.token;
}
