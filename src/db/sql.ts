/** Returns `name` quoted as an SQLite identifier (`"clinic pet ""x"""`), safe to splice into SQL text. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Returns true for the tables SQLite and epetsync keep for themselves (`sqlite_%`, `_epetsync_%`). */
export function isInternalTable(name: string): boolean {
  const lower = name.toLowerCase();
  return lower.startsWith('sqlite_') || lower.startsWith('_epetsync_');
}
