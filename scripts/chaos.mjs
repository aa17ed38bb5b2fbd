// `npm run test:chaos`: the long reliability suite (issue 9). Runs test/chaos/ with EPETSYNC_CHAOS=long
// within a hard time limit, then greps every log and captured output the suite wrote for every secret
// it used, and writes the run's figures into docs/reliability.md (between the "chaos:latest" markers).
// Exit code: vitest's, or 1 when a secret leaked, a row was lost or duplicated, or the time ran out.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { cpus, totalmem, tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const LIMIT_MS = 15 * 60_000;
const START = '<!-- chaos:latest:start -->';
const END = '<!-- chaos:latest:end -->';
/** Files that hold logs or captured output; configs and state files hold secrets on purpose and are not grepped. */
const GREPPED = /(\.log|\.out|\.err|\.ndjson)$/;

const out = mkdtempSync(join(tmpdir(), 'epetsync-chaos-run-'));
const seed = Number(process.env.EPETSYNC_CHAOS_SEED ?? Date.now() % 2 ** 31);
const report = !process.argv.includes('--no-report');
const started = Date.now();
console.log(`epetsync chaos suite: seed ${seed}, files in ${out}, limit ${LIMIT_MS / 60_000} min`);

const code = await new Promise((resolve) => {
  const child = spawn(process.execPath, [join(ROOT, 'node_modules/vitest/vitest.mjs'), 'run', '--config', 'vitest.chaos.config.ts', ...process.argv.slice(2).filter((a) => a !== '--no-report')], {
    cwd: ROOT,
    stdio: 'inherit',
    env: { ...process.env, EPETSYNC_CHAOS: 'long', EPETSYNC_CHAOS_OUT: out, EPETSYNC_CHAOS_SEED: String(seed) },
    detached: true,
  });
  const timer = setTimeout(() => {
    console.error(`\nchaos suite: over ${LIMIT_MS / 60_000} minutes, stopping it`);
    try { process.kill(-child.pid, 'SIGKILL'); } catch { /* already gone */ }
    resolve('timeout');
  }, LIMIT_MS);
  child.on('exit', (c, s) => { clearTimeout(timer); resolve(c ?? (s ? 1 : 0)); });
});
const seconds = Math.round((Date.now() - started) / 1000);

/** Lists every file under dir. */
function walk(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    const st = statSync(path, { throwIfNoEntry: false });
    if (!st) return [];
    return st.isDirectory() ? walk(path) : [path];
  });
}

const secrets = existsSync(join(out, 'secrets.txt')) ? [...new Set(readFileSync(join(out, 'secrets.txt'), 'utf8').split('\n').filter(Boolean))] : [];
const grepped = walk(join(out, 'work')).filter((f) => GREPPED.test(f));
let lines = 0;
const leaks = [];
for (const file of grepped) {
  const text = readFileSync(file, 'utf8');
  lines += text.split('\n').length;
  for (const s of secrets) if (text.includes(s)) leaks.push(`${relative(out, file)} holds a registered secret (${s.length} characters)`);
}

const figures = walk(join(out, 'figures')).filter((f) => f.endsWith('.json')).map((f) => JSON.parse(readFileSync(f, 'utf8'))).sort((a, b) => a.part.localeCompare(b.part));
const badRows = figures.filter((f) => f.rows && (f.rows.lost !== 0 || f.rows.duplicated !== 0));

const sum = (pick) => {
  const total = {};
  for (const f of figures) for (const [k, v] of Object.entries(pick(f) ?? {})) total[k] = (total[k] ?? 0) + v;
  return total;
};
const kv = (o) => Object.entries(o).map(([k, v]) => `${k} ${v}`).join(', ') || '—';
const n = (v) => (typeof v === 'number' ? v.toLocaleString('en-US') : String(v));

