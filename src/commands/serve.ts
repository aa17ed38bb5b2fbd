import type { CommandModule } from '../cli/spec.js';
import { defaultDataDir } from '../server/data-dir.js';
import type { ConflictPolicy } from '../server/upload.js';

/** Lists the options `epetsync serve` takes (see src/cli/commands.ts). */
export interface ServeOptions {
  host?: string;
  port?: number;
  databaseUrl?: string;
  dataDir?: string;
  memory?: boolean;
  install?: boolean;
  include?: string;
  exclude?: string;
  conflictPolicy?: ConflictPolicy;
  updatedAtColumn?: string;
  syncPermission?: string;
}

/** Describes how a `serve` run ended. */
export interface ServeResult {
  url: string;
  engine: 'postgres' | 'pglite';
  stopped: true;
}

const list = (text: string | undefined): string[] | undefined =>
  text === undefined ? undefined : text.split(',').map((s) => s.trim()).filter((s) => s !== '');

/** Runs the sync API server until the stop signal, then closes it gracefully. */
const serve: CommandModule<ServeOptions, ServeResult> = {
  async run(ctx, options) {
    const { startSyncServer } = await import('../server/index.js');
    const config = ctx.hasConfig() ? ctx.config() : undefined;
    const memory = options.memory === true;
    const server = await startSyncServer({
      databaseUrl: options.databaseUrl,
      memory,
      dataDir: options.databaseUrl || memory ? undefined : (options.dataDir ?? defaultDataDir(config?.dir, ctx.cwd)),
      host: options.host ?? '127.0.0.1',
      port: options.port ?? 8787,
      include: list(options.include) ?? config?.sync.include,
      exclude: list(options.exclude) ?? config?.sync.exclude,
      conflictPolicy: options.conflictPolicy ?? config?.sync.conflictPolicy ?? 'server-wins',
      updatedAtColumn: options.updatedAtColumn ?? config?.sync.updatedAtColumn,
      syncPermission: options.syncPermission ?? 'staff',
      install: options.install !== false,
      logger: ctx.logger,
    });
    // Scripts and tests spawn `serve --port 0` and read the address from this one line.
    if (ctx.json) ctx.out.stdout.write(`${JSON.stringify({ event: 'listening', url: server.url })}\n`);
    else ctx.out.line(`Listening on ${server.url}`);
    ctx.logger.info({ url: server.url, engine: server.db.kind, tables: server.schema.tables.length }, 'sync API listening');
    await new Promise<void>((resolve) => {
      if (ctx.signal.aborted) resolve();
      else ctx.signal.addEventListener('abort', () => resolve(), { once: true });
    });
    ctx.logger.info('closing: finishing requests in flight');
    await server.close();
    return { url: server.url, engine: server.db.kind, stopped: true };
  },
  render(result, out) {
    out.note(`Stopped the sync API at ${result.url}.`);
  },
};

export default serve;
