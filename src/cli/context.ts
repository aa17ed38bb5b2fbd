import { loadConfig, type EpetsyncConfig } from '../config/index.js';
import type { Logger } from '../logger.js';
import type { Output } from './output.js';

/** Holds what every command receives: config, logger, output and the stop signal; built once by `main`. */
export interface CommandContext {
  /** Returns the loaded config; throws the ConfigError found while loading it. */
  config(): EpetsyncConfig;
  /** True when a config file was found and is valid (commands like `serve` can run without one). */
  hasConfig(): boolean;
  logger: Logger;
  out: Output;
  /** `--json` was given. */
  json: boolean;
  /** Aborted on the first SIGINT/SIGTERM; long-running work finishes its batch and returns. */
  signal: AbortSignal;
  env: NodeJS.ProcessEnv;
  cwd: string;
}

/** Returns a memoised config loader that defers a load failure until a command asks for the config. */
export function lazyConfig(configPath: string | undefined, env: NodeJS.ProcessEnv, cwd: string): { get(): EpetsyncConfig; ok(): boolean } {
  let loaded: { config?: EpetsyncConfig; error?: unknown } | undefined;
  const load = (): { config?: EpetsyncConfig; error?: unknown } => {
    if (!loaded) {
      try {
        loaded = { config: loadConfig({ configPath, env, cwd }) };
      } catch (error) {
        loaded = { error };
      }
    }
    return loaded;
  };
  return {
    get() {
      const r = load();
      if (r.error !== undefined) throw r.error;
      return r.config!;
    },
    ok() {
      return load().config !== undefined;
    },
  };
}
