#!/usr/bin/env bash
# Authenticode-sign one Windows file in place with osslsigncode (SHA-256).
#
#   scripts/windows_sign.sh FILE
#
# Key and certificate: POSPAL_SIGN_KEY and POSPAL_SIGN_CERT (PEM files; CI makes a throwaway
# self-signed pair), or POSPAL_SIGN_PKCS11_MODULE + POSPAL_SIGN_PKCS11_KEY (a PKCS#11 URI, e.g. a cloud
# HSM's token) with POSPAL_SIGN_CERT. POSPAL_SIGN_TIMESTAMP_URL adds an RFC 3161 timestamp (releases).
# makensis calls it (-DSIGN) for the uninstaller and the installer; scripts/windows_build.sh for both exes.
set -euo pipefail
file="$1"
args=(sign -h sha256 -n "POSPal License Agent" -i "https://pospal.gr")
if [ -n "${POSPAL_SIGN_PKCS11_MODULE:-}" ]; then
  args+=(-pkcs11module "$POSPAL_SIGN_PKCS11_MODULE" -key "$POSPAL_SIGN_PKCS11_KEY" -certs "$POSPAL_SIGN_CERT")
else
  args+=(-key "$POSPAL_SIGN_KEY" -certs "$POSPAL_SIGN_CERT")
fi
[ -n "${POSPAL_SIGN_TIMESTAMP_URL:-}" ] && args+=(-ts "$POSPAL_SIGN_TIMESTAMP_URL")
osslsigncode "${args[@]}" -in "$file" -out "$file.signed" >/dev/null
mv -f "$file.signed" "$file"
