"""``ecg-cds ingest``: folders of real records, duplicates, unreadable files, a DICOMweb PACS."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cds_service.cli import app
from cds_service.runtime import Runtime
from cds_service.settings import Settings, get_settings
from tests.servers import OrthancServer


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An embedded-mode service home in ``tmp_path`` (settings from the environment)."""
    monkeypatch.setenv("ECG_CDS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ECG_CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'ecg-cds.db'}")
    monkeypatch.setenv("ECG_CDS_JOBS__MODE", "embedded")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _summary(output: str) -> tuple[int, int, int]:
    match = re.search(r"(\d+) ECGs \((\d+) new, (\d+) already stored\)", output)
    assert match, output
    return int(match[1]), int(match[2]), int(match[3])


def test_ingest_a_folder_twice(env: Path, cinc_dir: Path) -> None:
    folder = cinc_dir / "cpsc2018_a0001_a0010"  # ten CinC records: .hea + .mat each
    runner = CliRunner()
    first = runner.invoke(app, ["ingest", str(folder), "--no-progress"])
    assert first.exit_code == 0, first.output
    assert _summary(first.output) == (10, 10, 0)
    assert "pending" not in first.output and "failed" not in first.output
    second = runner.invoke(app, ["ingest", str(folder), "--no-progress"])
    assert second.exit_code == 0, second.output
    assert _summary(second.output) == (10, 0, 10)

    runtime = Runtime.start(get_settings(), resume=False)
    try:
        stored = runtime.ecgs.list_ecgs(limit=100)
    finally:
        runtime.stop()
    assert len(stored) == 10
    assert all(result is not None for _, result in stored)
    assert {info.format for info, _ in stored} == {"wfdb"}


def test_backfill_classifies_what_was_left_pending(env: Path, ptbxl_records: list[Path]) -> None:
    folder = ptbxl_records[0].parent
    few = [str(p) for p in ptbxl_records[:5]]
    runner = CliRunner()
    stored = runner.invoke(app, ["ingest", *few, "--no-wait", "--no-progress"])
    assert stored.exit_code == 0, stored.output
    assert _summary(stored.output)[:2] == (5, 5)

    backfilled = runner.invoke(app, ["ingest", "--backfill", str(folder), "--no-progress"])
    assert backfilled.exit_code == 0, backfilled.output
    assert "backfill: 5 stored ECGs selected" in backfilled.output
    assert "pending" not in backfilled.output
    runtime = Runtime.start(get_settings(), resume=False)
    try:
        assert all(result is not None for _, result in runtime.ecgs.list_ecgs())
    finally:
        runtime.stop()

    nothing = runner.invoke(app, ["ingest", "--backfill", "--no-progress"])
    assert nothing.exit_code == 2 and "needs folders/files or --patient" in nothing.output


def test_unreadable_files_are_reported_and_fail_the_run(env: Path, formats_dir: Path) -> None:
    notes = env / "inbox"
    notes.mkdir()
    (notes / "scan.bin").write_bytes(b"\x00\x01 not an ECG at all")
    good = formats_dir / "philips_xml" / "129DYPRG.XML"
    result = CliRunner().invoke(app, ["ingest", str(notes), str(good), "--no-progress"])
    assert result.exit_code == 1
    assert "unreadable:" in result.output and "scan.bin" in result.output
    assert _summary(result.output) == (1, 1, 0)


