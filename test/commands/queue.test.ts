/** `epetsync queue`: the quarantine of changes the server refused for good, listed, retried and discarded. */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { desktopWrite } from '../helpers/desktop-writer.js';
import { PASSWORD, USER, createDesktopDb, startRemote, type Remote } from '../sync/fixture.js';

let remote: Remote;
let dir: string;
let db: string;
const cli = (args: string[]) => runCli(['--config', join(dir, 'config.json'), ...args], { cwd: dir });

beforeAll(async () => {
  remote = await startRemote('epsqueue');
  dir = mkdtempSync(join(tmpdir(), 'eps-queue-'));
  db = createDesktopDb(dir);
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({ database: { path: 'db.sqlite3', backup_dir: 'backups' }, remote_database: { enabled: true, url: remote.url, username: USER, password: PASSWORD } }),
  );
});
afterAll(async () => {
  await remote?.close();
});

describe('epetsync queue', () => {
  it('lists refused changes, keeps the rest flowing, retries a fixed one and discards another keeping a copy', async () => {
    expect((await cli(['monitor', '--once'])).code).toBe(0);
    desktopWrite(db, [
      [
        ["INSERT INTO clinic_owner (name, updated_at) VALUES ('Ana', '2026-11-25 09:00:00')"],
        ["INSERT INTO clinic_pet (owner_id, name, weight_kg, neutered, updated_at) VALUES (1, 'Minus', -1, 0, '2026-11-25 09:00:00')"],
        ["INSERT INTO clinic_pet (owner_id, name, weight_kg, neutered, updated_at) VALUES (1, 'Minus two', -2, 0, '2026-11-25 09:00:00')"],
        ["INSERT INTO clinic_pet (owner_id, name, weight_kg, neutered, updated_at) VALUES (1, 'Fine', 3, 0, '2026-11-25 09:00:00')"],
      ],
    ]);
    const once = await cli(['monitor', '--once']);
    expect(once.code).toBe(1);
    expect(once.stdout).toBe('Synced once: pushed 2, pulled 0, conflicts 0.\n');
    expect(once.stderr).toContain('2 change(s) are quarantined: see "epetsync queue list".');
    expect(await remote.sql(`SELECT name FROM clinic_pet`)).toEqual([{ name: 'Fine' }]);

    const list = await cli(['queue', 'list']);
    expect(list.code).toBe(1);
    expect(list.stdout).toMatch(/^Pending {8}0 local change\(s\)\nQuarantine {5}2 change\(s\) refused by the server:\n\nID\s+Since\s+Table\s+Key\s+Op\s+Code\s+Reason\n1\s+.*clinic_pet\s+\{"id":"1"\}\s+upsert\s+CONSTRAINT_VIOLATION\s+change \d+: new row for relation "clinic_pet" violates check constraint/m);
    const json = JSON.parse((await cli(['--json', 'queue'])).stdout) as { ok: boolean; result: { quarantine: Array<{ id: number; pk: unknown; code: string }> } };
    expect(json.ok).toBe(false);
    expect(json.result.quarantine.map((q) => [q.id, q.pk, q.code])).toEqual([
      [1, { id: '1' }, 'CONSTRAINT_VIOLATION'],
      [2, { id: '2' }, 'CONSTRAINT_VIOLATION'],
    ]);
    expect(await cli(['queue', 'status'])).toMatchObject({ code: 2, stderr: 'Error: Unknown queue action "status"\nTry: Use "epetsync queue list", "epetsync queue retry ID" or "epetsync queue discard ID".\n' });
    expect(await cli(['queue', 'retry', '9'])).toMatchObject({ code: 2, stderr: 'Error: No quarantined change has id 9\nTry: See the ids with "epetsync queue list".\n' });

    // The clinic fixes pet 1 on the desktop; the retry sends the row as it is now.
    desktopWrite(db, [[['UPDATE clinic_pet SET weight_kg = 1 WHERE id = 1']]]);
    expect(await cli(['queue', 'retry', '1'])).toMatchObject({ code: 0, stdout: 'Change 1 (clinic_pet {"id":"1"}) is back in the queue; the next sync sends the row as it is now.\n' });
    const discard = await cli(['queue', 'discard', '2']);
    expect(discard.code).toBe(0);
    const copy = /a copy is in (.+)\.\n$/.exec(discard.stdout)![1]!;
    expect(copy.startsWith(join(dir, 'backups', 'quarantine-2-'))).toBe(true);
    expect(JSON.parse(readFileSync(copy, 'utf8'))).toMatchObject({ id: 2, table: 'clinic_pet', pk: { id: '2' }, code: 'CONSTRAINT_VIOLATION' });
    expect(existsSync(copy)).toBe(true);

    expect(await cli(['monitor', '--once'])).toMatchObject({ code: 0 });
    expect(await remote.sql(`SELECT name, weight_kg::text AS w FROM clinic_pet ORDER BY id`)).toEqual([
      { name: 'Minus', w: '1.00' },
      { name: 'Fine', w: '3.00' },
    ]);
    expect(await cli(['queue'])).toMatchObject({ code: 0, stdout: 'Pending        0 local change(s)\nQuarantine     empty\n' });
  });
});
