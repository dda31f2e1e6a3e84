# Sign one file with signtool (Authenticode, SHA-256, RFC 3161 timestamp).
#
#   powershell -NoProfile -ExecutionPolicy Bypass -File installer\sign.ps1 <file>
#
# Reads the certificate from SIGNING_CERT_PATH (a .pfx) and SIGNING_CERT_PASSWORD. Used by the
# Windows build workflow for the bundle's executable, and by makensis (-DSIGN=...) for the
# uninstaller and the installer while it compiles them. Unsigned PyInstaller executables are
# flagged by antivirus engines, and SmartScreen warns about them: release builds must be signed.
param([Parameter(Mandatory = $true)][string]$File)
$ErrorActionPreference = "Stop"
if (-not $env:SIGNING_CERT_PATH) { throw "SIGNING_CERT_PATH is not set" }
$signtool = Get-ChildItem "${env:ProgramFiles(x86)}\Windows Kits\10\bin\*\x64\signtool.exe" |
  Sort-Object FullName -Descending | Select-Object -First 1
if (-not $signtool) { throw "signtool.exe not found (Windows SDK)" }
$timestamp = if ($env:SIGNING_TIMESTAMP_URL) { $env:SIGNING_TIMESTAMP_URL } else { "http://timestamp.digicert.com" }
& $signtool.FullName sign /fd SHA256 /td SHA256 /tr $timestamp /d "POSPal License Agent" `
  /f $env:SIGNING_CERT_PATH /p $env:SIGNING_CERT_PASSWORD $File
if ($LASTEXITCODE -ne 0) { throw "signtool sign failed for $File" }
& $signtool.FullName verify /pa $File
if ($LASTEXITCODE -ne 0) { throw "signature does not verify: $File" }
