import { InvalidArgumentError, Option } from 'commander';
import type { CommandSpec } from './spec.js';

const int = (name: string) => (value: string): number => {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`${name} must be a whole number, got "${value}"`);
  return Number(value);
};

/** Lists every registered subcommand: flags, help text and lazy loaders. Only working commands are here. */
export const COMMANDS: CommandSpec[] = [
  {
    name: 'demo',
    description: 'see the whole thing work on a sample clinic: generate a database, start an embedded server, diagnose, migrate, sync both ways, clean up',
    examples: ['epetsync demo', 'epetsync demo --keep', 'epetsync demo --dir ./demo-clinic --keep', 'epetsync --json demo'],
    define: (cmd) =>
      cmd
        .option('--dir <folder>', 'build the sample clinic in this new or empty folder (default: a new temporary folder)')
        .option('--keep', 'keep the folder (database, config.json, logs) for exploring instead of deleting it')
        .option('--scale <owners>', 'owners in the sample clinic (about 9 rows each; default 25)', int('--scale')),
    load: async () => (await import('../commands/demo.js')).default,
  },
  {
    name: 'init',
    description: 'write config.json for your clinic (database, server URL, username; the password stays in EPETSYNC_PASSWORD) and check it',
    examples: [
      'EPETSYNC_PASSWORD=… epetsync init --db C:\\epetcare\\db.sqlite3 --url https://vet-app.onrender.com --username frontdesk',
      'epetsync init --db ./db.sqlite3 --url https://vet-app.onrender.com --username frontdesk --dir ./clinic --force',
      'epetsync init   # asks for what is missing, on a terminal',
    ],
    define: (cmd) =>
      cmd
        .option('--db <path>', "the desktop app's SQLite database")
        .option('--url <url>', 'the web app or sync server, e.g. https://vet-app.onrender.com')
        .option('--username <name>', 'the sync account')
        .option('--dir <folder>', 'write config.json in this folder (default: the current one)')
        .option('--force', 'replace an existing config.json (kept as config.json.bak; its other keys are carried over)')
        .option('--store-password', 'also write the password (from EPETSYNC_PASSWORD or the prompt) into config.json, in plain text'),
    load: async () => (await import('../commands/init.js')).default,
  },
  {
    name: 'status',
    description: 'show the local database: path, size, journal mode, integrity, newest backup, tables and row counts',
    examples: ['epetsync status', 'epetsync status --json', 'epetsync status --config C:\\epetcare\\config.json'],
    define: (cmd) => cmd.option('--deep', 'run the full integrity_check instead of quick_check'),
    load: async () => (await import('../commands/status.js')).default,
  },
  {
    name: 'diagnose',
    description: 'check config, the desktop database, backups, network, TLS, the sync API, login and sync health; --fix repairs what is safe',
    examples: ['epetsync diagnose', 'epetsync diagnose --deep', 'epetsync diagnose --fix', 'epetsync diagnose --fix --yes --json', 'epetsync diagnose --group config,local'],
    define: (cmd) =>
      cmd
        .option('--fix', 'repair what is safe to repair, then check again and show before -> after')
        .option('--deep', 'slower, thorough checks: integrity_check instead of quick_check, checksums instead of row counts')
        .option('-y, --yes', 'allow --fix to restore a corrupt database from the newest good backup without asking')
        .option('--group <groups>', 'only these groups (comma-separated: config, local, backups, network, api, auth, sync, ids, desktop)'),
    load: async () => (await import('../commands/diagnose.js')).default,
  },
  {
    name: 'fix',
    description: 'unattended repair: diagnose --fix, backup, migrate (empty remote) or one sync cycle, verify, restart the desktop app',
    examples: ['epetsync fix', 'epetsync fix --yes --json', 'epetsync --config C:\\epetcare\\config.json fix --yes'],
    define: (cmd) => cmd.option('-y, --yes', 'allow restoring a corrupt database from the newest good backup without asking'),
    load: async () => (await import('../commands/fix.js')).default,
  },
  {
    name: 'monitor',
    description: 'keep the desktop database and the web app in step: two-way sync on an interval and in real time, self-healing',
    examples: ['epetsync monitor', 'epetsync monitor --once', 'epetsync monitor --interval 60 --fix', 'epetsync monitor --background', 'epetsync monitor --stop'],
    define: (cmd) =>
      cmd
        .option('--interval <seconds>', 'seconds between cycles (default: remote_database.sync_interval)', int('--interval'))
        .option('--once', 'run one sync cycle and exit')
        .option('--fix', 'keep retrying what needs a person otherwise (re-authenticate, re-discover) while running')
        .option('--background', 'detach and run in the background (pidfile .epetsync/monitor.pid, output in logs/monitor.out)')
        .option('--stop', 'stop the background monitor (it finishes the batch in flight)')
        .option('--uninstall', 'remove the change-capture triggers from the desktop database (refused while changes wait)'),
    load: async () => (await import('../commands/monitor.js')).default,
  },
  {
    name: 'conflicts',
    description: 'list the conflicts log: rows changed on both sides and id collisions, with the losing version of each',
    examples: ['epetsync conflicts', 'epetsync conflicts --table clinic_pet --limit 20', 'epetsync --json conflicts'],
    define: (cmd) =>
      cmd
        .option('--table <table>', 'only conflicts of this table')
        .option('--limit <n>', 'show the newest N (default 50)', int('--limit')),
    load: async () => (await import('../commands/conflicts.js')).default,
  },
  {
    name: 'queue',
    args: '[action] [id]',
    description: 'show the sync queue and the quarantine; retry or discard a change the server refused (list | retry ID | discard ID)',
    examples: ['epetsync queue', 'epetsync queue list --json', 'epetsync queue retry 3', 'epetsync queue discard 3'],
    load: async () => (await import('../commands/queue.js')).default,
  },
  {
    name: 'backup',
    description: 'take a verified online backup of the local database into the backup folder',
    examples: ['epetsync backup', 'epetsync backup --keep 14', 'epetsync --json backup'],
    define: (cmd) => cmd.option('--keep <n>', 'keep only the newest N backups (default: database.backup_keep or 10)', int('--keep')),
    load: async () => (await import('../commands/backup.js')).default,
  },
  {
    name: 'restore',
    args: '[file]',
    description: 'replace the local database with a verified backup; the current files are moved aside, never deleted',
    examples: ['epetsync restore --latest', 'epetsync restore backups/db-20261125T101500Z.sqlite3 --yes'],
    define: (cmd) =>
      cmd
        .option('--latest', 'restore the newest backup in the backup folder')
        .option('-y, --yes', 'do not ask for confirmation (needed when not on a terminal)'),
    load: async () => (await import('../commands/restore.js')).default,
  },
  {
    name: 'migrate',
    description: "move every row of the desktop database into the web app's PostgreSQL through the sync API, verified and resumable",
    examples: ['epetsync migrate --check-only', 'epetsync migrate --reject-file rejects.ndjson', 'epetsync migrate --force --yes --json', 'epetsync migrate --verify'],
    define: (cmd) =>
      cmd
        .option('--check-only', 'run the preflight and value audit only; writes nothing anywhere')
        .option('--force', 'replace remote data that differs (a verified copy of the remote is kept first)')
        .option('--verify', 'only compare row counts and checksums of both sides')
        .option('--tables <tables>', 'comma-separated tables to migrate (default: every synced table)')
        .option('--create-schema', 'create missing remote tables (with --check-only: print the DDL)')
        .option('--reject-file <file>', 'write rows with unconvertible values here (NDJSON) and migrate the rest')
        .option('-y, --yes', 'do not ask for confirmation of --force (needed when not on a terminal)'),
    load: async () => (await import('../commands/migrate.js')).default,
  },
  {
    name: 'serve',
    description: 'run the sync API server over PostgreSQL (DATABASE_URL) or an embedded PostgreSQL',
    examples: [
      'epetsync serve',
      'epetsync serve --port 8787 --database-url postgres://vet@db.internal/vetportal',
      'epetsync serve --memory --port 0',
    ],
    define: (cmd) =>
      cmd
        .option('--host <host>', 'address to listen on', '127.0.0.1')
        .option('--port <port>', 'port to listen on (0 picks a free one)', int('--port'), 8787)
        .addOption(new Option('--database-url <url>', 'PostgreSQL connection string (default: $DATABASE_URL, else embedded)').env('DATABASE_URL'))
        .option('--data-dir <path>', 'folder of the embedded database (default: .epetsync/pgdata beside the config)')
        .option('--memory', 'use a throwaway in-memory embedded database')
        .option('--no-install', 'do not install or upgrade change-capture triggers at start')
        .option('--include <tables>', 'comma-separated tables to sync (default: all with a primary key)')
        .option('--exclude <tables>', 'comma-separated tables to leave out of sync')
        .addOption(new Option('--conflict-policy <policy>', 'how conflicting uploads are resolved').choices(['server-wins', 'client-wins', 'newest-wins']))
        .option('--updated-at-column <column>', 'column newest-wins compares (default: sync.updated_at_column)')
        .option('--sync-permission <rule>', 'who may sync: staff, superuser, active, or group:<name>', 'staff'),
    load: async () => (await import('../commands/serve.js')).default,
    subcommands: [
      {
        name: 'user',
        description: "manage epetsync's own sync accounts (used when the database has no Django auth_user table)",
        examples: ['epetsync serve user add frontdesk', 'epetsync serve user list', 'epetsync serve user remove frontdesk'],
        subcommands: [
          {
            name: 'add',
            args: '<username>',
            description: 'add or update an account; the password comes from EPETSYNC_NEW_PASSWORD or a prompt',
            examples: ['EPETSYNC_NEW_PASSWORD=s3cret epetsync serve user add frontdesk --database-url postgres://localhost/vet'],
            define: (cmd) =>
              cmd
                .addOption(new Option('--database-url <url>', 'PostgreSQL connection string').env('DATABASE_URL'))
                .option('--data-dir <path>', 'folder of the embedded database'),
            load: async () => (await import('../commands/serve-user.js')).add,
          },
          {
            name: 'remove',
            args: '<username>',
            description: 'remove an account and revoke its tokens',
            examples: ['epetsync serve user remove frontdesk'],
            define: (cmd) =>
              cmd
                .addOption(new Option('--database-url <url>', 'PostgreSQL connection string').env('DATABASE_URL'))
                .option('--data-dir <path>', 'folder of the embedded database'),
            load: async () => (await import('../commands/serve-user.js')).remove,
          },
          {
            name: 'list',
            description: 'list accounts',
            examples: ['epetsync serve user list --json'],
            define: (cmd) =>
              cmd
                .addOption(new Option('--database-url <url>', 'PostgreSQL connection string').env('DATABASE_URL'))
                .option('--data-dir <path>', 'folder of the embedded database'),
            load: async () => (await import('../commands/serve-user.js')).list,
          },
        ],
      },
    ],
  },
];