@pytest.mark.integration
def test_dicomweb_poll_picks_up_new_ecgs_once(
    env: Path, orthanc: OrthancServer, formats_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicomweb_client.api import DICOMwebClient
    from pydicom import dcmread

    dicom = formats_dir / "dicom" / "pydicom_waveform_ecg.dcm"
    pacs = DICOMwebClient(url=orthanc.dicomweb_url)
    pacs.store_instances([dcmread(dicom)])
    # The PACS is shared by the test session: other tests may have stored ECGs in it too.
    held = {
        instance["00080018"]["Value"][0]
        for series in pacs.search_for_series(search_filters={"Modality": "ECG"})
        for instance in pacs.search_for_instances(
            study_instance_uid=series["0020000D"]["Value"][0],
            series_instance_uid=series["0020000E"]["Value"][0],
        )
    }
    assert dcmread(dicom).SOPInstanceUID in held
    runner = CliRunner()

    refused = runner.invoke(app, ["ingest", "--dicomweb", orthanc.dicomweb_url, "--no-progress"])
    assert refused.exit_code == 2 and "allowed_dicomweb" in refused.output

    monkeypatch.setenv("ECG_CDS_FHIR__ALLOWED_DICOMWEB", f'["{orthanc.dicomweb_url}"]')
    get_settings.cache_clear()
    first = runner.invoke(app, ["ingest", "--dicomweb", orthanc.dicomweb_url, "--no-progress"])
    assert first.exit_code == 0, first.output
    assert _summary(first.output)[:2] == (len(held), len(held))
    second = runner.invoke(app, ["ingest", "--dicomweb", orthanc.dicomweb_url, "--no-progress"])
    assert second.exit_code == 0, second.output
    assert _summary(second.output)[:2] == (0, 0)

    runtime = Runtime.start(Settings(), resume=False)
    try:
        stored = runtime.ecgs.list_ecgs()
        state = runtime.state.get("dicomweb-poll:" + orthanc.dicomweb_url)
    finally:
        runtime.stop()
    assert len(stored) == len(held)
    for info, result in stored:
        assert info.format == "dicom" and result is not None
        assert info.source_uri is not None and info.source_uri.startswith(orthanc.dicomweb_url)
    assert any(dcmread(dicom).SOPInstanceUID in (info.source_uri or "") for info, _ in stored)
    assert state is not None and "last_run" in state


def test_storing_waits_for_classification_to_keep_up(
    env: Path, cinc_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most MAX_AHEAD stored ECGs await classification when a group is read; every ECG
    is still classified, each once."""
    from cds_service.commands import ingest as ingest_module

    monkeypatch.setattr(ingest_module, "MAX_AHEAD", 2)
    monkeypatch.setattr(ingest_module, "_FIRST_GROUP", 1)
    monkeypatch.setattr(ingest_module, "_LARGEST_GROUP", 2)
    pending_at_group: list[int] = []
    make_room = ingest_module._Ahead.make_room

    def spy(self: ingest_module._Ahead) -> None:
        make_room(self)
        pending_at_group.append(len(self._pending))

    monkeypatch.setattr(ingest_module._Ahead, "make_room", spy)
    folder = cinc_dir / "cpsc2018_a0001_a0010"
    result = CliRunner().invoke(app, ["ingest", str(folder), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert _summary(result.output) == (10, 10, 0)
    assert "pending" not in result.output and "failed" not in result.output
    assert len(pending_at_group) == 6 and max(pending_at_group) <= 2  # groups 1, 2, 2, 2, 2, 1

    runtime = Runtime.start(get_settings(), resume=False)
    try:
        stored = runtime.ecgs.list_ecgs(limit=100)
    finally:
        runtime.stop()
    assert len(stored) == 10 and all(result is not None for _, result in stored)


def test_a_stalled_classification_does_not_stall_storing(monkeypatch: pytest.MonkeyPatch) -> None:
    from cds_service.commands import ingest as ingest_module

    class Jobs:
        calls = 0

        def wait_finished(self, ids: list[str], timeout_s: float) -> dict[str, bool]:
            self.calls += 1
            return {}  # nothing ever finishes

    class FakeRuntime:
        jobs = Jobs()

    ahead = ingest_module._Ahead(FakeRuntime(), 2)  # type: ignore[arg-type]
    ahead.submitted(["a", "b", "c", "d"])
    ahead.make_room()  # gives up after one fruitless wait
    ahead.submitted(["e"])
    ahead.make_room()
    assert FakeRuntime.jobs.calls == 1


def test_ingest_runs_two_job_threads_at_least() -> None:
    from cds_service.commands.ingest import INGEST_JOB_THREADS, ingest_settings

    assert ingest_settings(Settings()).jobs.embedded_threads == INGEST_JOB_THREADS == 2
    more = Settings(jobs={"embedded_threads": 4})  # type: ignore[arg-type]
    assert ingest_settings(more).jobs.embedded_threads == 4
    assert ingest_settings(more).data_dir == more.data_dir
