// Prints the error-code table of docs/errors.md from the built ERROR_CODES (run: node scripts/errors-doc.mjs).
import { ERROR_CODES } from '../dist/errors.js';

for (const [code, { exit, summary }] of Object.entries(ERROR_CODES)) console.log(`| \`${code}\` | ${exit} | ${summary} |`);
