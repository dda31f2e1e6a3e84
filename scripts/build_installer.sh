#!/usr/bin/env bash
# Compile installer/pospal-agent.nsi around a built bundle and print the installer's size.
# Usage: scripts/build_installer.sh [BUNDLE_DIR] [OUTFILE]
#   BUNDLE_DIR defaults to dist/POSPalLicenseAgent (build it with: pyinstaller build.spec).
#   On Linux the Linux bundle is a stand-in payload: the script compiles and its size is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle="$(cd "${1:-dist/POSPalLicenseAgent}" && pwd)"
version="$(sed -n 's/^__version__ *= *["'\'']\([^"'\'']*\)["'\''].*/\1/p' agent/__init__.py)"
mkdir -p dist
out="${2:-dist/POSPalLicenseAgent-Setup-${version}.exe}"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
command -v makensis >/dev/null || { echo "makensis not found (apt-get install nsis / choco install nsis)" >&2; exit 1; }
makensis -V2 -DVERSION="$version" -DBUNDLE_DIR="$bundle" -DOUTFILE="$out" installer/pospal-agent.nsi
bytes=$(stat -c %s "$out" 2>/dev/null || wc -c <"$out")
echo "installer: $out  $bytes bytes ($(( (bytes + 524287) / 1048576 )) MiB, LZMA solid)"
