/**
 * The sync engine against the real server over real PostgreSQL, with real SQLite files written by
 * a separate Python process the way the desktop app writes.
 */
import type Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { RemoteDatabaseClient } from '../../src/client/index.js';
import { startSyncServer, type SyncServer } from '../../src/server/index.js';
import { SyncEngine, type ConflictPolicy, type SyncHooks } from '../../src/sync/engine.js';
import { META, readMeta } from '../../src/sync/local-capture.js';
import { listConflicts, listQuarantine, outboxCount } from '../../src/sync/store.js';
import { desktopWrite } from '../helpers/desktop-writer.js';
import { PASSWORD, USER, clientFor, createDesktopDb, openDesktop, startRemote, type Remote } from './fixture.js';

let remote: Remote;
let path: string;
let db: Database.Database;
let client: RemoteDatabaseClient;

beforeAll(async () => {
  remote = await startRemote('epssync');
});
afterAll(async () => {
  await remote?.close();
});
beforeEach(async () => {
  await remote.reset();
  path = createDesktopDb();
  db = openDesktop(path);
  client = clientFor(remote);
});
afterEach(async () => {
  db.close();
  await client.close();
});

function engine(options: { policy?: ConflictPolicy; hooks?: SyncHooks; batchSize?: number } = {}): SyncEngine {
  return new SyncEngine({ db, remote: client, policy: options.policy, updatedAtColumn: 'updated_at', hooks: options.hooks, batchSize: options.batchSize });
}

const local = (sql: string): unknown[] => db.prepare(sql).safeIntegers(false).all();
const owners = async (): Promise<Array<{ id: string; name: string }>> => remote.sql(`SELECT id::text AS id, name FROM clinic_owner ORDER BY id`);

