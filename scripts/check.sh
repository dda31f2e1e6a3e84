#!/usr/bin/env bash
# The static checks CI runs (and pre-commit, file by file): ruff's lint and format, mypy for Linux, and
# mypy again for Windows over the code that runs there (agent, pospal_protocol, ui). Needs .venv (scripts/install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/mypy --platform win32 agent pospal_protocol ui
