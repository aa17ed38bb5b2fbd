import { existsSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLINIC_TABLES, FIRST_RECORD_ID, generateClinicDatabase } from '../../src/sync/generate.js';
import { hashTree } from '../db/fixtures.js';
import { readRemoteText, startMigrateBed, type MigrateBed } from '../helpers/clinic-db.js';

type Raw = null | bigint | number | string | Buffer;

/** Returns what PostgreSQL's text output of a migrated value must be, computed here independently of src/sync/convert.ts. */
function expectedText(raw: Raw, dataType: string, scale: number | null): string | null {
  if (raw === null) return null;
  switch (dataType) {
    case 'bigint':
    case 'integer':
    case 'smallint':
      return String(raw);
    case 'numeric':
      return Number(raw).toFixed(scale ?? 0);
    case 'boolean':
      return Number(raw) === 1 ? 'true' : 'false';
    case 'timestamp with time zone': {
      const [whole, fraction] = String(raw).replace('T', ' ').split('.') as [string, string?];
      const trimmed = (fraction ?? '').replace(/0+$/, '');
      return `${whole}${trimmed ? `.${trimmed}` : ''}+00`;
    }
    case 'bytea':
      return `\\x${Buffer.from(raw as Buffer).toString('hex')}`;
    case 'uuid': {
      const h = String(raw);
      return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
    }
    case 'double precision':
      return String(Number(raw));
    default:
      return String(raw);
  }
}

