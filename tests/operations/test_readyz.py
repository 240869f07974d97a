"""``/readyz`` against real servers the test starts on its own ports and then stops."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url

from cds_service.app import create_app
from cds_service.settings import JobSettings, Settings
from tests.operations.conftest import clean_env
from tests.operations.private_servers import (  # noqa: F401 - fixtures
    PrivatePostgres,
    PrivateRedis,
    private_postgres,
    private_redis,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _ready_within(client: TestClient, timeout_s: float) -> dict[str, Any]:
    """Poll until ready (a bound against hanging, not a speed check); the last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get("/readyz")
        body: dict[str, Any] = response.json()
        if response.status_code == 200 or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def test_liveness_and_readiness_embedded_sqlite(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path))) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        body = _ready_within(client, 180)
        assert body["status"] == "ready", body
        assert set(body["checks"]) == {"database", "model"}


def test_readiness_polls_while_the_model_loads_start_one_warm_up(tmp_path: Path) -> None:
    """Without preload_model the probe starts the model's load. It started a new warm-up
    thread on every poll until the model was there: a caller without credentials polling
    /readyz had a thread each, all running the whole warm-up (seen: dozens, load average
    60, a test sweep slowed tenfold)."""
    with TestClient(create_app(Settings(data_dir=tmp_path, preload_model=False))) as client:
        loading_polls, most_warming = 0, 0
        deadline = time.monotonic() + 180  # a bound against hanging, not a speed check
        while not client.get("/readyz").json()["checks"]["model"]["ok"]:
            loading_polls += 1
            warming = sum(1 for t in threading.enumerate() if t.name == "model-warm-up")
            most_warming = max(most_warming, warming)
            assert time.monotonic() < deadline
        assert loading_polls >= 2  # polled while loading (a load takes seconds)
        assert most_warming == 1
        assert _ready_within(client, 180)["status"] == "ready"


def test_unready_when_the_database_stops(
    tmp_path: Path,
    private_postgres: PrivatePostgres,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The probe answers anyone who can reach it: it says which dependency fails, and the
    operator's log says where (host, port, user), the answer does not."""
    settings = Settings(data_dir=tmp_path, database_url=private_postgres.url)
    with TestClient(create_app(settings)) as client:
        assert _ready_within(client, 180)["status"] == "ready"
        private_postgres.stop()
        with caplog.at_level(logging.WARNING, logger="cds_service.probes"):
            response = client.get("/readyz")
        assert response.status_code == 503
        check = response.json()["checks"]["database"]
        assert check["ok"] is False and "cannot open the database" in check["detail"]
        port = str(make_url(private_postgres.url).port)
        for where in ("127.0.0.1", port, "postgres@"):
            assert where not in response.text
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert "cannot open the database" in logged and "127.0.0.1" in logged and port in logged
        assert client.get("/healthz").status_code == 200  # alive, just not ready


@pytest.fixture
def worker(tmp_path: Path, private_redis: PrivateRedis) -> Iterator[subprocess.Popen[bytes]]:  # noqa: F811
    env = clean_env(
        tmp_path,
        ECG_CDS_JOBS__MODE="distributed",
        ECG_CDS_JOBS__BROKER_URL=private_redis.url,
        ECG_CDS_DATABASE_URL=f"sqlite:///{tmp_path / 'shared.db'}",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "cds_service.cli", "worker", "--pool", "solo", "--loglevel",
         "warning", "--hostname", f"readyz-{tmp_path.name}@localhost"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_distributed_unready_without_workers_and_when_the_broker_stops(
    tmp_path: Path,
    private_redis: PrivateRedis,  # noqa: F811
    worker: subprocess.Popen[bytes],
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'shared.db'}",
        jobs=JobSettings(mode="distributed", broker_url=private_redis.url),
    )
    with TestClient(create_app(settings)) as client:
        body = _ready_within(client, 180)  # the worker answers once it has started
        assert body["status"] == "ready", body
        assert set(body["checks"]) == {"database", "model", "broker", "workers"}

        worker.terminate()
        worker.wait(timeout=20)
        body = client.get("/readyz").json()
        assert body["status"] == "unready"
        assert body["checks"]["broker"]["ok"] is True
        assert "no worker answered" in body["checks"]["workers"]["detail"]

        private_redis.stop()
        response = client.get("/readyz")
        assert response.status_code == 503
        broker = response.json()["checks"]["broker"]
        assert broker["ok"] is False and "cannot reach the broker" in broker["detail"]
        assert str(make_url(private_redis.url).port) not in response.text
