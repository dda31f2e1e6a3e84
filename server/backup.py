"""`pospal-server backup DIR` and `restore DIR`: the database and the signing key directory, together.

A backup is a new directory, mode 0700:

    manifest.json     what it holds: the database kind, its schema revision, the key files
    database.sqlite3  SQLite: a consistent copy made with SQLite's online backup API (the server may run)
    database.pgdump   PostgreSQL: `pg_dump --format=custom` of POSPAL_DATABASE_URL's database
    keys/             the files of POSPAL_SIGNING_KEY_DIR (private keys, server-secret), mode 0600

Both halves are needed: the database lists the keys' public halves and the licenses, the key directory
holds the private keys that sign tokens agents already trust. Restoring only the database would make the
server sign with a new key that no agent trusts.

`restore DIR` puts both back, with the servers stopped:
- SQLite: the backup is copied (online backup API) to a temporary file beside POSPAL_DATABASE_URL's file,
  which replaces it in one rename; a database already there is kept as `<name>.pre-restore-N`, with its
  WAL files, so a restore never destroys data;
- PostgreSQL: `pg_restore --clean --if-exists --no-owner --single-transaction` into the configured
  database (it may be empty, or the one being replaced);
- the key files are written (atomically, 0600) into POSPAL_SIGNING_KEY_DIR; other files there are kept.

After a restore, `pospal-server migrate` brings an older backup to this code's schema.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from server.config import Settings
from server.db import Database, current_revision
from server.errors import Error

MANIFEST = "manifest.json"
SQLITE_FILE = "database.sqlite3"
PG_FILE = "database.pgdump"
KEYS = "keys"
FORMAT = 1


class BackupError(Error):
    """A backup or restore could not be made; the message says why and what to do."""


@dataclass(frozen=True)
class Manifest:
    """What a backup directory holds."""

    database: str  # "sqlite" or "postgresql"
    revision: str | None
    key_files: list[str]


def libpq_target(database_url: str) -> tuple[str, dict[str, str]]:
    """The SQLAlchemy URL as pg_dump/pg_restore take it (no `+psycopg`), and its password as PGPASSWORD.

    The password goes in the environment, not on the command line other users can list.
    """
    url = make_url(database_url)
    extra = {"PGPASSWORD": url.password} if url.password else {}
    return url.set(drivername="postgresql", password=None).render_as_string(hide_password=False), extra


def backup(settings: Settings, target: Path) -> Manifest:
    """Write a backup of the database and the key directory to the new directory `target`."""
    if target.exists():
        raise BackupError(f"{target} exists; choose a new directory")
    if settings.is_sqlite and (settings.sqlite_path is None or not settings.sqlite_path.exists()):
        raise BackupError(f"no SQLite database at {settings.sqlite_path}")
    db = Database(settings.database_url, pool_size=1)
    try:
        revision = current_revision(db)
    finally:
        db.dispose()
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700, parents=True)
    try:
        if settings.is_sqlite:
            assert settings.sqlite_path is not None
            _sqlite_copy(settings.sqlite_path, tmp / SQLITE_FILE, read_only=True)
            kind = "sqlite"
        else:
            _run(["pg_dump", "--format=custom", "--file", str(tmp / PG_FILE)], settings.database_url)
            kind = "postgresql"
        names = _copy_keys(settings.signing_key_dir, tmp / KEYS)
        manifest = Manifest(kind, revision, names)
        _write_private(
            tmp / MANIFEST,
            json.dumps(
                {"format": FORMAT, "database": kind, "revision": revision, "key_files": names}, indent=2
            ).encode(),
        )
        os.replace(tmp, target)  # a half-made backup never carries the final name
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def read_manifest(source: Path) -> Manifest:
    """The manifest of backup directory `source` (BackupError if it is not one)."""
    try:
        data = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source} is not a pospal-server backup ({MANIFEST}: {exc})") from exc
    if data.get("format") != FORMAT or data.get("database") not in ("sqlite", "postgresql"):
        raise BackupError(f"{source}/{MANIFEST} is of an unknown format")
    return Manifest(data["database"], data.get("revision"), list(data.get("key_files", [])))


def restore(settings: Settings, source: Path) -> Manifest:
    """Put backup `source` back: the database at POSPAL_DATABASE_URL and the key files (servers stopped)."""
    manifest = read_manifest(source)
    wanted = "sqlite" if settings.is_sqlite else "postgresql"
    if manifest.database != wanted:
        raise BackupError(
            f"{source} holds a {manifest.database} database but POSPAL_DATABASE_URL is {wanted}: "
            "restore into the same kind of database"
        )
    missing = [n for n in manifest.key_files if not (source / KEYS / n).is_file()]
    if missing:
        raise BackupError(f"{source} lacks key files {', '.join(missing)}: the backup is incomplete")
    if settings.is_sqlite:
        assert settings.sqlite_path is not None
        _restore_sqlite(source / SQLITE_FILE, settings.sqlite_path)
    else:
        _run(
            [
                "pg_restore",
                "--clean",
                "--if-exists",
                "--no-owner",
                "--single-transaction",
                "--exit-on-error",
                str(source / PG_FILE),
                "--dbname",
            ],
            settings.database_url,
        )
    key_dir = settings.signing_key_dir
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(key_dir, 0o700)
    for name in manifest.key_files:
        _write_private(key_dir / name, (source / KEYS / name).read_bytes())
    return manifest


# -------------------------------------------------------------------------------------------- helpers


def _sqlite_copy(source: Path, target: Path, *, read_only: bool) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro" if read_only else str(source), uri=read_only)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    finally:
        dst.close()
        src.close()
    os.chmod(target, 0o600)


def _restore_sqlite(backup_file: Path, target: Path) -> None:
    if not backup_file.is_file():
        raise BackupError(f"{backup_file} is missing: the backup is incomplete")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.restoring")
    tmp.unlink(missing_ok=True)
    _sqlite_copy(backup_file, tmp, read_only=True)
    _fsync(tmp)
    if target.exists():
        n = 1
        while target.with_name(f"{target.name}.pre-restore-{n}").exists():
            n += 1
        aside = target.with_name(f"{target.name}.pre-restore-{n}")
        os.replace(target, aside)
        for suffix in ("-wal", "-shm"):
            # A WAL file left beside the restored file would be replayed into it: it goes with the old file.
            wal = target.with_name(target.name + suffix)
            if wal.exists():
                os.replace(wal, aside.with_name(aside.name + suffix))
    os.replace(tmp, target)


def _copy_keys(key_dir: Path, target: Path) -> list[str]:
    target.mkdir(mode=0o700)
    if not key_dir.is_dir():
        raise BackupError(
            f"no signing key directory at {key_dir}: POSPAL_SIGNING_KEY_DIR must be backed up too"
        )
    names = sorted(p.name for p in key_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    for name in names:
        _write_private(target / name, (key_dir / name).read_bytes())
    return names


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, mode 0600 from the start."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _run(argv: list[str], database_url: str) -> None:
    """Run pg_dump/pg_restore with the database last; a failure is a BackupError naming the tool."""
    url, extra = libpq_target(database_url)
    try:
        result = subprocess.run(
            [*argv, url],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
            env={**os.environ, **extra},
        )
    except FileNotFoundError as exc:
        raise BackupError(f"{argv[0]} is not installed: install the PostgreSQL client tools") from exc
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()][-3:]
        raise BackupError(f"{argv[0]} failed ({result.returncode}): {' / '.join(lines)}")
