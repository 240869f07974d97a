"""The ``annotate_report`` job around FHIR write-back: outages are retried, then recorded.

(The write-back resources and a successful round trip are tested with the FHIR server in
tests/audit/test_writeback.py.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cds_service.runtime import Runtime
from cds_service.settings import Settings
from cds_service.storage.tables import JobRow
from tests.servers import free_port


def test_an_unreachable_fhir_server_is_retried_then_the_job_fails(
    tmp_path: Path, classifier: Any, ptbxl_records: list[Path]
) -> None:
    server = f"http://127.0.0.1:{free_port()}/fhir"  # nothing listens there
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'ecg-cds.db'}",
        fhir={"writeback_server": server, "allowed_servers": [server], "timeout_s": 2.0},
        jobs={"max_retries": 1},
    )
    runtime = Runtime.start(settings, classifier=classifier)
    try:
        with_patient = runtime.ecgs.accept_path(ptbxl_records[9], patient_ref="Patient/p1")
        without = runtime.ecgs.accept_path(ptbxl_records[10])
        for info in (with_patient, without):
            runtime.jobs.submit(info.id)
        assert all(runtime.jobs.wait([with_patient.id, without.id], 120).values())
        deadline = time.monotonic() + 60  # first retry after a 2 s backoff
        state = None
        while time.monotonic() < deadline:
            state = runtime.jobs.job_state("annotate", with_patient.id, runtime.model_version)
            if state == "failed":
                break
            time.sleep(0.1)
        with runtime.session_factory() as session:
            jobs = session.scalars(sa.select(JobRow).where(JobRow.kind == "annotate")).all()
        entries = runtime.audit.query().entries
        status = runtime.ecgs.get_info(with_patient.id).status  # type: ignore[union-attr]
    finally:
        runtime.stop()
    assert state == "failed"
    [job] = jobs  # the ECG without a patient is not written back at all
    assert job.ecg_id == with_patient.id and job.attempts == 2
    assert job.error is not None and "unreachable" in job.error
    # the classification itself is untouched by the write-back outage
    assert status in ("done", "rejected")
    assert sum(e.event == "writeback" and e.outcome == "error" for e in entries) == 2
