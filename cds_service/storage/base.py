"""The declarative base every table registers on, and engine/session construction.

One ``Base.metadata`` holds all tables (ECGs, results, jobs, cards, feedback, audit), so
alembic sees the whole schema. SQLite is the embedded default; PostgreSQL in production.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

log = logging.getLogger(__name__)


class Base(DeclarativeBase):
    pass


def normalise_url(url: str) -> str:
    """``postgresql://`` (and ``postgres://``) mean psycopg 3, the driver this project installs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


#: The database holds patient data: owner only. SQLite gives its -wal, -shm and journal
#: files the database file's permissions, so creating that file 0600 covers them all.
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def private_directory(folder: Path) -> None:
    """Create ``folder`` (and missing parents) 0700. An existing folder is the operator's
    choice (it may be a shared mount or the working directory): only warned about."""
    if not folder.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
        os.chmod(folder, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask
    elif stat.S_IMODE(folder.stat().st_mode) & 0o077:
        log.warning(
            "data folder %s is readable by others (mode %o); it holds patient data: chmod 700 it",
            folder,
            stat.S_IMODE(folder.stat().st_mode),
        )


def private_sqlite_file(database: str) -> None:
    """Create the SQLite file (and its folder) owner-only before SQLite does it 0644, and
    tighten a database, WAL, SHM or journal file an older version left world-readable."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    private_directory(path.parent)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, PRIVATE_FILE_MODE)
    os.close(fd)
    for suffix in ("", "-wal", "-shm", "-journal"):
        candidate = path.with_name(path.name + suffix)
        try:
            if stat.S_IMODE(candidate.stat().st_mode) & 0o077:
                os.chmod(candidate, PRIVATE_FILE_MODE)
        except FileNotFoundError:
            continue


def json_dumps(value: Any) -> str:
    """JSON columns' serializer: orjson (a result row took ~0.6 ms with the standard
    library's encoder, ~0.03 ms with orjson), the standard library for what orjson refuses
    (numpy scalars, other types the standard encoder knows). NaN and infinities are written
    as null: they are not JSON (PostgreSQL refuses them, SQLite's JSON functions cannot read
    a row holding them)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


def json_loads(data: str | bytes) -> Any:
    """JSON columns' deserializer: orjson, the standard library for text orjson refuses
    (a NaN an older version wrote to SQLite)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL and foreign keys so concurrent readers don't block
    and a database file only its owner can read. JSON columns go through orjson."""
    url = normalise_url(url)
    kwargs.setdefault("json_serializer", json_dumps)
    kwargs.setdefault("json_deserializer", json_loads)
    # A failed statement's error names no bound values: they hold clinicians' comments and
    # patient ids, and the error goes to the log.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        private_sqlite_file(make_url(url).database or "")
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL keeps every commit across a crash of the process (the
            # embedded service's realistic failure); only an OS crash or power loss can
            # roll back the last commits. It makes a commit ~0.1 ms instead of a disk sync,
            # which lets the hook path write its audit entries before answering.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
