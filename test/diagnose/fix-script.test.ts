/**
 * scripts/fix-db-sync.ps1 cannot run here (no PowerShell): this checks that it stays a thin
 * wrapper over the binary — it runs `fix --json`, passes --yes and --config through, registers and
 * removes `epetsync monitor` as a logon task, returns epetsync's exit code — and that its braces
 * and parentheses balance, which a PowerShell parse would also demand.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const text = readFileSync(new URL('../../scripts/fix-db-sync.ps1', import.meta.url), 'utf8');
const code = text.replace(/<#[\s\S]*?#>/g, '').split('\n').filter((l) => !l.trim().startsWith('#')).join('\n');

describe('fix-db-sync.ps1', () => {
  it('runs epetsync fix --json and returns its exit code', () => {
    expect(code).toContain("@('fix', '--json')");
    expect(code).toMatch(/if \(\$Yes\) \{ \$fixArgs \+= '--yes' \}/);
    expect(code).toMatch(/\$code = \$LASTEXITCODE/);
    expect(code.trimEnd().endsWith('exit $code')).toBe(true);
    expect(code).toContain('ConvertFrom-Json');
    expect(code).toContain('Add-Content -Path $LogFile');
  });

  it('checks that Node.js and epetsync are there before anything else', () => {
    expect(code.indexOf('Get-Command node')).toBeLessThan(code.indexOf('Register-ScheduledTask'));
    expect(code).toContain('Get-Command epetsync');
    expect(code).toMatch(/exit 9009/);
  });

  it('has both scheduled-task switches: register epetsync monitor at logon, and remove it', () => {
    expect(text).toMatch(/\[switch\]\$InstallScheduledTask/);
    expect(text).toMatch(/\[switch\]\$UninstallScheduledTask/);
    expect(code).toContain("@('monitor')");
    expect(code).toContain('New-ScheduledTaskTrigger -AtLogOn');
    expect(code).toContain('Register-ScheduledTask -TaskName $TaskName');
    expect(code).toContain('Unregister-ScheduledTask -TaskName $TaskName');
  });

  it('keeps brackets balanced and holds no sync logic of its own', () => {
    const stripped = code.replace(/'[^'\n]*'/g, "''").replace(/"(?:[^"\n`]|`.)*"/g, '""');
    for (const [open, close] of [['{', '}'], ['(', ')'], ['[', ']']] as const) {
      expect(stripped.split(open).length, `${open}${close}`).toBe(stripped.split(close).length);
    }
    expect(code).not.toMatch(/sqlite|Invoke-RestMethod|Invoke-WebRequest|api\/database/i);
  });
});
