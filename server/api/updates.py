"""`GET /updates/...`: the signed-update repository (`server/updates.py`) served as static files.

Mounted only when `POSPAL_UPDATE_REPO_DIR` names the repository directory (the publisher's `--repo`);
any static host serves the same files as well. Nothing here needs trust: every file is verified by the
agent against the TUF root in its build, so the server only hands out bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

ENV = "POSPAL_UPDATE_REPO_DIR"
PREFIX = "/updates"


def install(app: FastAPI, directory: str | None = None) -> bool:
    """Mount the repository at /updates when one is configured; True when mounted."""
    directory = directory if directory is not None else os.environ.get(ENV)
    if not directory:
        return False
    Path(directory).mkdir(parents=True, exist_ok=True)
    app.mount(PREFIX, StaticFiles(directory=directory, check_dir=False), name="updates")
    return True
