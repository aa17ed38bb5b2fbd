import { execFileSync } from 'node:child_process';

/**
 * Runs SQL statements against an SQLite file from a separate Python process, the way the Vet
 * Portal desktop app writes (Python's sqlite3 module, its own SQLite library, its own connection).
 * Each inner list is one transaction. Returns the rows of the final statement when it is a query.
 */
export function desktopWrite(dbPath: string, transactions: Array<Array<[string, unknown[]?]>>): unknown[][] {
  const script = `
import json, sqlite3, sys
spec = json.load(sys.stdin)
con = sqlite3.connect(spec["db"], timeout=10, isolation_level=None)
rows = []
for tx in spec["transactions"]:
    con.execute("BEGIN")
    for sql, params in tx:
        cur = con.execute(sql, params or [])
        rows = cur.fetchall()
    con.execute("COMMIT")
con.close()
print(json.dumps(rows))
`;
  const out = execFileSync('python3', ['-c', script], {
    input: JSON.stringify({ db: dbPath, transactions: transactions.map((tx) => tx.map(([sql, params]) => [sql, params ?? []])) }),
    encoding: 'utf8',
  });
  return JSON.parse(out) as unknown[][];
}
