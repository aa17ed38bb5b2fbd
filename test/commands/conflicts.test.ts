/** `epetsync conflicts` on a desktop database whose sync met a row changed on both sides. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { desktopWrite } from '../helpers/desktop-writer.js';
import { PASSWORD, USER, createDesktopDb, startRemote, type Remote } from '../sync/fixture.js';

let remote: Remote;

beforeAll(async () => {
  remote = await startRemote('epsconflicts');
});
afterAll(async () => {
  await remote?.close();
});

function clinic(policy: string): { dir: string; db: string; cli: (args: string[]) => ReturnType<typeof runCli> } {
  const dir = mkdtempSync(join(tmpdir(), 'eps-conflicts-'));
  const db = createDesktopDb(dir);
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({
      database: { path: 'db.sqlite3' },
      remote_database: { enabled: true, url: remote.url, username: USER, password: PASSWORD, sync_interval: 30 },
      sync: { node_id: `desk-${policy}`, conflict_policy: policy, updated_at_column: 'updated_at' },
    }),
  );
  return { dir, db, cli: (args) => runCli(['--config', join(dir, 'config.json'), ...args], { cwd: dir }) };
}

describe('epetsync conflicts', () => {
  it('says so when nothing was logged', async () => {
    const c = clinic('server-wins');
    expect(await c.cli(['conflicts'])).toEqual({ code: 0, stdout: `No conflicts logged in ${c.db}.\n`, stderr: '' });
  });

  it('lists each conflict with the losing version, as a table and as JSON', async () => {
    await remote.reset();
    const c = clinic('client-wins');
    expect((await c.cli(['monitor', '--once'])).code).toBe(0);
    desktopWrite(c.db, [[["INSERT INTO clinic_species VALUES ('cat', 'Cat')"]]]);
    expect((await c.cli(['monitor', '--once'])).code).toBe(0);
    await remote.sql(`UPDATE clinic_species SET label = 'Web cat' WHERE code = 'cat'`);
    desktopWrite(c.db, [[["UPDATE clinic_species SET label = 'Desk cat' WHERE code = 'cat'"]]]);
    expect((await c.cli(['monitor', '--once'])).stdout).toBe('Synced once: pushed 2, pulled 1, conflicts 1.\n');
    expect(await remote.sql(`SELECT label FROM clinic_species`)).toEqual([{ label: 'Desk cat' }]);

    const human = await c.cli(['conflicts']);
    expect(human.code).toBe(0);
    const lines = human.stdout.split('\n');
    expect(lines[0]).toMatch(/^ID\s+Detected\s+Table\s+Key\s+Kind\s+Policy\s+Kept\s+Lost version$/);
    expect(lines[1]).toMatch(/^1\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+clinic_species\s+code=cat\s+conflict\s+client-wins\s+local\s+remote \{"code":"cat","label":"Web cat"\}$/);
    expect(lines.slice(2)).toEqual(['The full losing versions are in --json output.', '']);

    const json = JSON.parse((await c.cli(['--json', 'conflicts'])).stdout) as { result: { total: number; conflicts: unknown[] } };
    expect(json.result.total).toBe(1);
    expect(json.result.conflicts[0]).toEqual({
      id: 1,
      detectedAt: expect.stringMatching(/Z$/),
      table: 'clinic_species',
      pk: { code: 'cat' },
      kind: 'conflict',
      source: 'push',
      policy: 'client-wins',
      winner: 'local',
      localValues: { code: 'cat', label: 'Desk cat' },
      remoteValues: { code: 'cat', label: 'Web cat' },
      serverConflictId: expect.any(String),
      note: null,
    });
  });
});
