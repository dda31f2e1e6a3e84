#!/usr/bin/env bash
# Create .venv if needed and install exactly the locked dependencies, every file checked against its hash,
# then the project itself (editable, no dependency resolution of its own). The lock is uv.lock;
# requirements.lock is its export with hashes (`bash scripts/lock.sh` makes both after a pyproject change).
# Used by .ci/run, scripts/test.sh and scripts/demo.sh, so all three run what was tested.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
UV_VERSION=0.13.9
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if [ "$(.venv/bin/python -m uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
stamp=".venv/.pospal-lock-$(cksum requirements.lock pyproject.toml | cksum | cut -d' ' -f1)"
if [ ! -e "$stamp" ]; then
  uv=(.venv/bin/python -m uv pip install -q --python .venv/bin/python)
  "${uv[@]}" --require-hashes -r requirements.lock
  "${uv[@]}" --no-deps -e .
  rm -f .venv/.pospal-lock-*
  touch "$stamp"
fi