describe('SyncEngine', () => {
  it('flows inserts, updates and deletes both ways, with composite and text keys, without echo', async () => {
    const e = engine();
    const start = await e.prepare();
    expect([...start.tables].sort()).toEqual(['clinic_owner', 'clinic_pet', 'clinic_species', 'clinic_vaccination']);
    expect(start.cursor).toMatch(/^c1\./);

    desktopWrite(path, [
      [
        ["INSERT INTO clinic_owner (name, email, updated_at) VALUES ('Ana Ménard 🐾', NULL, '2026-11-25 09:30:00.5')"],
        ["INSERT INTO clinic_pet (owner_id, name, weight_kg, neutered, updated_at) VALUES (1, 'Rex', '12.50', 1, '2026-11-25 09:31:00')"],
        ["INSERT INTO clinic_vaccination VALUES (1, 'rabies', '2026-11-01')"],
        ["INSERT INTO clinic_species VALUES ('cat', 'Cat')"],
      ],
    ]);
    // Written directly in PostgreSQL, as the Django web app does.
    await remote.sql(`INSERT INTO clinic_owner (id, name, email, updated_at) VALUES (1000, 'Bo Li', 'bo@example.org', '2026-11-25T08:00:00Z')`);
    await remote.sql(`INSERT INTO clinic_species VALUES ('dog', 'Dog')`);

    const first = await e.runCycle();
    expect(first).toMatchObject({ pushed: 4, pulled: 2, conflicts: 0, quarantined: 0, pending: 0 });
    expect(await owners()).toEqual([{ id: '1', name: 'Ana Ménard 🐾' }, { id: '1000', name: 'Bo Li' }]);
    expect(await remote.sql(`SELECT owner_id::text, name, weight_kg::text, neutered, (updated_at AT TIME ZONE 'UTC')::text AS updated_at FROM clinic_pet`)).toEqual([
      { owner_id: '1', name: 'Rex', weight_kg: '12.50', neutered: true, updated_at: '2026-11-25 09:31:00' },
    ]);
    expect(await remote.sql(`SELECT pet_id::text, vaccine, given_on::text FROM clinic_vaccination`)).toEqual([{ pet_id: '1', vaccine: 'rabies', given_on: '2026-11-01' }]);
    expect(local('SELECT id, name, email, updated_at FROM clinic_owner ORDER BY id')).toEqual([
      { id: 1, name: 'Ana Ménard 🐾', email: null, updated_at: '2026-11-25 09:30:00.5' },
      { id: 1000, name: 'Bo Li', email: 'bo@example.org', updated_at: '2026-11-25 08:00:00' },
    ]);
    expect(local(`SELECT code, label FROM clinic_species ORDER BY code`)).toEqual([{ code: 'cat', label: 'Cat' }, { code: 'dog', label: 'Dog' }]);

    // No echo: rows applied from the remote were not captured, and our uploads are not fed back.
    const quiet = await e.runCycle();
    expect(quiet).toMatchObject({ pushed: 0, pulled: 0, conflicts: 0, pending: 0 });

    desktopWrite(path, [[["UPDATE clinic_pet SET name = 'Rex II' WHERE id = 1"]], [["DELETE FROM clinic_vaccination WHERE pet_id = 1 AND vaccine = 'rabies'"]], [["DELETE FROM clinic_species WHERE code = 'cat'"]]]);
    await remote.sql(`UPDATE clinic_owner SET email = 'bo.li@example.org' WHERE id = 1000`);
    await remote.sql(`DELETE FROM clinic_species WHERE code = 'dog'`);
    const third = await e.runCycle();
    expect(third).toMatchObject({ pushed: 3, pulled: 2, conflicts: 0, pending: 0 });
    expect(await remote.sql(`SELECT name FROM clinic_pet`)).toEqual([{ name: 'Rex II' }]);
    expect(await remote.sql(`SELECT count(*)::int AS n FROM clinic_vaccination`)).toEqual([{ n: 0 }]);
    expect(await remote.sql(`SELECT count(*)::int AS n FROM clinic_species`)).toEqual([{ n: 0 }]);
    expect(local(`SELECT email FROM clinic_owner WHERE id = 1000`)).toEqual([{ email: 'bo.li@example.org' }]);
    expect(local(`SELECT count(*) AS n FROM clinic_species`)).toEqual([{ n: 0 }]);
    expect(await e.runCycle()).toMatchObject({ pushed: 0, pulled: 0 });
  });

  it('coalesces many edits of one row into one change carrying the current row', async () => {
    const e = engine();
    await e.prepare();
    desktopWrite(path, [
      [["INSERT INTO clinic_owner (name, updated_at) VALUES ('v1', '2026-11-25 10:00:00')"]],
      [["UPDATE clinic_owner SET name = 'v2' WHERE id = 1"]],
      [["UPDATE clinic_owner SET name = 'v3' WHERE id = 1"]],
      [["INSERT INTO clinic_species VALUES ('tmp', 'gone soon')"]],
      [["DELETE FROM clinic_species WHERE code = 'tmp'"]],
    ]);
    const r = await e.runCycle();
    // The species row was inserted and deleted before it was ever sent: nothing of it travels.
    expect(r).toMatchObject({ pushed: 1, batches: 1, pending: 0 });
    expect(local(`SELECT count(*) AS n FROM _epetsync_changelog`)).toEqual([{ n: 0 }]);
    expect(await owners()).toEqual([{ id: '1', name: 'v3' }]);
    expect(await remote.sql(`SELECT count(*)::int AS n FROM clinic_species`)).toEqual([{ n: 0 }]);
  });

  it('pushes a large offline backlog in as many batches as the batch size needs, each row once with its latest values', async () => {
    const e = engine({ batchSize: 500 });
    await e.prepare();
    // One desktop transaction of 1,200 inserts, then edits of rows spread over the backlog: an edited
    // row travels once, in the batch where its first entry falls, carrying its current values.
    desktopWrite(path, [
      [["WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200) INSERT INTO clinic_owner (name, updated_at) SELECT 'owner ' || i, '2026-11-25 10:00:00' FROM n"]],
      [["UPDATE clinic_owner SET name = name || ' (edited)' WHERE id % 100 = 0"]],
      [["DELETE FROM clinic_owner WHERE id = 1150"]],
    ]);
    expect(local(`SELECT count(*) AS n FROM _epetsync_changelog`)).toEqual([{ n: 1200 + 12 + 1 }]);
    const r = await e.runCycle();
    // 1,213 entries over 1,200 rows: the first batch takes entries 1–500 (rows 1–500 and their later
    // edits), the second rows 501–1000, the third the rest; of rows 1001–1200, row 1150 was inserted
    // and deleted before it was ever sent, so nothing of it travels.
    expect(r).toMatchObject({ pushed: 1199, batches: 3, pending: 0, quarantined: 0, conflicts: 0 });
    expect(outboxCount(db)).toBe(0);
    const rows = await remote.sql<{ n: number; edited: number; max: string }>(
      `SELECT count(*)::int AS n, count(*) FILTER (WHERE name LIKE '% (edited)')::int AS edited, max(id)::text AS max FROM clinic_owner`,
    );
    expect(rows).toEqual([{ n: 1199, edited: 12, max: '1200' }]);
    expect(await remote.sql(`SELECT name FROM clinic_owner WHERE id IN (100, 1150, 1200) ORDER BY id`)).toEqual([{ name: 'owner 100 (edited)' }, { name: 'owner 1200 (edited)' }]);
    expect(await e.runCycle()).toMatchObject({ pushed: 0, pulled: 0, batches: 0 });
  });

  it('reads the next batch into the outbox while one is in flight, settles each answer while the next batch is in flight, and loses no edit made meanwhile', async () => {
    const outboxAtAnswer: number[] = [];
    const e = engine({
      batchSize: 500,
      hooks: {
        afterUpload: () => {
          outboxAtAnswer.push(outboxCount(db));
          // The second batch (rows 501–1000) has been read by now; the desktop app edits one of its rows.
          if (outboxAtAnswer.length === 1) desktopWrite(path, [[["UPDATE clinic_owner SET name = 'edited while batch 1 was in flight' WHERE id = 700"]]]);
        },
      },
    });
    await e.prepare();
    desktopWrite(path, [[["WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200) INSERT INTO clinic_owner (name, updated_at) SELECT 'owner ' || i, '2026-11-25 10:00:00' FROM n"]]]);
    const r = await e.runCycle();
    // When the answers to batches 1 and 2 arrive, the batch after each is already in the outbox (and the
    // one before it settled); batch 3 has no batch after it in its window, batch 4 is built afterwards.
    expect(outboxAtAnswer).toEqual([2, 2, 1, 1]);
    // Row 700 went with the second batch as read, and again with its edit in a fourth.
    expect(r).toMatchObject({ pushed: 1201, batches: 4, pending: 0, quarantined: 0 });
    expect(outboxCount(db)).toBe(0);
    expect(await remote.sql(`SELECT count(*)::int AS n FROM clinic_owner`)).toEqual([{ n: 1200 }]);
    expect(await remote.sql(`SELECT name FROM clinic_owner WHERE id = 700`)).toEqual([{ name: 'edited while batch 1 was in flight' }]);
  });

  it('drops the batch read ahead, unsent, when the answer before it holds a conflict, and builds it again after the settlement', async () => {
    let readAhead: string[] = [];
    let capture = false;
    const e = engine({
      batchSize: 500,
      hooks: {
        afterUpload: (batchId) => {
          if (capture) readAhead = (local(`SELECT batch_id FROM _epetsync_outbox ORDER BY seq`) as Array<{ batch_id: string }>).map((b) => b.batch_id).filter((id) => id !== batchId);
          capture = false;
        },
      },
    });
    await e.prepare();
    desktopWrite(path, [[["WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200) INSERT INTO clinic_owner (name, updated_at) SELECT 'owner ' || i, '2026-11-25 10:00:00' FROM n"]]]);
    expect(await e.runCycle()).toMatchObject({ pushed: 1200, pending: 0 });
    const sent = async (): Promise<number> => Number((await remote.sql<{ n: string }>(`SELECT count(*)::text AS n FROM epetsync.batches`))[0]!.n);
    const before = await sent();
    // Offline, the desktop edits every row; the web app edits row 100 (in the first batch) meanwhile.
    desktopWrite(path, [[["UPDATE clinic_owner SET name = name || ' (desk)'"]]]);
    await remote.sql(`UPDATE clinic_owner SET name = 'web edit' WHERE id = 100`);
    capture = true;
    const r = await e.runCycle();
    expect(r).toMatchObject({ pushed: 1200, batches: 3, conflicts: 1, pending: 0 });
    // Three batches reached the server; the one read ahead while the conflicting answer was on its way never did.
    expect((await sent()) - before).toBe(3);
    expect(readAhead).toHaveLength(1);
    expect(await remote.sql(`SELECT batch_id FROM epetsync.batches WHERE batch_id = $1`, [readAhead[0]])).toEqual([]);
    expect(outboxCount(db)).toBe(0);
    expect(await remote.sql(`SELECT count(*) FILTER (WHERE name LIKE '% (desk)')::int AS desk, count(*) FILTER (WHERE name = 'web edit')::int AS web FROM clinic_owner`)).toEqual([{ desk: 1199, web: 1 }]);
    expect(local(`SELECT name FROM clinic_owner WHERE id = 100`)).toEqual([{ name: 'web edit' }]);
  });

  it('starts from the server head, so rows written before it are not replayed', async () => {
    await remote.sql(`INSERT INTO clinic_species VALUES ('old', 'Before the start')`);
    const e = engine();
    const { cursor } = await e.prepare();
    expect(readMeta(db, META.pullCursor)).toBe(cursor);
    expect(await e.runCycle()).toMatchObject({ pulled: 0 });
  });

  it.each<[ConflictPolicy, string, string, 'local' | 'remote']>([
    ['server-wins', '2026-11-25 12:00:00', 'Web edit', 'remote'],
    ['client-wins', '2026-11-25 12:00:00', 'Desk edit', 'local'],
    ['newest-wins', '2026-11-25 12:00:00', 'Desk edit', 'local'],
    ['newest-wins', '2026-11-25 10:00:00', 'Web edit', 'remote'],
  ])('settles a row changed on both sides by %s (desk at %s) and logs the losing version', async (policy, deskTime, expected, winner) => {
    const e = engine({ policy });
    await e.prepare();
    desktopWrite(path, [[["INSERT INTO clinic_owner (name, updated_at) VALUES ('Original', '2026-11-25 09:00:00')"]]]);
    await e.runCycle();
    await remote.sql(`UPDATE clinic_owner SET name = 'Web edit', updated_at = '2026-11-25T11:00:00Z' WHERE id = 1`);
    desktopWrite(path, [[['UPDATE clinic_owner SET name = ?, updated_at = ? WHERE id = 1', ['Desk edit', deskTime]]]]);
    const r = await e.runCycle();
    expect(r.conflicts).toBe(1);
    await e.runCycle();
    expect(await owners()).toEqual([{ id: '1', name: expected }]);
    expect(local('SELECT name FROM clinic_owner')).toEqual([{ name: expected }]);
    const log = listConflicts(db);
    expect(log).toHaveLength(1);
    expect(log[0]).toMatchObject({ table: 'clinic_owner', pk: { id: '1' }, kind: 'conflict', policy, winner });
    const loser = winner === 'local' ? log[0]!.remoteValues : log[0]!.localValues;
    expect(loser).toMatchObject({ name: winner === 'local' ? 'Web edit' : 'Desk edit' });
    // The server recorded the clash too.
    expect(await remote.sql(`SELECT count(*)::int AS n FROM epetsync.conflicts WHERE table_name = 'clinic_owner'`)).toEqual([{ n: expect.any(Number) }]);
  });

  it('settles a conflict found while pulling (edited here after the push, edited there) by policy', async () => {
    const e = engine({ policy: 'client-wins' });
    await e.prepare();
    desktopWrite(path, [[["INSERT INTO clinic_species VALUES ('cat', 'Cat')"]]]);
    await e.runCycle();
    // The web edit lands before, the desktop edit after, the push of this cycle.
    await remote.sql(`UPDATE clinic_species SET label = 'Web cat' WHERE code = 'cat'`);
    const hooked = engine({
      policy: 'client-wins',
      hooks: { beforePull: () => desktopWrite(path, [[["UPDATE clinic_species SET label = 'Desk cat' WHERE code = 'cat'"]]]) },
    });
    await hooked.prepare();
    desktopWrite(path, [[["INSERT INTO clinic_species VALUES ('dog', 'Dog')"]]]);
    const r = await hooked.runCycle();
    expect(r.conflicts).toBe(1);
    await e.runCycle();
    expect(await remote.sql(`SELECT label FROM clinic_species WHERE code = 'cat'`)).toEqual([{ label: 'Desk cat' }]);
    expect(listConflicts(db)[0]).toMatchObject({ source: 'pull', winner: 'local', remoteValues: { code: 'cat', label: 'Web cat' } });
  });

  it('moves an offline insert whose id the web app took, children following, both rows intact', async () => {
    const e = engine();
    await e.prepare();
    // Offline on the desktop: owner 1 with two pets and a vaccination.
    desktopWrite(path, [
      [
        ["INSERT INTO clinic_owner (name, updated_at) VALUES ('Desk owner', '2026-11-25 09:00:00')"],
        ["INSERT INTO clinic_pet (owner_id, name, neutered, updated_at) VALUES (1, 'Desk pet A', 0, '2026-11-25 09:00:00')"],
        ["INSERT INTO clinic_pet (owner_id, name, neutered, updated_at) VALUES (1, 'Desk pet B', 0, '2026-11-25 09:00:00')"],
        ["INSERT INTO clinic_vaccination VALUES (2, 'rabies', '2026-11-20')"],
      ],
    ]);
    // Meanwhile on the web: owner 1 and a pet of theirs.
    await remote.sql(`INSERT INTO clinic_owner (name) VALUES ('Web owner')`);
    await remote.sql(`INSERT INTO clinic_pet (owner_id, name) VALUES (1, 'Web pet')`);
    const r = await e.runCycle();
    expect(r.collisions).toBeGreaterThanOrEqual(1);
    await e.runCycle();

    const remoteOwners = await remote.sql<{ id: string; name: string }>(`SELECT id::text AS id, name FROM clinic_owner ORDER BY id`);
    expect(remoteOwners.map((o) => o.name).sort()).toEqual(['Desk owner', 'Web owner']);
    const webOwner = remoteOwners.find((o) => o.name === 'Web owner')!;
    const deskOwner = remoteOwners.find((o) => o.name === 'Desk owner')!;
    expect(webOwner.id).toBe('1');
    expect(deskOwner.id).not.toBe('1');
    const pets = await remote.sql<{ id: string; owner_id: string; name: string }>(`SELECT id::text AS id, owner_id::text AS owner_id, name FROM clinic_pet ORDER BY name`);
    expect(pets.map((p) => [p.name, p.owner_id === deskOwner.id ? 'desk' : p.owner_id === webOwner.id ? 'web' : p.owner_id])).toEqual([
      ['Desk pet A', 'desk'],
      ['Desk pet B', 'desk'],
      ['Web pet', 'web'],
    ]);
    // Both sides hold the same rows, and the vaccination still points at desk pet B.
    const localPets = local(`SELECT id, owner_id, name FROM clinic_pet ORDER BY name`) as Array<{ id: number; owner_id: number; name: string }>;
    expect(localPets.map((p) => [String(p.id), String(p.owner_id), p.name])).toEqual(pets.map((p) => [p.id, p.owner_id, p.name]));
    const petB = pets.find((p) => p.name === 'Desk pet B')!;
    expect(await remote.sql(`SELECT pet_id::text AS pet_id FROM clinic_vaccination`)).toEqual([{ pet_id: petB.id }]);
    expect(local(`SELECT pet_id FROM clinic_vaccination`)).toEqual([{ pet_id: Number(petB.id) }]);
    expect(listConflicts(db).filter((c) => c.kind === 'id-collision').length).toBe(r.collisions);
    // The web app's next insert does not reuse the moved id.
    const [next] = await remote.sql<{ id: string }>(`INSERT INTO clinic_owner (name) VALUES ('Next web owner') RETURNING id::text AS id`);
    expect(remoteOwners.map((o) => o.id)).not.toContain(next!.id);
  });

  it('sends the children of an offline insert only after its batch was answered, so they never point at a colliding web row', async () => {
    // Found by the network chaos test: a child sent with its colliding parent pointed at the web app's
    // row until the next batch, and the web app deleting that row with ON DELETE CASCADE took it along.
    const petsOnServerAfterEachUpload: string[][] = [];
    const uploads: Array<Promise<void>> = [];
    const e = engine({
      hooks: {
        afterUpload: () => {
          uploads.push(remote.sql<{ name: string }>(`SELECT name FROM clinic_pet ORDER BY name`).then((rows) => { petsOnServerAfterEachUpload.push(rows.map((r) => r.name)); }));
        },
      },
    });
    await e.prepare();
    desktopWrite(path, [
      [
        ["INSERT INTO clinic_owner (name, updated_at) VALUES ('Desk owner', '2026-11-25 09:00:00')"],
        ["INSERT INTO clinic_pet (owner_id, name, neutered, updated_at) VALUES (1, 'Desk pet', 0, '2026-11-25 09:00:00')"],
      ],
    ]);
    await remote.sql(`INSERT INTO clinic_owner (name) VALUES ('Web owner')`);
    const r = await e.runCycle();
    await Promise.all(uploads);
    expect(r).toMatchObject({ collisions: 1, pending: 0 });
    // The owner went alone; the pet followed in a later batch, with the owner's moved id.
    expect(petsOnServerAfterEachUpload[0]).toEqual([]);
    const [desk] = await remote.sql<{ id: string }>(`SELECT id::text AS id FROM clinic_owner WHERE name = 'Desk owner'`);
    expect(desk!.id).not.toBe('1');
    expect(await remote.sql(`SELECT owner_id::text AS owner_id FROM clinic_pet WHERE name = 'Desk pet'`)).toEqual([{ owner_id: desk!.id }]);
    expect(local(`SELECT owner_id FROM clinic_pet WHERE name = 'Desk pet'`)).toEqual([{ owner_id: Number(desk!.id) }]);
  });

  it('moves a colliding local insert found while pulling before applying the page, children following', async () => {
    const e = engine({
      hooks: {
        beforePull: () =>
          desktopWrite(path, [
            [
              ["INSERT INTO clinic_owner (name, updated_at) VALUES ('Desk owner', '2026-11-25 09:00:00')"],
              ["INSERT INTO clinic_pet (owner_id, name, neutered, updated_at) VALUES (1, 'Desk pet', 0, '2026-11-25 09:00:00')"],
            ],
          ]),
      },
    });
    await e.prepare();
    await remote.sql(`INSERT INTO clinic_owner (name) VALUES ('Web owner')`);
    await remote.sql(`INSERT INTO clinic_pet (owner_id, name) VALUES (1, 'Web pet')`);
    const r = await e.runCycle();
    expect(r.collisions).toBe(2);
    expect(listConflicts(db).map((c) => [c.kind, c.source, c.winner])).toEqual([
      ['id-collision', 'pull', 'both'],
      ['id-collision', 'pull', 'both'],
    ]);
    await engine().runCycle();
    const remotePets = await remote.sql<{ pet: string; owner: string }>(
      `SELECT p.name AS pet, o.name AS owner FROM clinic_pet p JOIN clinic_owner o ON o.id = p.owner_id ORDER BY p.name`,
    );
    expect(remotePets).toEqual([
      { pet: 'Desk pet', owner: 'Desk owner' },
      { pet: 'Web pet', owner: 'Web owner' },
    ]);
    expect(local(`SELECT p.name AS pet, o.name AS owner FROM clinic_pet p JOIN clinic_owner o ON o.id = p.owner_id ORDER BY p.name`)).toEqual(remotePets);
    expect(local(`SELECT id, name FROM clinic_owner WHERE id = 1`)).toEqual([{ id: 1, name: 'Web owner' }]);
  });

  it('keeps an offline insert whose id the web app used for a row it has deleted since, at push and at pull', async () => {
    // Found by the network chaos test: the web app's delete of its own row won the "conflict" and took the desktop's new row with it.
    let duringPull: (() => void) | undefined;
    const e = engine({ hooks: { beforePull: () => duringPull?.() } });
    await e.prepare();
    // At push: the desktop's owner 1 meets the web app's owner 1, already deleted.
    desktopWrite(path, [[["INSERT INTO clinic_owner (name, updated_at) VALUES ('Desk owner, pushed', '2026-11-25 09:00:00')"]]]);
    await remote.sql(`INSERT INTO clinic_owner (name) VALUES ('Web owner 1')`);
    await remote.sql(`DELETE FROM clinic_owner`);
    expect((await e.runCycle()).collisions).toBe(1);
    await e.runCycle();
    // At pull: the web app takes and deletes the id the desktop's next insert gets, and that insert lands between push and pull.
    const next = Number((local(`SELECT max((SELECT seq FROM sqlite_sequence WHERE name = 'clinic_owner'), (SELECT max(id) FROM clinic_owner)) AS n`) as Array<{ n: number }>)[0]!.n) + 1;
    await remote.sql(`INSERT INTO clinic_owner (id, name) VALUES ($1, 'Web owner 2')`, [next]);
    await remote.sql(`DELETE FROM clinic_owner WHERE id = $1`, [next]);
    duringPull = () => {
      duringPull = undefined;
      desktopWrite(path, [[["INSERT INTO clinic_owner (name, updated_at) VALUES ('Desk owner, pulled', '2026-11-25 09:00:00')"]]]);
    };
    expect((await e.runCycle()).collisions).toBe(1);
    await e.runCycle();
    const names = ['Desk owner, pulled', 'Desk owner, pushed'];
    expect((await owners()).map((o) => o.name).sort()).toEqual(names);
    expect((local(`SELECT name FROM clinic_owner ORDER BY name`) as Array<{ name: string }>).map((o) => o.name)).toEqual(names);
    expect(local(`SELECT id FROM clinic_owner ORDER BY id`)).toEqual((await owners()).map((o) => ({ id: Number(o.id) })));
  });

  it('moves an offline parent whose id the web app used and deleted, with its child in the same batch: no batch stuck on the foreign key', async () => {
    // Found by the network chaos test: the server kept its delete, the child in the batch then broke the
    // deferred foreign key at COMMIT, and the server answered 500 to that batch forever.
    const e = engine();
    await e.prepare();
    desktopWrite(path, [
      [
        ["INSERT INTO clinic_owner (name, updated_at) VALUES ('Desk owner', '2026-11-25 09:00:00')"],
        ["INSERT INTO clinic_pet (owner_id, name, neutered, updated_at) VALUES (1, 'Desk pet', 0, '2026-11-25 09:00:00')"],
      ],
    ]);
    await remote.sql(`INSERT INTO clinic_owner (name) VALUES ('Web owner, deleted')`);
    await remote.sql(`DELETE FROM clinic_owner`);
    await e.runCycle();
    await e.runCycle();
    const join = `SELECT p.name AS pet, o.name AS owner, CAST(p.owner_id AS text) AS owner_id FROM clinic_pet p JOIN clinic_owner o ON o.id = p.owner_id`;
    const remotePets = await remote.sql(join);
    expect(remotePets).toEqual([{ pet: 'Desk pet', owner: 'Desk owner', owner_id: expect.not.stringMatching(/^1$/) }]);
    expect(local(join)).toEqual(remotePets);
    expect(listQuarantine(db)).toEqual([]);
  });

  it('resends the same batch after a crash between upload and acknowledgement: no duplicate, no loss', async () => {
    const e = engine({
      hooks: {
        afterUpload: () => {
          throw new Error('simulated crash after upload');
        },
      },
    });
    await e.prepare();
    desktopWrite(path, [[["INSERT INTO clinic_owner (name, updated_at) VALUES ('Once', '2026-11-25 09:00:00')"]]]);
    await expect(e.runCycle()).rejects.toThrow('simulated crash');
    expect(outboxCount(db)).toBe(1);
    const [batch] = db.prepare('SELECT batch_id FROM _epetsync_outbox').pluck().all() as string[];
    const r = await engine().runCycle();
    expect(r).toMatchObject({ pushed: 1, pending: 0 });
    expect(outboxCount(db)).toBe(0);
    expect(await owners()).toEqual([{ id: '1', name: 'Once' }]);
    expect(await remote.sql(`SELECT count(*)::int AS n FROM epetsync.batches WHERE batch_id = $1`, [batch])).toEqual([{ n: 1 }]);
  });

  it('keeps cursor and data together when applying a page fails half-way', async () => {
    const e = engine({
      hooks: {
        beforePullCommit: () => {
          throw new Error('simulated crash during apply');
        },
      },
    });
    const { cursor } = await e.prepare();
    await remote.sql(`INSERT INTO clinic_species VALUES ('a', 'A'), ('b', 'B')`);
    await expect(e.runCycle()).rejects.toThrow('simulated crash');
    expect(readMeta(db, META.pullCursor)).toBe(cursor);
    expect(local('SELECT count(*) AS n FROM clinic_species')).toEqual([{ n: 0 }]);
    const r = await engine().runCycle();
    expect(r.pulled).toBe(2);
    expect(readMeta(db, META.pullCursor)).not.toBe(cursor);
    expect(local('SELECT code FROM clinic_species ORDER BY code')).toEqual([{ code: 'a' }, { code: 'b' }]);
  });

  it('quarantines a change the server refuses for good and lets the rest flow', async () => {
    const e = engine();
    await e.prepare();
    desktopWrite(path, [
      [
        ["INSERT INTO clinic_owner (name, updated_at) VALUES ('Fine', '2026-11-25 09:00:00')"],
        // SQLite has no CHECK here; PostgreSQL refuses a negative weight.
        ["INSERT INTO clinic_pet (owner_id, name, weight_kg, neutered, updated_at) VALUES (1, 'Bad weight', -3, 0, '2026-11-25 09:00:00')"],
        ["INSERT INTO clinic_pet (owner_id, name, weight_kg, neutered, updated_at) VALUES (1, 'Good', 4, 0, '2026-11-25 09:00:00')"],
        ["INSERT INTO clinic_species VALUES ('way-too-long-species-code', 'x')"],
      ],
    ]);
    const r = await e.runCycle();
    expect(r).toMatchObject({ quarantined: 2, pending: 0 });
    expect(await remote.sql(`SELECT name FROM clinic_pet`)).toEqual([{ name: 'Good' }]);
    const q = listQuarantine(db);
    expect(q.map((x) => [x.table, x.code])).toEqual(
      expect.arrayContaining([
        ['clinic_species', 'UNCONVERTIBLE'],
        ['clinic_pet', 'CONSTRAINT_VIOLATION'],
      ]),
    );
    expect(q.find((x) => x.code === 'CONSTRAINT_VIOLATION')!.reason).toMatch(/weight_kg|check/i);
  });

  it('quarantines a remote row the desktop schema refuses and keeps pulling the rest', async () => {
    db.exec(`CREATE UNIQUE INDEX species_label_local_only ON clinic_species (label)`);
    const e = engine();
    await e.prepare();
    await remote.sql(`INSERT INTO clinic_species VALUES ('a', 'Same'), ('b', 'Same'), ('c', 'Other')`);
    const r = await e.runCycle();
    expect(r).toMatchObject({ pulled: 3, quarantined: 1 });
    expect(local('SELECT code FROM clinic_species ORDER BY code')).toEqual([{ code: 'a' }, { code: 'c' }]);
    expect(listQuarantine(db)).toMatchObject([{ table: 'clinic_species', pk: { code: 'b' }, op: 'upsert', code: 'LOCAL_REFUSED', reason: expect.stringMatching(/UNIQUE constraint failed/) }]);
    expect(await e.runCycle()).toMatchObject({ pulled: 0, pushed: 0 });
  });

  it('does not lose desktop writes made while a sync is in flight', async () => {
    let n = 0;
    const e = engine({
      batchSize: 2,
      hooks: {
        afterUpload: () => {
          n += 1;
          if (n <= 3) desktopWrite(path, [[['INSERT INTO clinic_species VALUES (?, ?)', [`during-${n}`, 'written mid-sync']], ["UPDATE clinic_owner SET name = 'Edited mid-sync' WHERE id = 1"]]]);
        },
      },
    });
    await e.prepare();
    desktopWrite(path, [[["INSERT INTO clinic_owner (name, updated_at) VALUES ('Before', '2026-11-25 09:00:00')"], ["INSERT INTO clinic_species VALUES ('x', 'X')"]]]);
    await e.runCycle();
    await e.runCycle();
    expect(await owners()).toEqual([{ id: '1', name: 'Edited mid-sync' }]);
    expect((await remote.sql<{ code: string }>(`SELECT code FROM clinic_species ORDER BY code`)).map((r) => r.code)).toEqual(['during-1', 'during-2', 'during-3', 'x']);
    expect(local('SELECT count(*) AS n FROM _epetsync_changelog')).toEqual([{ n: 0 }]);
  });
});

