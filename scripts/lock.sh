#!/usr/bin/env bash
# Re-resolve the dependencies after a pyproject.toml change: uv.lock (all platforms) and its export with
# hashes, requirements.lock, which scripts/install.sh installs, and requirements-server.lock, the same
# pins for the server alone (no dev tools, no Qt: what the Dockerfile installs). Upgrades happen only here.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=(uv)
command -v uv >/dev/null 2>&1 || uv=(.venv/bin/python -m uv)
"${uv[@]}" lock "$@"
"${uv[@]}" export --frozen --extra dev --no-emit-project --format requirements-txt --no-header -q -o requirements.lock
"${uv[@]}" export --frozen --no-emit-project --no-emit-package pyside6-essentials --no-emit-package shiboken6 \
  --format requirements-txt --no-header -q -o requirements-server.lock
