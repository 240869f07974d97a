"""Embedded mode (the default): jobs run in the service process, no broker, SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from adapters import load_ecg
from cds_service.jobs import work
from cds_service.runtime import Runtime
from cds_service.settings import Settings
from cds_service.storage.records import StoredResult
from cds_service.storage.tables import EcgBlobRow, JobRow, ResultRow

WAIT_S = 120.0  # generous: the shared test machine may be busy; wait() returns as soon as done


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'ecg-cds.db'}")


@pytest.fixture
def runtime(tmp_path: Path, classifier: Any) -> Iterator[Runtime]:
    rt = Runtime.start(_settings(tmp_path), classifier=classifier)
    yield rt
    rt.stop()


def _result_rows(runtime: Runtime, ecg_id: str) -> int:
    with runtime.session_factory() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count()).select_from(ResultRow).where(ResultRow.ecg_id == ecg_id)
            )
            or 0
        )


def test_submitted_ecgs_are_classified_in_process(
    runtime: Runtime, ptbxl_records: list[Path], classifier: Any
) -> None:
    infos = [runtime.ecgs.accept_path(p) for p in ptbxl_records[:4]]
    for info in infos:
        runtime.jobs.submit(info.id)
    results = runtime.jobs.wait([i.id for i in infos], timeout_s=WAIT_S)
    assert all(r is not None for r in results.values())
    for path, info in zip(ptbxl_records[:4], infos, strict=True):
        stored = results[info.id]
        assert stored is not None and stored.model_version == classifier.model_version
        # the job re-read the stored bytes: same answer as classifying the file directly
        [direct] = classifier.classify([load_ecg(path)])
        assert [s.label_id for s in stored.result.scores] == [s.label_id for s in direct.scores]
        assert stored.result.scores[0].probability == pytest.approx(
            direct.scores[0].probability, abs=1e-5
        )
        status = runtime.ecgs.get_info(info.id).status  # type: ignore[union-attr]
        assert status == ("done" if direct.quality.acceptable else "rejected")


def test_the_same_ecg_and_model_never_produce_two_results(
    runtime: Runtime, ptbxl_records: list[Path]
) -> None:
    info = runtime.ecgs.accept_path(ptbxl_records[4])
    for _ in range(3):
        runtime.jobs.submit(info.id)
    assert runtime.jobs.wait([info.id], timeout_s=WAIT_S)[info.id] is not None
    runtime.jobs.submit(info.id)  # already classified: nothing queued
    assert work.classify_ecgs(runtime, [info.id]) == {info.id: "exists"}  # a redelivery
    assert _result_rows(runtime, info.id) == 1


def test_a_waiting_call_gets_the_stored_result_as_read_back_from_its_row(
    runtime: Runtime, ptbxl_records: list[Path]
) -> None:
    """The job hands its just-stored result to the waiter (no read + decode of the row):
    it must be exactly what decoding the committed row gives, and the row must exist."""
    info = runtime.ecgs.accept_path(ptbxl_records[5])
    runtime.jobs.submit(info.id)
    handed = runtime.jobs.wait([info.id], timeout_s=WAIT_S)[info.id]
    assert handed is not None
    with runtime.session_factory() as session:
        row = session.scalars(sa.select(ResultRow).where(ResultRow.ecg_id == info.id)).one()
        decoded = StoredResult.from_row(row)
    assert handed == decoded
    assert orjson.dumps(handed.result.to_dict()) == orjson.dumps(decoded.result.to_dict())
    assert runtime.jobs.result(info.id) == decoded  # the next call reads the same


def test_a_just_stored_ecg_is_queued_once_however_its_submits_race(
    runtime: Runtime, ptbxl_records: list[Path]
) -> None:
    """``submit_new`` (a hook call's own new ECG) writes the job row only; a concurrent plain
    submit of the same ECG (another call that found it by hash) queues nothing more."""
    info = runtime.ecgs.accept_path(ptbxl_records[6])
    assert info.created
    runtime.jobs.submit_new(info.id)
    runtime.jobs.submit(info.id)  # live job: nothing queued
    runtime.jobs.submit_new(info.id)  # the job row exists: nothing queued
    assert runtime.jobs.wait([info.id], timeout_s=WAIT_S)[info.id] is not None
    with runtime.session_factory() as session:
        jobs = session.scalars(sa.select(JobRow).where(JobRow.ecg_id == info.id)).all()
    assert [(j.kind, j.state) for j in jobs] == [("classify", "done")]
    assert _result_rows(runtime, info.id) == 1


def test_failed_classification_is_kept_and_can_be_retried(
    runtime: Runtime, ptbxl_records: list[Path]
) -> None:
    info = runtime.ecgs.accept_path(ptbxl_records[5])
    with runtime.session_factory.begin() as session:  # the stored bytes get damaged
        blob = session.get(EcgBlobRow, info.id)
        assert blob is not None
        original, blob.data = blob.data, b"PK\x03\x04 damaged"
    # The job must read the stored bytes (as a worker in another process does), not the
    # waveform this process parsed when it stored them.
    assert runtime.ecgs.take_accepted(info.id) is not None
    runtime.jobs.submit(info.id)
    assert runtime.jobs.wait([info.id], timeout_s=WAIT_S) == {info.id: None}
    failed = runtime.ecgs.get_info(info.id)
    assert failed is not None and failed.status == "failed"
    assert failed.error and "could not be re-read" in failed.error
    entries = runtime.audit.query().entries
    assert any(e.event == "classification" and e.outcome == "error" for e in entries)

    with runtime.session_factory.begin() as session:  # repaired (e.g. restored from backup)
        session.get(EcgBlobRow, info.id).data = original  # type: ignore[union-attr]
    runtime.jobs.submit(info.id)  # the retry
    assert runtime.jobs.wait([info.id], timeout_s=WAIT_S)[info.id] is not None
    retried = runtime.ecgs.get_info(info.id)
    assert retried is not None and retried.status in ("done", "rejected") and retried.error is None
    assert _result_rows(runtime, info.id) == 1


def test_pending_ecgs_are_resumed_after_a_restart(
    tmp_path: Path, classifier: Any, ptbxl_records: list[Path]
) -> None:
    first = Runtime.start(_settings(tmp_path), classifier=classifier, resume=False)
    info = first.ecgs.accept_path(ptbxl_records[6])
    first.stop()  # stopped before anything classified it
    second = Runtime.start(_settings(tmp_path), classifier=classifier)
    try:
        assert second.jobs.wait([info.id], timeout_s=WAIT_S)[info.id] is not None
    finally:
        second.stop()


def test_ingest_and_classification_are_audited(runtime: Runtime, ptbxl_records: list[Path]) -> None:
    info = runtime.ecgs.accept_path(ptbxl_records[7], patient_ref="Patient/42")
    runtime.ecgs.accept_path(ptbxl_records[7])  # a duplicate
    runtime.jobs.submit(info.id)
    runtime.jobs.wait([info.id], timeout_s=WAIT_S)
    entries = [e for e in runtime.audit.query().entries if e.ecg_id == info.id]
    ingests = [e for e in entries if e.event == "ingest"]
    assert sorted(e.detail["duplicate"] for e in ingests) == [False, True]
    classified = [e for e in entries if e.event == "classification"]
    assert len(classified) == 1 and classified[0].patient == "42"
    assert classified[0].model_version == runtime.model_version
    assert runtime.audit.verify().ok
