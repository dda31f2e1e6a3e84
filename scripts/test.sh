#!/usr/bin/env bash
# Create .venv if needed, install the locked dependencies (hashes checked) and the project, run every test.
# Under CI=true a test that skips for a missing service or tool fails (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest "$@"
