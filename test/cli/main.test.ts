import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { COMMANDS } from '../../src/cli/commands.js';
import { buildProgram } from '../../src/cli/main.js';
import type { CommandSpec } from '../../src/cli/spec.js';
import { runCli } from '../helpers/cli.js';

function allSpecs(specs: CommandSpec[], prefix = 'epetsync'): Array<[string, CommandSpec]> {
  return specs.flatMap((s) => [[`${prefix} ${s.name}`, s] as [string, CommandSpec], ...allSpecs(s.subcommands ?? [], `${prefix} ${s.name}`)]);
}

function findCommand(program: Command, path: string[]): Command {
  let cmd = program;
  for (const name of path) cmd = cmd.commands.find((c) => c.name() === name)!;
  return cmd;
}

describe('cli registry', () => {
  const program = buildProgram(async () => {});
  it.each(allSpecs(COMMANDS))('%s has a description, examples and renders its help', (name, spec) => {
    expect(spec.description.length).toBeGreaterThan(10);
    expect(spec.examples.length).toBeGreaterThan(0);
    for (const example of spec.examples) expect(example).toMatch(/epetsync /);
    const help = findCommand(program, name.split(' ').slice(1)).helpInformation();
    expect(help.replace(/\s+/g, ' ')).toContain(spec.description);
    if (spec.load === undefined) expect(spec.subcommands?.length ?? 0).toBeGreaterThan(0);
  });
});

describe('epetsync (built binary)', () => {
  it('lists the commands in --help and exits 0', async () => {
    const run = await runCli(['--help']);
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('');
    for (const spec of COMMANDS) expect(run.stdout).toMatch(new RegExp(`^  ${spec.name}\\b`, 'm'));
    expect(run.stdout).toContain('Exit codes: 0 ok, 1 problems found, 2 usage or config error');
  });

  it('shows examples in a command help', async () => {
    const run = await runCli(['backup', '--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('Examples:\n  $ epetsync backup\n  $ epetsync backup --keep 14');
  });

  it('prints its version', async () => {
    const run = await runCli(['--version']);
    expect(run).toEqual({ code: 0, stdout: '0.1.0\n', stderr: '' });
  });

  it('answers an unknown command with a usage error and exit 2', async () => {
    const run = await runCli(['frobnicate']);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(`Error: unknown command 'frobnicate'\nTry: Run "epetsync --help" for usage.\n`);
  });

  it('answers a bad option value with a usage error', async () => {
    const run = await runCli(['backup', '--keep', 'three']);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe(`Error: option '--keep <n>' argument 'three' is invalid. --keep must be a whole number, got "three"\nTry: Run "epetsync backup --help" for usage.\n`);
  });

  it('reports a missing config as JSON on stdout with --json', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'eps-cli-'));
    const run = await runCli(['--json', 'status'], { cwd: dir });
    expect(run.code).toBe(2);
    expect(run.stderr).toBe('');
    expect(JSON.parse(run.stdout)).toEqual({
      ok: false,
      command: 'epetsync status',
      error: {
        code: 'EPS_CONFIG_NOT_FOUND',
        message: `No config file found (looked for ${join(dir, 'config.json')}, ${join(dir, 'vet_desktop_app', 'config.json')})`,
        hint: 'Pass --config <path>, set EPETSYNC_CONFIG, or run epetsync from the folder that holds config.json.',
        details: { looked: [join(dir, 'config.json'), join(dir, 'vet_desktop_app', 'config.json')] },
      },
    });
  });

  it('reports an invalid config in two lines and never echoes the password', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'eps-cli-'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ database: { path: 'db.sqlite3' }, remote_database: { password: 'Sup3r-Secret', sync_interval: '30s' } }));
    const run = await runCli(['status'], { cwd: dir });
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(
      `Error: Invalid config ${join(dir, 'config.json')}: remote_database.sync_interval must be a whole number of seconds >= 5, got "30s"\n` +
        'Try: Correct the value in config.json (see docs/configuration.md) and run the command again.\n',
    );
  });
});