describe('SyncEngine against a server whose own policy is client-wins', () => {
  let lenient: SyncServer;
  let lenientClient: RemoteDatabaseClient;
  beforeAll(async () => {
    lenient = await startSyncServer({ databaseUrl: remote.pg.url, port: 0, conflictPolicy: 'client-wins' });
  });
  afterAll(async () => {
    await lenient?.close();
  });
  beforeEach(async () => {
    lenientClient = new RemoteDatabaseClient({ url: lenient.url, username: USER, password: PASSWORD, nodeId: 'desk-2' });
  });
  afterEach(async () => {
    await lenientClient.close();
  });

  it('undoes the server applying the desktop version when the client policy is server-wins', async () => {
    const e = new SyncEngine({ db, remote: lenientClient, policy: 'server-wins' });
    await e.prepare();
    desktopWrite(path, [[["INSERT INTO clinic_species VALUES ('cat', 'Cat')"]]]);
    await e.runCycle();
    await remote.sql(`UPDATE clinic_species SET label = 'Web cat' WHERE code = 'cat'`);
    desktopWrite(path, [[["UPDATE clinic_species SET label = 'Desk cat' WHERE code = 'cat'"]]]);
    const r = await e.runCycle();
    expect(r.conflicts).toBe(1);
    expect(await remote.sql(`SELECT label FROM clinic_species`)).toEqual([{ label: 'Web cat' }]);
    expect(local(`SELECT label FROM clinic_species`)).toEqual([{ label: 'Web cat' }]);
    expect(listConflicts(db)[0]).toMatchObject({ winner: 'remote', localValues: { label: 'Desk cat' }, remoteValues: { label: 'Web cat' } });
  });

  it('sends nothing for a row inserted and deleted here before it was ever sent, so a web row with its id stays', async () => {
    const e = new SyncEngine({ db, remote: lenientClient, policy: 'client-wins' });
    await e.prepare();
    desktopWrite(path, [
      [["INSERT INTO clinic_owner (name, updated_at) VALUES ('Short-lived desk owner', '2026-11-25 09:00:00')"]],
      [["DELETE FROM clinic_owner WHERE name = 'Short-lived desk owner'"]],
    ]);
    await remote.sql(`INSERT INTO clinic_owner (name) VALUES ('Web owner')`);
    const r = await e.runCycle();
    expect(r).toMatchObject({ pushed: 0, pending: 0 });
    expect(await owners()).toEqual([{ id: '1', name: 'Web owner' }]);
    expect(local('SELECT id, name FROM clinic_owner')).toEqual([{ id: 1, name: 'Web owner' }]);
  });

  it('puts the web app row back and moves the desktop row when the server had let a colliding insert overwrite it', async () => {
    const e = new SyncEngine({ db, remote: lenientClient });
    await e.prepare();
    desktopWrite(path, [[["INSERT INTO clinic_owner (name, updated_at) VALUES ('Desk owner', '2026-11-25 09:00:00')"]]]);
    await remote.sql(`INSERT INTO clinic_owner (name) VALUES ('Web owner')`);
    const r = await e.runCycle();
    expect(r.collisions).toBe(1);
    await e.runCycle();
    const rows = await owners();
    expect(rows.find((o) => o.id === '1')).toEqual({ id: '1', name: 'Web owner' });
    expect(rows.map((o) => o.name).sort()).toEqual(['Desk owner', 'Web owner']);
    expect((local('SELECT id, name FROM clinic_owner ORDER BY id') as Array<{ id: number; name: string }>).map((o) => [String(o.id), o.name])).toEqual(rows.map((o) => [o.id, o.name]));
  });
});
