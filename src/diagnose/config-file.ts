import { copyFileSync, readFileSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { applyEdits, modify, type JSONPath } from 'jsonc-parser';

/** Describes one change to config.json: the key path and its new value. */
export interface ConfigEdit {
  path: JSONPath;
  value: unknown;
}

/**
 * Changes keys of config.json in place, keeping the user's formatting, key order and everything
 * else byte for byte (jsonc-parser edits the text, it never re-serialises the document), after
 * copying the original to `config.json.bak`. Returns the backup's path.
 */
export function editConfigFile(file: string, edits: readonly ConfigEdit[]): string {
  const original = readFileSync(file, 'utf8');
  const bom = original.startsWith('\uFEFF') ? '\uFEFF' : '';
  let text = original.slice(bom.length);
  const eol = text.includes('\r\n') ? '\r\n' : '\n';
  const indent = /\n([ \t]+)"/.exec(text)?.[1] ?? '  ';
  const formattingOptions = { insertSpaces: !indent.startsWith('\t'), tabSize: indent.startsWith('\t') ? 1 : indent.length, eol };
  for (const edit of edits) text = applyEdits(text, modify(text, edit.path, edit.value, { formattingOptions }));
  const backup = `${file}.bak`;
  copyFileSync(file, backup);
  const mode = statSync(file).mode & 0o777;
  chmodSync(backup, mode);
  writeFileSync(file, bom + text);
  return backup;
}
