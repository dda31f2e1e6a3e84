#!/usr/bin/env bash
# Re-resolve the dependencies after a pyproject.toml change: uv.lock (all platforms) and its export with
# hashes, requirements.lock, which scripts/install.sh installs. Upgrades happen only here, on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=(uv)
command -v uv >/dev/null 2>&1 || uv=(.venv/bin/python -m uv)
"${uv[@]}" lock "$@"
"${uv[@]}" export --frozen --extra dev --no-emit-project --format requirements-txt --no-header -q -o requirements.lock
