"""Alembic: one chain; after `upgrade head` the models and the live schema agree, on both databases."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.script import ScriptDirectory

from server.db import Database, alembic_config, current_revision, head_revision, schema_diff, upgrade


def test_upgrade_head_then_compare_metadata_finds_no_difference(db_url):
    db = Database(db_url, pool_size=1)
    try:
        assert current_revision(db) == head_revision()
        assert schema_diff(db) == []
    finally:
        db.dispose()


def test_downgrade_to_base_and_up_again(db_url):
    db = Database(db_url, pool_size=1)
    try:
        config = alembic_config(db_url)
        with db.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert current_revision(db) is None
        upgrade(db)
        assert schema_diff(db) == []
    finally:
        db.dispose()


def test_one_linear_chain():
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1
    assert len(script.get_bases()) == 1


def test_app_refuses_an_unmigrated_database(tmp_path):
    from server.app import create_app
    from server.config import Settings
    from server.errors import ConfigError

    settings = Settings.from_env({"POSPAL_SERVER_DATA_DIR": str(tmp_path), "POSPAL_OUTBOX_WORKER": "0"})
    with pytest.raises(ConfigError, match="pospal-server migrate"):
        create_app(settings)
