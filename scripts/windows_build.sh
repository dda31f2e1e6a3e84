#!/usr/bin/env bash
# Build the Windows artifacts on Linux, under Wine: one command for developers and CI.
#
#   bash scripts/windows_build.sh
#
# 1. the toolchain (scripts/windows_env.sh: Wine, Windows CPython, pinned Windows wheels; cached in
#    ~/.cache/pospal-wine, so only the first run downloads);
# 2. the Windows bundle from build.spec with Windows PyInstaller: dist/windows/POSPalLicenseAgent/ with
#    POSPalLicenseAgent.exe (windowed) and pospal-agent.exe (console twin); size and biggest files;
# 3. optionally signs both executables (POSPAL_SIGN_CMD: a command that signs the file named last);
# 4. the 64-bit NSIS installer around it: dist/windows/POSPalLicenseAgent-Setup-VERSION.exe (the same
#    POSPAL_SIGN_CMD signs the uninstaller and the installer).
# Fails when the bundle exceeds 90 MB or the installer 35 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/windows_env.sh
source scripts/windows_env.sh
windows_toolchain

DIST=dist/windows
APP="$DIST/POSPalLicenseAgent"
version="$(pospal_version)"

echo "== building $APP from build.spec under Windows PyInstaller"
t0=$SECONDS
rm -rf "$APP"
# PyInstaller warns about every api-ms-win-crt-* import: those are Windows' own UCRT API sets.
winpy -m PyInstaller --noconfirm --log-level ERROR --distpath "$(winpath "$DIST")" \
  --workpath "$(winpath build/windows)" build.spec | grep -v "api-ms-win-crt" || true
for exe in POSPalLicenseAgent.exe pospal-agent.exe; do
  [ -f "$APP/$exe" ] || { echo "FAIL: $exe was not built" >&2; exit 1; }
done
echo "built in $(( SECONDS - t0 )) s"

bundle_bytes=$(du -sb "$APP" | cut -f1)
echo "== bundle: $(( bundle_bytes / 1048576 )) MiB ($bundle_bytes bytes); biggest files:"
find "$APP" -type f -printf '%s\t%P\n' | sort -rn | awk -F'\t' 'NR <= 12 {printf "%8.1f MB  %s\n", $1/1048576, $2}'
echo "windows-figure: bundle-bytes=$bundle_bytes"
[ "$bundle_bytes" -le $(( 90 * 1048576 )) ] || { echo "FAIL: the bundle is over 90 MB" >&2; exit 1; }

if [ -n "${POSPAL_SIGN_CMD:-}" ]; then
  for exe in POSPalLicenseAgent.exe pospal-agent.exe; do
    $POSPAL_SIGN_CMD "$APP/$exe"
  done
fi

echo "== installer"
out="$DIST/POSPalLicenseAgent-Setup-${POSPAL_INSTALLER_VERSION:-$version}.exe"
bash scripts/build_installer.sh "$APP" "$out"
setup_bytes=$(stat -c %s "$out")
echo "windows-figure: installer-bytes=$setup_bytes"
[ "$setup_bytes" -le $(( 35 * 1048576 )) ] || { echo "FAIL: the installer is over 35 MB" >&2; exit 1; }
