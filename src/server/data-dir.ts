import { join } from 'node:path';

/** Returns the embedded database folder `serve` and `serve user` share: `.epetsync/pgdata` beside the config (or the working directory). */
export function defaultDataDir(configDir: string | undefined, cwd: string): string {
  return join(configDir ?? cwd, '.epetsync', 'pgdata');
}
