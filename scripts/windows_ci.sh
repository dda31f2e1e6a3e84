#!/usr/bin/env bash
# CI's Windows step, under Wine (called by .ci/run inside xvfb-run; a developer can run it too):
#  1. a throwaway self-signed code-signing certificate (osslsigncode signs; nothing is trusted by it);
#  2. scripts/windows_build.sh: the Windows bundle from build.spec and the 64-bit installer, with both
#     exes, the uninstaller and the installer signed, each signature checked by `osslsigncode verify`;
#  3. a second installer (next patch version) for the upgrade test, and a real build two patch versions on,
#     published in a throwaway TUF repository whose root the first build ships (the signed update);
#  4. scripts/windows_smoke.sh: install (the service POSPalAgent), boot, trial/status, kill, stop/start,
#     upgrade, uninstall, uninstall with data removal, then the service applying the signed update while a
#     POS asks every 10 ms;
#  5. the tests marked `windows`, under Windows Python.
# Any failure fails the step. The figures (bundle and installer size, first answer, time) end the output.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
# shellcheck source=scripts/windows_env.sh
source scripts/windows_env.sh
windows_apt  # first: this script itself uses ip (the NIC below), wineserver and osslsigncode
t_start=$SECONDS
KEYS="$(mktemp -d)"
NIC=""
cleanup() {
  wineserver -k 2>/dev/null || true
  [ -n "$NIC" ] && ip link del "$NIC" 2>/dev/null || true
  rm -rf "$KEYS"
}
trap cleanup EXIT
# Wine's device services cache the network adapters: start from a stopped prefix.
wineserver -k 2>/dev/null || true
# A run that failed midway leaves the service installed in this cached prefix: services.exe would start
# it (and the agent version it staged) with the next Wine call, before the build. Remove the leftover
# program and its launcher install first; the smoke test then installs over the registration.
rm -rf "$WINEPREFIX/drive_c/Program Files/POSPal License Agent" "$WINEPREFIX/drive_c/ProgramData/POSPal"

# A till has a wired NIC with its vendor's MAC; a CI container often has only a locally administered
# one, which the fingerprint rightly ignores, leaving Wine with 2 of the 3 components a trial needs.
# Give Wine a NIC with a fixed vendor-style MAC for this step (removed at the end, before the Linux tests).
if ! "$LINUX_PY" - <<'PYEOF'
import pathlib, sys
macs = [p.read_text().strip() for p in pathlib.Path("/sys/class/net").glob("*/address")]
sys.exit(0 if any(m != "00:00:00:00:00:00" and not int(m[:2], 16) & 0x03 for m in macs) else 1)
PYEOF
then
  NIC=pospalwine0
  ip link del "$NIC" 2>/dev/null || true
  ip link add "$NIC" type veth peer name "${NIC}p"
  ip link set "$NIC" address 00:16:3e:50:50:01
  ip link set "$NIC" up
  echo "added $NIC (00:16:3e:50:50:01) for Wine's fingerprint"
fi

echo "== signing: a throwaway self-signed certificate"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=POSPal CI throwaway signing" \
  -addext "extendedKeyUsage=codeSigning" -keyout "$KEYS/key.pem" -out "$KEYS/cert.pem" 2>/dev/null
export POSPAL_SIGN_KEY="$KEYS/key.pem" POSPAL_SIGN_CERT="$KEYS/cert.pem"
export POSPAL_SIGN_CMD="bash $ROOT/scripts/windows_sign.sh"

echo "== a throwaway Linux server; the test bundle trusts its key (an operator's build ships theirs)"
windows_server_prepare "$KEYS/server"
export POSPAL_BUILD_TRUSTED_KEYS="$KEYS/server/trusted.json" POSPAL_SMOKE_SERVER_DIR="$KEYS/server"

echo "== a throwaway signed-update repository (TUF); the test bundle ships its root (an operator's, theirs)"
UPDATES="$KEYS/updates"
"$LINUX_PY" scripts/publish_update.py init --repo "$UPDATES/repo" --offline-keys "$UPDATES/offline" \
  --online-keys "$UPDATES/online" >/dev/null
