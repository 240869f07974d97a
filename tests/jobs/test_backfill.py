"""Backfills fan out: disjoint chunks, bounded in flight, each ECG classified and audited once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cds_service.jobs import work
from cds_service.runtime import Runtime
from cds_service.settings import Settings


class _Recorder:
    """Stands in for the dispatcher: keeps what would be queued, runs nothing."""

    in_process = True

    def __init__(self) -> None:
        self.queued: list[tuple[str, dict[str, Any]]] = []

    def enqueue(self, task: str, *args: Any, bulk: bool = False, **kwargs: Any) -> None:
        self.queued.append((task, {"bulk": bulk, **kwargs}))

    def shutdown(self) -> None:
        pass


@pytest.fixture
def runtime(database_url: str, tmp_path: Path, classifier: Any) -> Iterator[Runtime]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        jobs={"backfill_chunk_size": 3, "backfill_in_flight": 2},
    )
    rt = Runtime.start(settings, classifier=classifier, resume=False)
    yield rt
    rt.stop()


def test_chunks_are_disjoint_bounded_and_cover_the_selection(
    runtime: Runtime, ptbxl_records: list[Path]
) -> None:
    ids = sorted(runtime.ecgs.accept_path(p, patient_ref="Patient/7").id for p in ptbxl_records[:8])
    runtime.ecgs.accept_path(ptbxl_records[8], patient_ref="Patient/other")  # not selected
    recorder = _Recorder()
    runtime.dispatcher = recorder
    run = work.backfill(runtime, patient_ref="Patient/7")
    assert run is not None
    # Two chunks in flight at once (backfill_in_flight), each of three ids, all bulk.
    assert [q[1]["ids"] for q in recorder.queued] == [ids[:3], ids[3:6]]
    assert all(task == "backfill" and q["bulk"] and q["run"] == run for task, q in recorder.queued)
    # Each finished chunk claims the next one: never one already claimed.
    claimed = [*recorder.queued[0][1]["ids"], *recorder.queued[1][1]["ids"]]
    while chunk := runtime.backfills.claim(run):
        assert not set(chunk) & set(claimed)
        claimed.extend(chunk)
    assert sorted(claimed) == ids
    state = runtime.backfills.get(run)
    assert state is not None and state["finished"] and state["claimed"] == len(claimed)


def test_a_backfill_classifies_and_audits_each_ecg_once(
    runtime: Runtime, ptbxl_records: list[Path]
) -> None:
    paths = ptbxl_records[:7]
    ids = [runtime.ecgs.accept_path(p).id for p in paths]
    work.classify_ecgs(runtime, ids[:2])  # some already done: skipped, not classified again
    recorder = _Recorder()
    runtime.dispatcher = recorder
    run = work.backfill(runtime, source_prefix=paths[0].parent.as_uri() + "/")
    assert run is not None
    while recorder.queued:  # run the queued chunks as a worker would, in any order
        task, kwargs = recorder.queued.pop()
        assert task == "backfill"
        kwargs.pop("bulk")
        work.backfill(runtime, **kwargs)
        if kwargs["ids"] == sorted(ids)[:3]:  # redelivered after a worker was killed
            work.backfill(runtime, **kwargs)
    results = runtime.jobs.results(ids)
    assert set(results) == set(ids)
    entries = [e for e in runtime.audit.query(limit=1000).entries if e.event == "classification"]
    assert sorted(e.ecg_id for e in entries) == sorted(ids)  # one entry each, none twice
    assert all(e.model_version == runtime.model_version for e in entries)
    assert runtime.audit.verify().ok
