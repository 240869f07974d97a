"""Bring a database to the current schema with alembic, from code (the service does it at start)."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
#: Modules that define tables on ``Base``; alembic must see them all.
TABLE_MODULES = ("cds_service.storage.tables", "cds_service.audit")
#: Any constant: serialises concurrent upgrades (several workers starting at once) on PostgreSQL.
_PG_LOCK_KEY = 0x45434743  # "ECGC"


def import_table_modules() -> None:
    """Import every module that defines tables (a missing one is a packaging fault: raise)."""
    for name in TABLE_MODULES:
        importlib.import_module(name)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """``alembic upgrade head`` on ``engine``; safe to call from many processes at once."""
    config = alembic_config()
    with _sqlite_file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """SQLite takes its write lock lazily, so two first starts could both create the tables;
    an advisory file lock beside the database file serialises them."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    import fcntl

    lock_path = Path(database).with_name(Path(database).name + ".migrate-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(
        os.open(lock_path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600), "a"
    ) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
