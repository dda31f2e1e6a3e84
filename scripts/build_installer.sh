#!/usr/bin/env bash
# Compile installer/pospal-agent.nsi around a built bundle and print the installer's size.
# Usage: scripts/build_installer.sh [BUNDLE_DIR] [OUTFILE]
#   BUNDLE_DIR defaults to dist/POSPalLicenseAgent (build it with: pyinstaller build.spec).
#   The payload is the Windows bundle (scripts/windows_build.sh builds it under Wine); a Linux bundle
#   still compiles, as a stand-in whose size is measured.
# Environment: POSPAL_INSTALLER_VERSION overrides the version (the upgrade test builds a second one);
#   POSPAL_SIGN_CMD, a command that signs the file named as its last argument, signs the uninstaller as
#   it is written and the installer once compiled (makensis runs it on this machine);
#   POSPAL_INSTALLER_FAST=1 compresses with zlib (test installers only).
set -euo pipefail
cd "$(dirname "$0")/.."
bundle="$(cd "${1:-dist/POSPalLicenseAgent}" && pwd)"
version="${POSPAL_INSTALLER_VERSION:-}"
[ -n "$version" ] || version="$(sed -n 's/^__version__ *= *["'\'']\([^"'\'']*\)["'\''].*/\1/p' pospal_protocol/__init__.py)"
mkdir -p dist
out="${2:-dist/POSPalLicenseAgent-Setup-${version}.exe}"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
command -v makensis >/dev/null || { echo "makensis not found (apt-get install nsis / choco install nsis)" >&2; exit 1; }
sign=()
[ -n "${POSPAL_SIGN_CMD:-}" ] && sign=("-DSIGN=$POSPAL_SIGN_CMD")
# POSPAL_INSTALLER_FAST=1: zlib instead of solid LZMA, for test installers that are never shipped.
[ "${POSPAL_INSTALLER_FAST:-0}" = 1 ] && sign+=("-DFAST_COMPRESSION")
makensis -V2 -DVERSION="$version" -DBUNDLE_DIR="$bundle" -DOUTFILE="$out" "${sign[@]}" installer/pospal-agent.nsi
bytes=$(stat -c %s "$out" 2>/dev/null || wc -c <"$out")
echo "installer: $out  $bytes bytes ($(( (bytes + 524287) / 1048576 )) MiB)"
