/**
 * The change signal that wakes long polls (src/server/notify.ts): a commit notified while a feed
 * read is in flight must wake the wait that follows it, not leave it to the polling tick.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listenForChanges, type ChangeSignal } from '../../src/server/notify.js';
import { ENGINES, startHarness, type Harness } from './fixture.js';

describe.each(ENGINES)('change signal on %s', (engine) => {
  let h: Harness;
  let changes: ChangeSignal;
  beforeAll(async () => {
    h = await startHarness(engine);
    changes = await listenForChanges(h.server.db);
  });
  afterAll(async () => {
    await changes?.close();
    await h?.close();
  });

  it('wakes a wait at once for a commit notified after the mark was taken, and only then', async () => {
    const mark = changes.mark();
    const seen = changes.next(60_000);
    // The commit lands while the feed read would run: after the mark, before the wait begins.
    await h.sql(`INSERT INTO clinic_visit (id, note) VALUES (9101, 'between read and wait')`);
    expect(await seen).toBe(true);
    expect(changes.mark()).toBeGreaterThan(mark);
    // No further commit comes: only the mark can make this wait report a change (the abort otherwise ends it with false).
    expect(await changes.next(60_000, AbortSignal.timeout(2000), mark)).toBe(true);
    expect(await changes.next(60_000, AbortSignal.timeout(500), changes.mark())).toBe(false);
  });
});
