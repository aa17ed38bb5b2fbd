/** Loads, validates and resolves config.json (see docs/configuration.md). */
export { loadConfig, parseConfigText, configCandidates, requireLocalPath, isWindowsPath, ENV_OVERRIDES, type EpetsyncConfig, type LoadConfigOptions } from './load.js';
export { rawConfigSchema, type RawConfig } from './schema.js';
