// The raw COPY baseline's export step, run as its own process so its time and peak RSS are measured:
// `node bench/export-csv.mjs <db.sqlite3> <out-dir> <table>...` writes <out-dir>/<n>.csv per table, in
// PostgreSQL's CSV dialect (NULL unquoted and empty, every text quoted, BLOBs as \x hex).
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';

const [dbPath, outDir, ...tables] = process.argv.slice(2);
const db = new Database(dbPath, { readonly: true });
db.defaultSafeIntegers(true);

/** Renders one SQLite value as a PostgreSQL CSV field. */
function field(v) {
  if (v === null) return '';
  if (Buffer.isBuffer(v)) return `\\x${v.toString('hex')}`;
  if (typeof v === 'string') return `"${v.replaceAll('"', '""')}"`;
  return String(v);
}

for (const [i, table] of tables.entries()) {
  const out = createWriteStream(join(outDir, `${i}.csv`));
  let chunk = '';
  for (const row of db.prepare(`SELECT * FROM "${table}"`).raw().iterate()) {
    chunk += `${row.map(field).join(',')}\n`;
    if (chunk.length > 1 << 20) {
      if (!out.write(chunk)) await new Promise((r) => out.once('drain', r));
      chunk = '';
    }
  }
  out.end(chunk);
  await new Promise((r) => out.on('finish', r));
}
db.close();
