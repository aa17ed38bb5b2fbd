import { z } from 'zod';

/**
 * The config.json schema: the Vet Portal desktop app's legacy keys plus epetsync's additive ones.
 * Zod validates it (one declarative schema beats hand-written checks, and it reports every
 * problem at once); {@link EXPECTATIONS} turns each failure into a sentence naming the key,
 * the bad value and what is expected.
 */

const seconds = z.number().int().min(5);
const positiveInt = z.number().int().min(1);

/** Validates one `sync.tables` filter list. */
const tableList = z.array(z.string().min(1));

/** Validates the raw config file (snake_case, as the desktop app writes it). */
export const rawConfigSchema = z.object({
  database: z.object({
    path: z.string().min(1),
    backup_dir: z.string().min(1).optional(),
    real_time_sync: z.boolean().optional(),
    timezone: z.string().min(1).optional(),
    busy_timeout_ms: z.number().int().min(0).max(600_000).optional(),
    backup_keep: positiveInt.optional(),
  }),
  app: z
    .object({
      offline_mode: z.boolean().optional(),
      sync_interval: z.number().int().min(1).optional(),
      auto_backup: z.boolean().optional(),
      restart_command: z.string().min(1).optional(),
      stop_command: z.string().min(1).optional(),
      start_command: z.string().min(1).optional(),
    })
    .optional(),
  ui: z.record(z.string(), z.unknown()).optional(),
  remote_database: z
    .object({
      enabled: z.boolean().optional(),
      url: z.string().optional(),
      username: z.string().optional(),
      password: z.string().optional(),
      token: z.string().optional(),
      sync_interval: seconds.optional(),
      auto_sync: z.boolean().optional(),
      allow_http: z.boolean().optional(),
      insecure_tls: z.boolean().optional(),
      connect_timeout_ms: positiveInt.optional(),
      request_timeout_ms: positiveInt.optional(),
      max_response_bytes: positiveInt.optional(),
    })
    .optional(),
  sync: z
    .object({
      tables: z.object({ include: tableList.optional(), exclude: tableList.optional() }).optional(),
      conflict_policy: z.enum(['server-wins', 'client-wins', 'newest-wins']).optional(),
      updated_at_column: z.string().min(1).optional(),
      batch_size: positiveInt.optional(),
      node_id: z.string().min(1).optional(),
    })
    .optional(),
  logging: z
    .object({
      file: z.string().min(1).optional(),
      level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).optional(),
    })
    .optional(),
});

/** Names the raw config file's shape. */
export type RawConfig = z.infer<typeof rawConfigSchema>;

/** Says, per key, what a valid value looks like; used in validation messages. */
export const EXPECTATIONS: Record<string, string> = {
  '': 'must be a JSON object with a "database" section',
  database: 'must be an object with at least "path"',
  'database.path': 'must be the path of the SQLite file (a non-empty string)',
  'database.backup_dir': 'must be a folder path (a non-empty string)',
  'database.real_time_sync': 'must be true or false',
  'database.timezone': 'must be an IANA time zone name such as "Europe/London" or "UTC"',
  'database.busy_timeout_ms': 'must be a whole number of milliseconds from 0 to 600000',
  'database.backup_keep': 'must be a whole number of backups >= 1',
  app: 'must be an object',
  'app.offline_mode': 'must be true or false',
  'app.sync_interval': 'must be a whole number of seconds >= 1',
  'app.auto_backup': 'must be true or false',
  'app.restart_command': 'must be a command line (a non-empty string)',
  'app.stop_command': 'must be a command line (a non-empty string)',
  'app.start_command': 'must be a command line (a non-empty string)',
  ui: 'must be an object',
  remote_database: 'must be an object',
  'remote_database.enabled': 'must be true or false',
  'remote_database.url': 'must be the web app address, e.g. "https://vet-app.onrender.com"',
  'remote_database.username': 'must be a string',
  'remote_database.password': 'must be a string (or leave it out and set EPETSYNC_PASSWORD)',
  'remote_database.token': 'must be a string (or leave it out and set EPETSYNC_TOKEN)',
  'remote_database.sync_interval': 'must be a whole number of seconds >= 5',
  'remote_database.auto_sync': 'must be true or false',
  'remote_database.allow_http': 'must be true or false',
  'remote_database.insecure_tls': 'must be true or false',
  'remote_database.connect_timeout_ms': 'must be a whole number of milliseconds >= 1',
  'remote_database.request_timeout_ms': 'must be a whole number of milliseconds >= 1',
  'remote_database.max_response_bytes': 'must be a whole number of bytes >= 1',
  sync: 'must be an object',
  'sync.tables': 'must be an object with "include" and/or "exclude" lists',
  'sync.tables.include': 'must be a list of table names',
  'sync.tables.exclude': 'must be a list of table names',
  'sync.conflict_policy': 'must be one of "server-wins", "client-wins", "newest-wins"',
  'sync.updated_at_column': 'must be a column name (a non-empty string)',
  'sync.batch_size': 'must be a whole number of rows >= 1',
  'sync.node_id': 'must be a non-empty string',
  logging: 'must be an object',
  'logging.file': 'must be a file path (a non-empty string)',
  'logging.level': 'must be one of trace, debug, info, warn, error, fatal, silent',
};

/** Returns the keys a config section may hold, for unknown-key warnings; `null` means free-form. */
export function knownKeys(path: string): Set<string> | null {
  if (path === 'ui') return null;
  const prefix = path === '' ? '' : `${path}.`;
  const keys = new Set<string>();
  for (const key of Object.keys(EXPECTATIONS)) {
    if (key === '' || !key.startsWith(prefix)) continue;
    const rest = key.slice(prefix.length);
    if (rest.length > 0 && !rest.includes('.')) keys.add(rest);
  }
  return keys;
}
