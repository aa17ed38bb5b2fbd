<#
.SYNOPSIS
  Repairs the Vet Portal database sync (replaces fix_db_sync.bat): runs "epetsync fix --json",
  prints each step, writes a log, and returns epetsync's exit code.

.DESCRIPTION
  All the logic lives in the epetsync binary (docs/diagnose.md); this script only finds it,
  runs it, shows the result and keeps a log. Exit codes are epetsync's: 0 repaired or healthy,
  1 problems found, 2 config, 3 server unreachable, 4 login, 5 local database, 6 server protocol,
  7 another epetsync is running; 9009 when Node.js or epetsync cannot be found.

.PARAMETER Config
  config.json of the desktop app (default: epetsync's own lookup, e.g. .\config.json).

.PARAMETER Yes
  Allow restoring a corrupt database from the newest good backup without asking.

.PARAMETER LogFile
  Where to append this run's log (default: logs\fix-db-sync.log beside this script).

.PARAMETER InstallScheduledTask
  Register "epetsync monitor" to run at logon of the current user through Task Scheduler, then exit.

.PARAMETER UninstallScheduledTask
  Remove that scheduled task, then exit.

.EXAMPLE
  powershell -ExecutionPolicy Bypass -File fix-db-sync.ps1 -Config C:\epetcare\config.json -Yes
.EXAMPLE
  powershell -ExecutionPolicy Bypass -File fix-db-sync.ps1 -Config C:\epetcare\config.json -InstallScheduledTask
#>
[CmdletBinding()]
param(
  [string]$Config,
  [switch]$Yes,
  [string]$LogFile = (Join-Path $PSScriptRoot 'logs\fix-db-sync.log'),
  [switch]$InstallScheduledTask,
  [switch]$UninstallScheduledTask
)

$ErrorActionPreference = 'Stop'
$TaskName = 'epetsync monitor'

function Write-Log([string]$Text) {
  $dir = Split-Path -Parent $LogFile
  if ($dir -and -not (Test-Path $dir)) { New-Item -ItemType Directory -Path $dir -Force | Out-Null }
  Add-Content -Path $LogFile -Value ("{0} {1}" -f (Get-Date).ToUniversalTime().ToString('o'), $Text)
  Write-Host $Text
}

# Find epetsync: on PATH (npm install -g), else the launcher of this checkout run with node.
$node = Get-Command node -ErrorAction SilentlyContinue
if (-not $node) {
  Write-Log 'Error: Node.js was not found. Install Node.js 20 or newer from https://nodejs.org and run this again.'
  exit 9009
}
$epetsync = Get-Command epetsync -ErrorAction SilentlyContinue
$launcher = Join-Path (Split-Path -Parent $PSScriptRoot) 'bin\epetsync.js'
if ($epetsync) { $exe = $epetsync.Source; $prefix = @() }
elseif (Test-Path $launcher) { $exe = $node.Source; $prefix = @($launcher) }
else {
  Write-Log 'Error: epetsync was not found. Install it with "npm install -g epetsync" (or run npm ci in its folder).'
  exit 9009
}
$configArgs = @()
if ($Config) { $configArgs = @('--config', $Config) }

if ($InstallScheduledTask -or $UninstallScheduledTask) {
  if ($UninstallScheduledTask) {
    if (Get-ScheduledTask -TaskName $TaskName -ErrorAction SilentlyContinue) {
      Unregister-ScheduledTask -TaskName $TaskName -Confirm:$false
      Write-Log "Removed the scheduled task '$TaskName'."
    } else { Write-Log "No scheduled task '$TaskName' to remove." }
    exit 0
  }
  # epetsync monitor keeps itself to one instance (its lock), so a second logon does no harm.
  $argList = (@($prefix) + $configArgs + @('monitor') | ForEach-Object { '"' + $_ + '"' }) -join ' '
  $action = New-ScheduledTaskAction -Execute $exe -Argument $argList
  $trigger = New-ScheduledTaskTrigger -AtLogOn -User $env:USERNAME
  $settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries -ExecutionTimeLimit ([TimeSpan]::Zero) -RestartCount 3 -RestartInterval (New-TimeSpan -Minutes 1)
  Register-ScheduledTask -TaskName $TaskName -Action $action -Trigger $trigger -Settings $settings -Description 'Keeps the Vet Portal database in step with the web app (epetsync monitor).' -Force | Out-Null
  Write-Log "Registered the scheduled task '$TaskName': $exe $argList (at logon of $env:USERNAME)."
  exit 0
}

$fixArgs = @($prefix) + $configArgs + @('fix', '--json')
if ($Yes) { $fixArgs += '--yes' }
Write-Log ("Running: epetsync {0}" -f (($configArgs + @('fix', '--json') + $(if ($Yes) { @('--yes') } else { @() })) -join ' '))
# Windows PowerShell turns a native command's stderr into errors; with Stop they would end the script.
$ErrorActionPreference = 'Continue'
$output = & $exe @fixArgs 2>>$LogFile
$code = $LASTEXITCODE
$ErrorActionPreference = 'Stop'
Add-Content -Path $LogFile -Value ($output -join [Environment]::NewLine)

try { $doc = ($output -join "`n") | ConvertFrom-Json } catch { $doc = $null }
if ($doc -and $doc.result -and $doc.result.steps) {
  foreach ($s in $doc.result.steps) {
    $mark = switch ($s.status) { 'failed' { 'X' } 'skipped' { '-' } default { 'OK' } }
    Write-Log ("{0,-3} {1,-9} {2}" -f $mark, $s.step, $s.detail)
    if ($s.remedy) { Write-Log ("    -> {0}" -f $s.remedy) }
  }
  if ($doc.result.failed) { Write-Log ("Stopped at {0}: {1}" -f $doc.result.failed.step, $doc.result.failed.remedy) }
} elseif ($doc -and $doc.error) {
  Write-Log ("Error: {0}" -f $doc.error.message)
  if ($doc.error.hint) { Write-Log ("Try: {0}" -f $doc.error.hint) }
} else {
  Write-Log 'epetsync did not print a result; see the log file.'
}
Write-Log "Finished with exit code $code (log: $LogFile)."
exit $code
