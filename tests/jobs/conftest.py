"""Fixtures for the jobs/storage tests: databases (SQLite and PostgreSQL), Redis, the model.

PostgreSQL and Redis run on loopback on the project's machines; each test run gets its own
PostgreSQL database (created and dropped here) and its own Redis database number and queue
name, so concurrent runs never collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import service_unavailable

#: Server on loopback; override for other set-ups (``CI`` provides its own service).
PG_ADMIN_URL = os.environ.get(
    "ECG_CDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("ECG_CDS_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def _pg_admin() -> Any:
    import psycopg

    url = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        service_unavailable(f"PostgreSQL is not reachable at {url}: {exc}")
        raise  # unreachable


def create_pg_database() -> str:
    """A fresh, empty database on the loopback server; returns its SQLAlchemy URL."""
    name = f"ecgcds_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind the service supports."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ecg-cds.db'}"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database number of its own for this test session (flushed before use)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL + "/0", socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable(f"Redis is not reachable at {REDIS_URL}: {exc}")
    # Databases 10-15 for tests; pick one by process id so parallel sessions differ.
    url = f"{REDIS_URL}/{10 + os.getpid() % 6}"
    return url


@pytest.fixture(scope="session")
def classifier() -> Any:
    """The model the service would load (``ECG_CDS_MODEL_DIR``, else the shipped weights)."""
    from cds_service.settings import Settings
    from models.classifier import ZeroShotClassifier

    return ZeroShotClassifier.from_pretrained(Settings().model_dir)


@pytest.fixture(scope="session")
def ptbxl_records(ptbxl_dir: Path) -> list[Path]:
    """Twelve PTB-XL headers (100 Hz, 10 s, 12 leads): small, real, quick to classify."""
    headers = sorted((ptbxl_dir / "records100" / "00000").glob("*_lr.hea"))[:12]
    assert len(headers) == 12
    return headers