const md = [];
md.push(`## Latest run: ${new Date(started).toISOString().slice(0, 16).replace('T', ' ')} UTC`);
md.push('');
md.push(`Command: \`npm run test:chaos\` (seed ${seed}; replay with \`EPETSYNC_CHAOS_SEED=${seed} npm run test:chaos\`).`);
md.push(`Result: ${code === 0 && leaks.length === 0 && badRows.length === 0 ? 'passed' : 'FAILED'} in ${seconds} s (vitest exit ${code}). Machine: ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}.`);
md.push('');
md.push(`- Faults injected: ${kv(sum((f) => f.faults))}.`);
md.push(`- Kills (SIGKILL): ${kv(sum((f) => f.kills))}.`);
md.push(`- Restarts: ${kv(sum((f) => f.restarts))}.`);
const rows = figures.filter((f) => f.rows);
md.push(`- Rows written: desktop ${n(rows.reduce((a, f) => a + f.rows.desktop_written, 0))}, web ${n(rows.reduce((a, f) => a + f.rows.web_written, 0))}; lost ${n(rows.reduce((a, f) => a + f.rows.lost, 0))}, duplicated ${n(rows.reduce((a, f) => a + f.rows.duplicated, 0))}.`);
const hostile = figures.flatMap((f) => Object.entries(f.hostile ?? {}));
md.push(`- Hostile requests and answers: ${n(hostile.reduce((a, [, t]) => a + t.tried, 0))} tried.`);
md.push(`- Secrets: ${secrets.length} registered, grepped in ${grepped.length} log and output files (${n(lines)} lines): ${leaks.length === 0 ? 'none found' : `${leaks.length} FOUND`}.`);
md.push('');
md.push('| part | what ran | s | faults | kills | restarts | rows desktop / web | lost | dup |');
md.push('|---|---|---:|---|---|---|---|---:|---:|');
for (const f of figures) {
  md.push(`| ${f.part} | ${f.title} | ${f.seconds ?? ''} | ${f.faults ? kv(f.faults) : ''} | ${f.kills ? kv(f.kills) : ''} | ${f.restarts ? kv(f.restarts) : ''} | ${f.rows ? `${n(f.rows.desktop_written)} / ${n(f.rows.web_written)}` : ''} | ${f.rows ? f.rows.lost : ''} | ${f.rows ? f.rows.duplicated : ''} |`);
}
if (hostile.length > 0) {
  md.push('');
  md.push('| hostile kind | tried | answered |');
  md.push('|---|---:|---|');
  for (const [kind, t] of hostile) md.push(`| ${kind} | ${n(t.tried)} | ${kv(t.answers)} |`);
}
const checks = figures.filter((f) => f.checks);
if (checks.length > 0) {
  md.push('');
  md.push('Other checks:');
  for (const f of checks) md.push(`- ${f.part}: ${Object.entries(f.checks).map(([k, v]) => `${k} ${n(v)}`).join('; ')}.`);
}
if (leaks.length > 0) {
  md.push('');
  md.push('Secrets found:');
  for (const l of leaks) md.push(`- ${l}`);
}
const section = md.join('\n');
console.log(`\n${section}\n`);

if (report) {
  const path = join(ROOT, 'docs/reliability.md');
  const doc = readFileSync(path, 'utf8');
  const a = doc.indexOf(START);
  const b = doc.indexOf(END);
  if (a < 0 || b < a) throw new Error(`docs/reliability.md lacks the ${START} … ${END} markers`);
  writeFileSync(path, `${doc.slice(0, a + START.length)}\n${section}\n${doc.slice(b)}`);
  console.log('figures written to docs/reliability.md');
}
if (leaks.length > 0) console.error(`chaos suite: ${leaks.length} secret(s) found in logs or output`);
if (badRows.length > 0) console.error(`chaos suite: rows lost or duplicated in ${badRows.map((f) => f.part).join(', ')}`);
process.exit(code === 0 && leaks.length === 0 && badRows.length === 0 ? 0 : 1);
