"""Distributed mode: real ``ecg-cds worker`` processes, Redis on loopback, PostgreSQL storage.

The kill test is the point of ``acks_late`` + ``reject_on_worker_lost``: a worker killed
mid-task (SIGKILL, no chance to clean up) leaves the task unacknowledged; another worker gets
it (Redis: after the visibility timeout; RabbitMQ: as soon as the dead connection closes)
and finishes it, and the result is stored once. Both brokers run every test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapters import load_ecg
from cds_service.runtime import Runtime
from cds_service.settings import Settings
from cds_service.storage.tables import JobRow, ResultRow
from tests.conftest import service_unavailable
from tests.jobs.conftest import create_pg_database, drop_pg_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAIT_S = 120.0
READY_TIMEOUT_S = 90.0
VISIBILITY_TIMEOUT_S = 4
RABBITMQ_URL = os.environ.get("ECG_CDS_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


@dataclass
class Deployment:
    """One distributed set-up: a database, a broker queue, and the env workers get."""

    env: dict[str, str]
    settings: Settings
    logs: Path


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Both brokers the deployment guide names, on loopback."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    from kombu import Connection

    try:
        with Connection(RABBITMQ_URL, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        service_unavailable(f"RabbitMQ is not reachable at {RABBITMQ_URL}: {exc}")
    return RABBITMQ_URL


@pytest.fixture
def deployment(tmp_path: Path, broker_url: str) -> Iterator[Deployment]:
    db_url = create_pg_database()
    queue = f"ecg-cds-test-{uuid.uuid4().hex[:8]}"
    values = {
        "ECG_CDS_JOBS__MODE": "distributed",
        "ECG_CDS_JOBS__BROKER_URL": broker_url,
        "ECG_CDS_JOBS__QUEUE": queue,
        "ECG_CDS_JOBS__VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
        "ECG_CDS_DATABASE_URL": db_url,
        "ECG_CDS_DATA_DIR": str(tmp_path),
    }
    model_dir = Settings().model_dir  # workers must load the model the test process loads
    if model_dir is not None:
        values["ECG_CDS_MODEL_DIR"] = str(model_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_CDS_")}
    env.update(values)
    settings = Settings(
        data_dir=tmp_path,
        database_url=db_url,
        jobs={
            "mode": "distributed",
            "broker_url": broker_url,
            "queue": queue,
            "visibility_timeout_s": VISIBILITY_TIMEOUT_S,
        },
    )
    try:
        yield Deployment(env=env, settings=settings, logs=tmp_path)
    finally:
        from kombu import Connection

        with Connection(broker_url, connect_timeout=3) as connection:
            connection.default_channel.queue_delete(queue)
        drop_pg_database(db_url)


class Worker:
    """An ``ecg-cds worker`` subprocess in its own process group (so it can be killed whole)."""

    def __init__(self, deployment: Deployment, name: str, **extra_env: str) -> None:
        self.log = deployment.logs / f"{name}.log"
        env = {**deployment.env, **extra_env}
        command = [
            sys.executable, "-m", "cds_service.cli", "worker",
            "--concurrency", "1", "--loglevel", "info",
            # Unique per test process: a worker left by an aborted run (or another checkout's
            # run on the same broker) holds its node name's pidbox queue exclusively.
            "--hostname", f"{name}-{os.getpid()}@%h",
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"worker exited ({self.process.returncode}):\n{self.output()}")
            if "ready." in self.output():
                return
            time.sleep(0.2)
        pytest.fail(f"worker not ready after {READY_TIMEOUT_S} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes: no shutdown, no acknowledgement."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def web(deployment: Deployment, classifier: Any) -> Iterator[Runtime]:
    """The service side: stores ECGs and submits jobs to the broker."""
    runtime = Runtime.start(deployment.settings, classifier=classifier)
    yield runtime
    runtime.stop()


def _count(runtime: Runtime, table: Any, ecg_id: str) -> int:
    with runtime.session_factory() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count()).select_from(table).where(table.ecg_id == ecg_id)
            )
            or 0
        )


def test_workers_classify_what_the_service_submits(
    deployment: Deployment, web: Runtime, ptbxl_records: list[Path], classifier: Any
) -> None:
    worker = Worker(deployment, "w1")
    try:
        worker.wait_ready()
        infos = [web.ecgs.accept_path(p) for p in ptbxl_records[:3]]
        for info in infos:
            web.jobs.submit(info.id)
        results = web.jobs.wait([i.id for i in infos], timeout_s=WAIT_S)
        assert all(r is not None for r in results.values()), worker.output()[-3000:]
        for path, info in zip(ptbxl_records[:3], infos, strict=True):
            stored = results[info.id]
            assert stored is not None and stored.model_version == classifier.model_version
            [direct] = classifier.classify([load_ecg(path)])
            assert stored.result.scores[0].label_id == direct.scores[0].label_id

        # backfill: a folder's history, classified in chunks of two by the worker
        rest = [web.ecgs.accept_path(p) for p in ptbxl_records[3:8]]
        prefix = ptbxl_records[0].parent.resolve().as_uri() + "/"
        web.dispatcher.enqueue("backfill", source_prefix=prefix, chunk_size=2)
        backfilled = web.jobs.wait([i.id for i in rest], timeout_s=WAIT_S)
        assert all(r is not None for r in backfilled.values()), worker.output()[-3000:]
        for info in infos + rest:
            assert _count(web, ResultRow, info.id) == 1
    finally:
        worker.stop()


def test_a_worker_killed_mid_task_leaves_the_task_to_another(
    deployment: Deployment, web: Runtime, ptbxl_records: list[Path]
) -> None:
    # The first worker dawdles before classifying, so the kill lands inside the task.
    doomed = Worker(deployment, "doomed", ECG_CDS_JOBS__DEBUG_TASK_DELAY_S="30")
    try:
        doomed.wait_ready()
        info = web.ecgs.accept_path(ptbxl_records[8])
        web.jobs.submit(info.id)
        deadline = time.monotonic() + WAIT_S
        while _running_attempts(web, info.id) < 1:
            assert time.monotonic() < deadline, doomed.output()[-3000:]
            time.sleep(0.05)
        doomed.kill()
    finally:
        doomed.stop()
    assert web.jobs.result(info.id) is None  # it died before storing anything

    rescuer = Worker(deployment, "rescuer")
    try:
        rescuer.wait_ready()
        stored = web.jobs.wait([info.id], timeout_s=WAIT_S)[info.id]
        assert stored is not None, rescuer.output()[-3000:]
    finally:
        rescuer.stop()
    assert _count(web, ResultRow, info.id) == 1
    with web.session_factory() as session:
        job = session.scalar(
            sa.select(JobRow).where(JobRow.ecg_id == info.id, JobRow.state == "done")
        )
    assert job is not None
    assert job.attempts == 2  # started by the killed worker, finished by the rescuer


def _running_attempts(runtime: Runtime, ecg_id: str) -> int:
    """Attempts started on this ECG, whatever model version the worker loaded (the shipped
    weights may be replaced while the test runs; the job row is keyed by the worker's)."""
    with runtime.session_factory() as session:
        return int(
            session.scalar(
                sa.select(sa.func.coalesce(sa.func.sum(JobRow.attempts), 0)).where(
                    JobRow.ecg_id == ecg_id
                )
            )
            or 0
        )
