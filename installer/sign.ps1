# Sign one file through Azure Artifact Signing (formerly Trusted Signing): the key stays in Microsoft's
# HSM; this machine only sends the file's digest. Authenticode, SHA-256, RFC 3161 timestamp.
#
#   powershell -NoProfile -ExecutionPolicy Bypass -File installer\sign.ps1 <file>
#
# Settings (the Windows build workflow sets them from repository secrets and variables):
#   AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET  a service principal with the
#                                                          "Artifact Signing Certificate Profile Signer" role
#   SIGNING_ENDPOINT          e.g. https://weu.codesigning.azure.net/
#   SIGNING_ACCOUNT           the signing account's name
#   SIGNING_PROFILE           the certificate profile's name
# Used for both executables, and by makensis (-DSIGN=...) for the uninstaller as it is written and the
# installer once compiled. Unsigned PyInstaller executables are flagged by antivirus engines, and
# SmartScreen warns about them: release builds must be signed. (On Linux, scripts/windows_sign.sh signs
# with osslsigncode through a PKCS#11 HSM token, or CI's throwaway certificate.)
param([Parameter(Mandatory = $true)][string]$File)
$ErrorActionPreference = "Stop"
foreach ($name in "SIGNING_ENDPOINT", "SIGNING_ACCOUNT", "SIGNING_PROFILE") {
  if (-not [Environment]::GetEnvironmentVariable($name)) { throw "$name is not set" }
}
if (-not (Get-Module -ListAvailable -Name TrustedSigning)) {
  Install-Module -Name TrustedSigning -MinimumVersion 0.5.0 -Force -Scope CurrentUser -Repository PSGallery
}
$File = (Resolve-Path $File).Path
Invoke-TrustedSigning -Endpoint $env:SIGNING_ENDPOINT -CodeSigningAccountName $env:SIGNING_ACCOUNT `
  -CertificateProfileName $env:SIGNING_PROFILE -Files $File -FileDigest SHA256 `
  -TimestampRfc3161 "http://timestamp.acs.microsoft.com" -TimestampDigest SHA256 `
  -Description "POSPal License Agent"
$signature = Get-AuthenticodeSignature $File
if ($signature.Status -ne "Valid") { throw "signature does not verify: $File ($($signature.Status))" }
