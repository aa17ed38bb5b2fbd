import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMigrateBed, type MigrateBed } from '../../helpers/clinic-db.js';
import { loginToken } from '../../helpers/server.js';

/** Returns the peak resident memory (VmHWM) of a process in MiB. */
function peakRssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmHWM for process ${pid}`);
  return Number(m[1]) / 1024;
}

/** Yields an NDJSON body piece by piece, as a client streaming rows would: never the whole body at once. */
async function* lines(header: unknown, count: number, row: (i: number) => unknown): AsyncGenerator<Buffer> {
  yield Buffer.from(`${JSON.stringify(header)}\n`);
  let piece = '';
  for (let i = 1; i <= count; i += 1) {
    piece += `${JSON.stringify(row(i))}\n`;
    if (piece.length >= 256 * 1024) {
      yield Buffer.from(piece);
      piece = '';
    }
  }
  if (piece) yield Buffer.from(piece);
}

const OWNER_COLUMNS = ['id', 'first_name', 'last_name', 'email', 'phone', 'is_active', 'balance', 'created_at'];
const owner = (i: number): unknown[] => [String(i), 'Ana', 'Ménard', `ana${i}@example.org`, null, true, '12.50', '2026-11-01T10:00:00Z'];

describe('streamed bulk bodies (epetsync serve over PostgreSQL)', () => {
  let bed: MigrateBed;
  let token: string;

  beforeAll(async () => {
    bed = await startMigrateBed('eps_stream');
    token = await loginToken(bed.server.url, 'frontdesk', 'correct horse battery');
  }, 120_000);
  afterAll(async () => {
    await bed?.close();
  });

  const post = async (path: string, body: AsyncIterable<Buffer>, gzip = false): Promise<{ status: number; json: { error?: { code: string; message: string; details?: Record<string, unknown> } } & Record<string, unknown> }> => {
    const res = await request(new URL(path, bed.server.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-ndjson', 'x-epetsync-node': 'streamed-bulk-test', ...(gzip ? { 'content-encoding': 'gzip' } : {}) },
      body: gzip ? Readable.from(body).pipe(createGzip({ level: 1 })) : Readable.from(body),
    });
    return { status: res.statusCode, json: (await res.body.json()) as never };
  };

  it('rejects a bad line deep inside a streamed body with its line number, and writes nothing', async () => {
    // 30 000 good rows go into COPY before line 30 002 is read: the transaction must still undo them.
    const res = await post('/api/database/bulk/?table=clinic_owner&load_id=deep-1', lines({ columns: OWNER_COLUMNS }, 40_000, (i) => (i === 30_001 ? [String(i), 'Ana', 'Ménard', 'x@example.org', null, 'yes', '1.00', '2026-11-01T10:00:00Z'] : owner(i))));
    expect(res.status).toBe(400);
    expect(res.json.error).toMatchObject({ code: 'INVALID_VALUE', details: { table: 'clinic_owner', column: 'is_active', line: 30_002 } });
    expect(res.json.error!.message).toContain('line 30002');
    expect(await bed.sql('SELECT count(*)::int AS n FROM clinic_owner')).toEqual([{ n: 0 }]);
    expect(await bed.sql(`SELECT count(*)::int AS n FROM epetsync.bulk_loads WHERE load_id = 'deep-1'`)).toEqual([{ n: 0 }]);

    // The connection and the load id are still usable: the same rows, all good, load in one request.
    const good = await post('/api/database/bulk/?table=clinic_owner&load_id=deep-1', lines({ columns: OWNER_COLUMNS }, 40_000, owner));
    expect(good.status).toBe(200);
    expect(good.json).toMatchObject({ table: 'clinic_owner', rows: 40_000, total_rows: 40_000, last_key: ['40000'] });
    expect(await bed.sql('SELECT count(*)::int AS n FROM clinic_owner')).toEqual([{ n: 40_000 }]);
  }, 120_000);

  it('names the line of a row PostgreSQL refuses inside a streamed body, and writes nothing', async () => {
    const before = await bed.sql('SELECT count(*)::int AS n FROM clinic_owner');
    // Row 12 000 repeats the e-mail of an owner already loaded: a unique violation COPY reports as it goes.
    const res = await post('/api/database/bulk/?table=clinic_owner&load_id=deep-2', lines({ columns: OWNER_COLUMNS }, 20_000, (i) => [String(100_000 + i), 'Bo', 'Li', i === 12_000 ? 'ana7@example.org' : `bo${i}@example.org`, null, false, '0.00', '2026-11-02T10:00:00Z']));
    expect(res.status).toBe(409);
    expect(res.json.error).toMatchObject({ code: 'CONSTRAINT_VIOLATION', details: { line: 12_001 } });
    expect(await bed.sql('SELECT count(*)::int AS n FROM clinic_owner')).toEqual(before);
  }, 120_000);

  it('rejects a bad line deep inside a staged body and stages nothing', async () => {
    const res = await post('/api/database/migrate/stage/?table=clinic_owner&load_id=stage-1', lines({ columns: OWNER_COLUMNS }, 25_000, (i) => (i === 24_000 ? [null, 'Ana', 'Ménard', 'y@example.org', null, true, '1.00', '2026-11-01T10:00:00Z'] : owner(i))));
    expect(res.status).toBe(400);
    expect(res.json.error).toMatchObject({ code: 'MISSING_PRIMARY_KEY', details: { line: 24_001 } });
    expect(await bed.sql(`SELECT count(*)::int AS n FROM epetsync.bulk_loads WHERE load_id = 'stage-1'`)).toEqual([{ n: 0 }]);
  }, 120_000);

  it('keeps the server memory flat while a body far larger than that streams through', async () => {
    // 200 rows of 1 MiB each (gzip keeps it under the 64 MiB wire limit; 200 MiB after inflating, under 256):
    // a server holding the body (as text, then as lines) would grow by several hundred MiB.
    const diagnosis = 'fever and cough; '.repeat(64 * 1024).slice(0, 1024 * 1024);
    const before = peakRssMiB(bed.server.child.pid!);
    const res = await post(
      '/api/database/bulk/?table=clinic_medicalrecord&load_id=big-1',
      lines({ columns: ['id', 'pet_id', 'visit_date', 'diagnosis', 'temperature', 'created_at'] }, 201, (i) => (i === 201 ? ['201', '1', 'not a date', 'x', null, '2026-11-01T10:00:00Z'] : [String(i), '1', '2026-11-01', diagnosis, 38.5, '2026-11-01T10:00:00Z'])),
      true,
    );
    // The last line is bad, so every byte went through the parser and COPY before the answer.
    expect(res.status).toBe(400);
    expect(res.json.error).toMatchObject({ code: 'INVALID_VALUE', details: { column: 'visit_date', line: 202 } });
    const grown = peakRssMiB(bed.server.child.pid!) - before;
    expect(grown).toBeLessThan(100);
    expect(await bed.sql('SELECT count(*)::int AS n FROM clinic_medicalrecord')).toEqual([{ n: 0 }]);
  }, 180_000);
});