describe('migrate', () => {
  let bed: MigrateBed;
  let generated: ReturnType<typeof generateClinicDatabase>;

  beforeAll(async () => {
    bed = await startMigrateBed();
    generated = generateClinicDatabase(bed.folder.db, { scale: 300, seed: 11 });
  });
  afterAll(async () => {
    await bed?.close();
  });

  it('--check-only reports every table and value note and writes nothing anywhere', async () => {
    const before = hashTree(bed.folder.dir);
    const run = await bed.cli(['--json', 'migrate', '--check-only']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const out = JSON.parse(run.stdout) as { ok: boolean; result: { mode: string; tables: Array<{ table: string; localRows: number; remoteRows: number; audit: Array<{ kind: string; column: string; count: number; blocking: boolean }>; estimatedBytes: number }>; skipped: Array<{ table: string }>; blocking: unknown[] } };
    expect(out.ok).toBe(true);
    expect(out.result.mode).toBe('check');
    expect(out.result.blocking).toEqual([]);
    expect(new Set(out.result.tables.map((t) => t.table))).toEqual(new Set(CLINIC_TABLES));
    for (const t of out.result.tables) {
      expect(t.localRows).toBe(generated.rows[t.table]);
      expect(t.remoteRows).toBe(0);
    }
    expect(out.result.skipped.map((s) => s.table).sort()).toEqual(['django_migrations', 'django_session']);
    const owner = out.result.tables.find((t) => t.table === 'clinic_owner')!;
    expect(owner.audit).toContainEqual(expect.objectContaining({ column: 'created_at', kind: 'datetime-with-t', blocking: false }));
    expect(owner.audit.filter((a) => a.blocking)).toEqual([]);
    expect(out.result.tables.every((t) => t.estimatedBytes > 0)).toBe(true);
    expect(hashTree(bed.folder.dir)).toEqual(before);
    const counts = await bed.sql<{ n: string }>(`SELECT (SELECT count(*) FROM clinic_owner) + (SELECT count(*) FROM clinic_pet) + (SELECT count(*) FROM "clinic vaccine log") AS n`);
    expect(counts[0]!.n).toBe('0');
    expect(await bed.sql(`SELECT * FROM epetsync.bulk_loads`)).toEqual([]);
  });

  it('moves every row into PostgreSQL with every value equal to the source, then verifies both sides', async () => {
    const run = await bed.cli(['--json', 'migrate']);
    expect(run.stderr).toBe('');
    expect(run.code, run.stdout).toBe(0);
    const out = JSON.parse(run.stdout) as { ok: boolean; result: { tables: Array<{ table: string; loaded: number; rejected: number; verified: boolean }>; backup: string; cursor: string; sequences: Array<{ table: string; next_value: string }>; mismatched: string[] } };
    expect(out.ok).toBe(true);
    expect(out.result.mismatched).toEqual([]);
    for (const t of out.result.tables) {
      expect(t.verified, t.table).toBe(true);
      expect(t.loaded, t.table).toBe(generated.rows[t.table]);
      expect(t.rejected).toBe(0);
    }
    expect(existsSync(out.result.backup)).toBe(true);

    // Read PostgreSQL directly and compare every value with the SQLite source.
    const source = new Database(bed.folder.db, { readonly: true });
    source.defaultSafeIntegers(true);
    try {
      for (const table of CLINIC_TABLES) {
        const cols = await bed.sql<{ column_name: string; data_type: string; numeric_scale: number | null }>(
          `SELECT column_name, data_type, numeric_scale FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`,
          [table],
        );
        const key = table === 'clinic_pet_tags' ? ['pet_id', 'tag'] : ['id'];
        const remote = await readRemoteText(bed.pg.url, table, key);
        const rows = source.prepare(`SELECT * FROM "${table}"`).all() as Array<Record<string, Raw>>;
        expect(remote.size, table).toBe(rows.length);
        for (const row of rows) {
          const got = remote.get(key.map((k) => String(row[k])).join('|'));
          expect(got, `${table} ${key.map((k) => String(row[k])).join('|')}`).toBeDefined();
          for (const c of cols) {
            if (c.data_type === 'jsonb') {
              expect(got![c.column_name] === null ? null : JSON.parse(got![c.column_name]!)).toEqual(row[c.column_name] === null ? null : JSON.parse(String(row[c.column_name])));
              continue;
            }
            expect(got![c.column_name], `${table}.${c.column_name}`).toBe(expectedText(row[c.column_name]!, c.data_type, c.numeric_scale));
          }
        }
      }
    } finally {
      source.close();
    }
    // The quirks, spelled out.
    expect((await bed.sql<{ id: string }>(`SELECT min(id)::text AS id FROM clinic_medicalrecord`))[0]!.id).toBe(FIRST_RECORD_ID.toString());
    expect((await bed.sql<{ b: string }>(`SELECT balance::text AS b FROM clinic_owner WHERE id = 3`))[0]!.b).toBe('0.30');

    // The web app's next insert does not collide with a migrated id.
    const next = await bed.sql<{ id: string }>(`INSERT INTO clinic_owner (first_name, last_name, email, is_active, balance, created_at) VALUES ('Web', 'User', 'web@example.org', true, 0, now()) RETURNING id::text AS id`);
    expect(BigInt(next[0]!.id)).toBeGreaterThan(BigInt(generated.rows.clinic_owner!));
    const record = await bed.sql<{ id: string }>(`INSERT INTO clinic_medicalrecord (pet_id, visit_date, diagnosis, created_at) VALUES (1, '2026-01-01', 'web', now()) RETURNING id::text AS id`);
    expect(BigInt(record[0]!.id)).toBeGreaterThan(FIRST_RECORD_ID);
    const vaccine = await bed.sql<{ id: string }>(`INSERT INTO "clinic vaccine log" ("Pet ID", "Vaccine Name", "givenAt", uid) VALUES (1, 'Rabies', now(), gen_random_uuid()) RETURNING id::text AS id`);
    expect(Number(vaccine[0]!.id)).toBe(generated.rows['clinic vaccine log']! + 1);
    await bed.sql(`DELETE FROM clinic_medicalrecord WHERE diagnosis = 'web'`);
    await bed.sql(`DELETE FROM "clinic vaccine log" WHERE id = $1`, [vaccine[0]!.id]);
    await bed.sql(`DELETE FROM clinic_owner WHERE email = 'web@example.org'`);

    // Change tracking on the desktop side, and the cursor monitor continues from.
    const local = new Database(bed.folder.db, { readonly: true });
    try {
      const meta = Object.fromEntries((local.prepare(`SELECT key, value FROM _epetsync_meta`).all() as Array<{ key: string; value: string }>).map((r) => [r.key, r.value]));
      expect(meta.pull_cursor).toBe(out.result.cursor);
      expect(meta.migrated_at).toMatch(/^\d{4}-/);
      const triggers = local.prepare(`SELECT DISTINCT tbl_name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '_epetsync_%'`).pluck().all() as string[];
      expect(triggers.sort()).toEqual([...CLINIC_TABLES].sort());
    } finally {
      local.close();
    }
    const remoteTriggers = await bed.sql<{ t: string }>(`SELECT DISTINCT c.relname AS t FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid WHERE g.tgname = 'epetsync_capture'`);
    expect(remoteTriggers.map((r) => r.t)).toEqual(expect.arrayContaining([...CLINIC_TABLES]));
  });

  it('a second migrate finds both sides equal and loads nothing; --verify agrees', async () => {
    const run = await bed.cli(['--json', 'migrate']);
    expect(run.code).toBe(0);
    const out = JSON.parse(run.stdout) as { result: { tables: Array<{ action: string; loaded: number; verified: boolean }> } };
    expect(out.result.tables.every((t) => t.action === 'same' && t.loaded === 0 && t.verified)).toBe(true);
    const verify = await bed.cli(['migrate', '--verify']);
    expect(verify.code).toBe(0);
    expect(verify.stdout).toContain('Verified: both sides hold the same rows.');
    expect(verify.stdout).toMatch(/clinic vaccine log\s+\d+\s+0/);
  });

  it('refuses to run while another epetsync holds the database lock', async () => {
    const lock = `${bed.folder.db}.epetsync.lock`;
    writeFileSync(lock, `${JSON.stringify({ pid: process.pid, host: hostname(), startedAt: new Date().toISOString(), command: 'monitor' })}\n`);
    try {
      const run = await bed.cli(['migrate']);
      expect(run.code).toBe(7);
      expect(run.stderr).toContain(`Error: Another epetsync (monitor, pid ${process.pid}) is already syncing ${bed.folder.db}`);
    } finally {
      unlinkSync(lock);
    }
  });

  it('refuses a remote with different data without --force, naming tables and keys; --force keeps a verified remote copy, then replaces', async () => {
    await bed.sql(`UPDATE clinic_pet SET name = 'Changed by the web app' WHERE id = 2`);
    const verify = await bed.cli(['migrate', '--verify']);
    expect(verify.code).toBe(1);
    expect(verify.stdout).toContain('Verify FAILED for: clinic_pet');

    const nodes = async (): Promise<unknown[]> => bed.sql(`SELECT node_id, last_pull_at::text, last_pull_cursor, last_push_at::text FROM epetsync.nodes ORDER BY 1`);
    const nodesBefore = await nodes();
    const check = await bed.cli(['migrate', '--check-only']);
    expect(check.code).toBe(1);
    // Finding the differing keys reads the remote rows without recording a pull for this node.
    expect(await nodes()).toEqual(nodesBefore);
    expect(check.stdout).toContain(`Remote table "clinic_pet" already holds different data (${generated.rows.clinic_pet} rows remotely, ${generated.rows.clinic_pet} locally; differing keys {"id":"2"})`);

    const refused = await bed.cli(['--json', 'migrate']);
    expect(refused.code).toBe(1);
    const err = JSON.parse(refused.stdout) as { ok: boolean; error: { code: string; message: string; details: { tables: Array<{ table: string; differing_keys: unknown[] }> } } };
    expect(err.error.code).toBe('EPS_MIGRATE_REMOTE_NOT_EMPTY');
    expect(err.error.message).toContain('"clinic_pet"');
    expect(err.error.details.tables).toEqual([{ table: 'clinic_pet', local_rows: generated.rows.clinic_pet, remote_rows: generated.rows.clinic_pet, differing_keys: [{ id: '2' }] }]);
    expect((await bed.sql<{ name: string }>(`SELECT name FROM clinic_pet WHERE id = 2`))[0]!.name).toBe('Changed by the web app');

    const noYes = await bed.cli(['migrate', '--force']);
    expect(noYes.code).toBe(2);
    expect(noYes.stderr).toContain('--force replaces remote data and needs confirmation');

    const forced = await bed.cli(['--json', 'migrate', '--force', '--yes']);
    expect(forced.stderr).toBe('');
    expect(forced.code, forced.stdout).toBe(0);
    const out = JSON.parse(forced.stdout) as { result: { remoteBackup: string; mismatched: string[] } };
    expect(out.result.mismatched).toEqual([]);
    const copy = out.result.remoteBackup;
    expect(copy).toMatch(/backups[/\\]remote-/);
    const manifest = JSON.parse(readFileSync(join(copy, 'manifest.json'), 'utf8')) as { tables: Array<{ table: string; rows: number; checksum: string }> };
    expect(manifest.tables.map((t) => t.table).sort()).toEqual([...CLINIC_TABLES].sort());
    expect(readdirSync(copy)).toContain('clinic%20vaccine%20log.ndjson');
    expect(readFileSync(join(copy, 'clinic_pet.ndjson'), 'utf8')).toContain('"Changed by the web app"');
    const local = new Database(bed.folder.db, { readonly: true });
    const localName = local.prepare(`SELECT name FROM clinic_pet WHERE id = 2`).pluck().get();
    local.close();
    expect((await bed.sql<{ name: string }>(`SELECT name FROM clinic_pet WHERE id = 2`))[0]!.name).toBe(localName);
    expect((await bed.cli(['migrate', '--verify'])).code).toBe(0);
  });

  it('a --force replace the remote refuses leaves the remote exactly as it was, and a rerun after the fix succeeds', async () => {
    await bed.sql(`UPDATE clinic_owner SET first_name = 'Web edit' WHERE id = 5`);
    const snapshot = async (): Promise<string[]> =>
      Promise.all(CLINIC_TABLES.map(async (t) => (await bed.sql<{ h: string }>(`SELECT count(*) || ':' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) AS h FROM "${t}" x`))[0]!.h));
    const before = await snapshot();
    // A pet whose owner does not exist: Python's sqlite3 (the desktop app) does not enforce foreign keys, PostgreSQL does.
    const local = new Database(bed.folder.db);
    local.pragma('foreign_keys = OFF');
    local.prepare(`INSERT INTO clinic_pet (id, owner_id, name, species, is_neutered, created_at) VALUES (99999, 424242, 'Orphan', 'cat', 0, '2024-05-01 10:00:00')`).run();
    local.close();

    const failed = await bed.cli(['--json', 'migrate', '--force', '--yes']);
    expect(failed.code, failed.stdout).toBe(1);
    const err = JSON.parse(failed.stdout) as { error: { code: string; message: string; details: { remote_backup: string } } };
    expect(err.error.code).toBe('EPS_MIGRATE_REPLACE_FAILED');
    expect(err.error.message).toContain('clinic_pet_owner_id');
    expect(existsSync(join(err.error.details.remote_backup, 'manifest.json'))).toBe(true);
    expect(await snapshot()).toEqual(before);
    expect(await bed.sql(`SELECT tablename FROM pg_tables WHERE schemaname = 'epetsync' AND tablename LIKE 'stage_%'`)).toEqual([]);

    const fix = new Database(bed.folder.db);
    fix.prepare(`DELETE FROM clinic_pet WHERE id = 99999`).run();
    fix.close();
    const retried = await bed.cli(['--json', 'migrate', '--force', '--yes']);
    expect(retried.code, retried.stdout).toBe(0);
    expect((await bed.sql<{ n: string }>(`SELECT first_name AS n FROM clinic_owner WHERE id = 5`))[0]!.n).not.toBe('Web edit');
  });
});