"$LINUX_PY" scripts/publish_update.py root --repo "$UPDATES/repo" --out "$UPDATES/update-root.json" >/dev/null
export POSPAL_BUILD_UPDATE_ROOT="$UPDATES/update-root.json"

t0=$SECONDS
bash scripts/windows_build.sh
echo "windows-figure: build-s=$(( SECONDS - t0 ))"
version="$(pospal_version)"
SETUP1="dist/windows/POSPalLicenseAgent-Setup-$version.exe"
next="$(echo "$version" | awk -F. '{printf "%d.%d.%d", $1, $2, $3 + 1}')"
SETUP2="dist/windows/upgrade/POSPalLicenseAgent-Setup-$next.exe"
mkdir -p dist/windows/upgrade
POSPAL_INSTALLER_VERSION="$next" POSPAL_INSTALLER_FAST=1 bash scripts/build_installer.sh dist/windows/POSPalLicenseAgent "$SETUP2"

# The next version as a real build, for the signed update the service applies (windows_smoke.sh step 9):
# this tree with its version raised, built by the same spec, zipped as the repository ships a build, and
# published for windows.
upd="$(echo "$version" | awk -F. '{printf "%d.%d.%d", $1, $2, $3 + 2}')"
t0=$SECONDS
src="$KEYS/src-$upd"
mkdir -p "$src"
tar -c agent pospal_protocol ui clients/python/pospal_client packaging build.spec | tar -x -C "$src"
sed -i "s/^__version__ = \".*\"/__version__ = \"$upd\"/" "$src/pospal_protocol/__init__.py"
winpy -m PyInstaller --noconfirm --log-level ERROR --distpath "$(winpath "$KEYS/dist-$upd")" \
  --workpath "$(winpath "$KEYS/build-$upd")" "$(winpath "$src/build.spec")" | grep -v "api-ms-win-crt" || true
[ -f "$KEYS/dist-$upd/POSPalLicenseAgent/pospal-agent.exe" ] || { echo "FAIL: the $upd build has no pospal-agent.exe" >&2; exit 1; }
$POSPAL_SIGN_CMD "$KEYS/dist-$upd/POSPalLicenseAgent/pospal-agent.exe"
(cd "$KEYS/dist-$upd/POSPalLicenseAgent" && "$LINUX_PY" -m zipfile -c "$KEYS/pospal-agent-$upd-windows.zip" .)
"$LINUX_PY" scripts/publish_update.py add --repo "$UPDATES/repo" --keys "$UPDATES/offline" --keys "$UPDATES/online" \
  --build "$KEYS/pospal-agent-$upd-windows.zip" --version "$upd" --platform windows >/dev/null
echo "windows-figure: update-build-s=$(( SECONDS - t0 )) update-zip-bytes=$(stat -c %s "$KEYS/pospal-agent-$upd-windows.zip")"
export POSPAL_SMOKE_UPDATE_REPO="$UPDATES/repo" POSPAL_SMOKE_UPDATE_VERSION="$upd"

verify() { osslsigncode verify -CAfile "$POSPAL_SIGN_CERT" -in "$1" >/dev/null || { echo "FAIL: signature of $1" >&2; exit 1; }; }
for f in dist/windows/POSPalLicenseAgent/POSPalLicenseAgent.exe dist/windows/POSPalLicenseAgent/pospal-agent.exe \
         "$SETUP1" "$SETUP2"; do
  verify "$f"
done
echo "ok: signatures verify (both exes, both installers; the uninstaller after install)"

echo "== install, run, upgrade, uninstall"
t0=$SECONDS
POSPAL_VERIFY_CA="$POSPAL_SIGN_CERT" bash scripts/windows_smoke.sh "$SETUP1" "$SETUP2"
echo "windows-figure: smoke-s=$(( SECONDS - t0 ))"

echo "== tests marked windows, under Windows Python"
t0=$SECONDS
mapfile -t files < <(grep -rl --include='test_*.py' 'mark\.windows' tests | sort)
[ ${#files[@]} -gt 0 ] || { echo "FAIL: no test is marked windows" >&2; exit 1; }
winpy -m pytest -m windows -q -p no:cacheprovider "${files[@]}"
echo "windows-figure: tests-s=$(( SECONDS - t0 ))"
echo "windows-figure: total-s=$(( SECONDS - t_start ))"
