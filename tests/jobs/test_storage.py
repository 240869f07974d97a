"""Storage behaviour on SQLite and on PostgreSQL: schema, dedupe, idempotent results, feedback."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.orm import Session, sessionmaker

from adapters import EcgFormatError, load_ecg, sha256_hex
from cds_service.jobs.dispatch import EmbeddedDispatcher
from cds_service.settings import Settings
from cds_service.storage import bundle
from cds_service.storage.base import Base, make_engine, make_session_factory
from cds_service.storage.cards import CardStore
from cds_service.storage.ecgs import EcgStore
from cds_service.storage.incoming import HandOver, parse_incoming, read_incoming
from cds_service.storage.jobs import JobLedger
from cds_service.storage.migrate import import_table_modules, upgrade
from cds_service.storage.state import StateStore
from cds_service.storage.tables import JobRow, ResultRow
from models.results import ClassificationResult, LabelScore, Measurement, QualityReport

VERSION = "storage-test-model-1"


def _result(version: str = VERSION, acceptable: bool = True) -> ClassificationResult:
    """A result as the classifier shapes it (values are arbitrary: storage must keep them)."""
    return ClassificationResult(
        model_version=version,
        quality=QualityReport(acceptable=acceptable, reasons=() if acceptable else ("flat line",)),
        measurements={
            "heart_rate": Measurement("heart_rate", 61.5, "/min", "8867-4", "Heart rate"),
            "qtc": Measurement("qtc", None, "ms", "8636-3", "QTc (Bazett)"),
        },
        scores=(
            LabelScore("afib", "atrial fibrillation", 0.82, 0.31, "warning", calibrated=True),
            LabelScore("norm", "normal ECG", 0.05, 0.02, "normal"),
        ),
    )


@dataclass
class Stores:
    ecgs: EcgStore
    jobs: JobLedger
    cards: CardStore
    sessions: sessionmaker[Session]


@pytest.fixture
def pipeline(database_url: str, tmp_path: Path) -> Iterator[Stores]:
    engine = make_engine(database_url)
    upgrade(engine)
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    dispatcher = EmbeddedDispatcher(threads=1, max_retries=0)  # never started: no jobs run
    sessions = make_session_factory(engine)
    jobs = JobLedger(settings, sessions, dispatcher, lambda: VERSION)
    yield Stores(EcgStore(settings, sessions, jobs), jobs, CardStore(sessions), sessions)
    dispatcher.shutdown()
    engine.dispose()


def test_migrations_build_the_schema_the_code_declares(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    upgrade(engine)  # a second start finds the schema current and changes nothing
    import_table_modules()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert diff == []
    assert {"ecgs", "ecg_blobs", "results", "jobs", "cards", "feedback", "audit_events"} <= tables


def test_duplicate_upload_is_recognised_by_content_hash(
    pipeline: Stores, formats_dir: Path
) -> None:
    data = (formats_dir / "hl7_aecg" / "Example_aECG_HL7_2003-12.xml").read_bytes()
    first = pipeline.ecgs.accept_bytes(data, source_uri="upload-1.xml", patient_ref="Patient/p1")
    again = pipeline.ecgs.accept_bytes(data, source_uri="upload-2.xml")
    other = pipeline.ecgs.accept_bytes(
        (formats_dir / "philips_xml" / "129DYPRG.XML").read_bytes(), source_uri="philips.xml"
    )
    assert first.created and not again.created and other.created
    assert again.id == first.id and again.source_uri == "upload-1.xml"
    assert other.id != first.id
    assert first.format == "hl7-aecg" and first.n_leads == 12 and first.fs == 500.0
    assert first.status == "pending"
    assert [info.id for info, _ in pipeline.ecgs.list_ecgs(patient_ref="Patient/p1")] == [first.id]
    assert len(pipeline.ecgs.list_ecgs()) == 2
    # a duplicate never moves an ECG to another patient, but links one that had none
    assert pipeline.ecgs.accept_bytes(data, patient_ref="Patient/other").patient_ref == "Patient/p1"
    linked = pipeline.ecgs.accept_path(
        formats_dir / "philips_xml" / "129DYPRG.XML", patient_ref="Patient/p2"
    )
    assert linked.id == other.id and linked.patient_ref == "Patient/p2"
    assert pipeline.ecgs.get_info(other.id).patient_ref == "Patient/p2"  # type: ignore[union-attr]


def test_stored_bytes_reread_to_the_same_ecg(pipeline: Stores, formats_dir: Path) -> None:
    """Raw files and multi-file WFDB records both come back sample for sample."""
    header = formats_dir / "wfdb" / "s0010_re.hea"
    wfdb_info = pipeline.ecgs.accept_path(header)
    assert wfdb_info.format == "wfdb" and wfdb_info.n_leads == 15
    assert pipeline.ecgs.accept_path(header).id == wfdb_info.id  # the bundle hashes the same
    direct, stored = load_ecg(header), pipeline.ecgs.load_ecg(wfdb_info.id)
    assert stored.leads == direct.leads and stored.fs == direct.fs
    assert np.array_equal(stored.signal, direct.signal)

    muse = formats_dir / "ge_muse_xml" / "muse-sinus.xml"
    muse_info = pipeline.ecgs.accept_path(muse)
    assert np.array_equal(pipeline.ecgs.load_ecg(muse_info.id).signal, load_ecg(muse).signal)


def test_a_group_of_files_is_accepted_together(
    pipeline: Stores, formats_dir: Path, ptbxl_dir: Path, tmp_path: Path
) -> None:
    """One call for many files: each gets its info or its error, in order; the same file
    twice in a group, or stored before, is a duplicate; new ECGs come parsed to the job."""
    folder = tmp_path / "files"
    folder.mkdir()
    for part in (ptbxl_dir / "records500" / "00000").glob("00001_hr.*"):
        shutil.copy2(part, folder / part.name)
    (folder / "notes.ecg").write_bytes(b"this is not an ECG")
    header, muse = folder / "00001_hr.hea", formats_dir / "ge_muse_xml" / "muse-sinus.xml"
    philips = formats_dir / "philips_xml" / "129DYPRG.XML"
    before = pipeline.ecgs.accept_path(philips)
    assert pipeline.ecgs.take_accepted(before.id) is not None  # its job's read
    outcomes = pipeline.ecgs.accept_paths(
        [header, folder / "notes.ecg", muse, header, philips, folder / "gone.xml"],
        patient_ref="Patient/g1",
    )
    wfdb_info, junk, muse_info, again, known, missing = outcomes
    assert isinstance(junk, EcgFormatError) and isinstance(missing, OSError)
    assert not isinstance(wfdb_info, Exception) and wfdb_info.created
    assert not isinstance(muse_info, Exception) and muse_info.created
    assert not isinstance(again, Exception) and again.id == wfdb_info.id and not again.created
    assert not isinstance(known, Exception) and known.id == before.id and not known.created
    assert known.patient_ref == "Patient/g1"  # a duplicate links the patient it lacked
    assert wfdb_info.source_uri == header.resolve().as_uri() and wfdb_info.n_leads == 12
    # the same bundle (and SHA-256) as a file-by-file accept of the same record
    assert pipeline.ecgs.accept_path(header).id == wfdb_info.id
    assert len(pipeline.ecgs.list_ecgs()) == 3
    for info in (wfdb_info, muse_info):
        handed = pipeline.ecgs.take_accepted(info.id)
        assert handed is not None and pipeline.ecgs.take_accepted(info.id) is None  # once
        stored = pipeline.ecgs.load_ecg(info.id)
        assert handed.leads == stored.leads and handed.fs == stored.fs
        assert np.array_equal(handed.signal, stored.signal)
    assert pipeline.ecgs.take_accepted(before.id) is None  # a duplicate is not handed over


@pytest.mark.parametrize("level", [6, 1])
def test_a_bundle_packed_deflated_before_is_still_a_duplicate(
    pipeline: Stores, ptbxl_dir: Path, tmp_path: Path, level: int
) -> None:
    """Bundles stored before issue 11 were deflated at level 6, then at level 1; members are
    stored now: the same record hashes differently, and is recognised by its files (same
    source), by path and by upload."""
    for part in (ptbxl_dir / "records500" / "00000").glob("00003_hr.*"):
        shutil.copy2(part, tmp_path / part.name)
    header = tmp_path / "00003_hr.hea"
    files = bundle.wfdb_record_files(header)
    legacy = bundle.pack(files, level=level)
    assert legacy != bundle.pack(files)
    old = pipeline.ecgs._store(  # as the previous version stored it
        load_ecg(header), legacy, sha256_hex(legacy), "zip", header.resolve().as_uri(), None, None
    )
    again = pipeline.ecgs.accept_path(header, patient_ref="Patient/l1")
    assert again.id == old.id and not again.created and again.patient_ref == "Patient/l1"
    [grouped] = pipeline.ecgs.accept_paths([header])
    assert not isinstance(grouped, Exception) and grouped.id == old.id
    uploaded = pipeline.ecgs.accept_files(files, source_uri=header.resolve().as_uri())
    assert uploaded.id == old.id
    assert len(pipeline.ecgs.list_ecgs()) == 1
    (tmp_path / "00003_hr.dat").write_bytes(bytes(len(files["00003_hr.dat"])))  # changed
    assert pipeline.ecgs.accept_path(header).created  # other files from the same path: new


def test_the_hand_over_is_bounded_and_gives_each_ecg_once(formats_dir: Path) -> None:
    ecg = load_ecg(formats_dir / "ge_muse_xml" / "muse-sinus.xml")
    held = HandOver(max_bytes=int(ecg.signal.nbytes) * 4)
    for name in "abcde":
        held.put(name, ecg)
    assert held.take("a") is None  # the oldest made room for the fifth
    assert all(held.take(name) is ecg for name in "bcde")
    assert held.take("b") is None
    small = HandOver(max_bytes=int(ecg.signal.nbytes))
    small.put("big", ecg)  # over a quarter of the bound: not held
    assert small.take("big") is None


def test_nothing_is_held_for_jobs_that_run_in_other_processes(
    database_url: str, tmp_path: Path, formats_dir: Path
) -> None:
    from celery import Celery

    from cds_service.jobs.dispatch import CeleryDispatcher

    engine = make_engine(database_url)
    upgrade(engine)
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    sessions = make_session_factory(engine)
    jobs = JobLedger(settings, sessions, CeleryDispatcher(Celery("unused"), "q"), lambda: VERSION)
    ecgs = EcgStore(settings, sessions, jobs)
    info = ecgs.accept_path(formats_dir / "ge_muse_xml" / "muse-sinus.xml")
    assert info.created and ecgs.take_accepted(info.id) is None
    engine.dispose()


def test_a_record_changed_after_it_was_read_is_parsed_from_what_is_stored(
    ptbxl_dir: Path, tmp_path: Path
) -> None:
    for part in (ptbxl_dir / "records500" / "00000").glob("00002_hr.*"):
        shutil.copy2(part, tmp_path / part.name)
    settings = Settings(data_dir=tmp_path)
    item = read_incoming(tmp_path / "00002_hr.hea", settings)
    original = load_ecg(tmp_path / "00002_hr.hea")
    dat = tmp_path / "00002_hr.dat"
    dat.write_bytes(bytes(len(dat.read_bytes())))  # overwritten with zeros before the parse
    parsed = parse_incoming(item, settings)
    assert np.array_equal(parsed.signal, original.signal)
    assert parsed.source.sha256 != load_ecg(tmp_path / "00002_hr.hea").source.sha256


def test_unreadable_bytes_are_refused_and_not_stored(pipeline: Stores, formats_dir: Path) -> None:
    with pytest.raises(EcgFormatError, match="not a recognised ECG format"):
        pipeline.ecgs.accept_bytes(b"this is not an ECG", source_uri="notes.txt")
    with pytest.raises(EcgFormatError):  # a WFDB header whose signal file is missing
        pipeline.ecgs.accept_files({"x.hea": (formats_dir / "wfdb" / "100.hea").read_bytes()})
    assert pipeline.ecgs.list_ecgs() == []


def test_one_result_per_ecg_and_model_version(pipeline: Stores, formats_dir: Path) -> None:
    info = pipeline.ecgs.accept_path(formats_dir / "ge_muse_xml" / "muse-sinus.xml")
    assert pipeline.jobs.store_result(info.id, _result()) is True
    assert pipeline.jobs.store_result(info.id, _result()) is False  # a redelivered task
    assert pipeline.jobs.store_result(info.id, _result("older-model-0")) is True
    stored = pipeline.jobs.result(info.id)
    assert stored is not None and stored.model_version == VERSION
    assert stored.result == _result()  # round-trips exactly through JSON
    assert pipeline.ecgs.get_info(info.id).status == "done"  # type: ignore[union-attr]
    with pipeline.sessions() as session:
        rows = session.scalars(sa.select(ResultRow).where(ResultRow.ecg_id == info.id)).all()
    assert sorted(r.model_version for r in rows) == ["older-model-0", VERSION]


def test_concurrent_workers_store_exactly_one_result(pipeline: Stores, formats_dir: Path) -> None:
    info = pipeline.ecgs.accept_path(formats_dir / "philips_xml" / "129DYPRG.XML")
    outcomes: list[bool] = []
    barrier = threading.Barrier(6)

    def store() -> None:
        barrier.wait()
        outcomes.append(pipeline.jobs.store_result(info.id, _result()))

    threads = [threading.Thread(target=store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False] * 5 + [True]
    with pipeline.sessions() as session:
        count = session.scalar(
            sa.select(sa.func.count()).select_from(ResultRow).where(ResultRow.ecg_id == info.id)
        )
    assert count == 1


def test_quality_rejection_is_a_status_not_a_failure(pipeline: Stores, formats_dir: Path) -> None:
    info = pipeline.ecgs.accept_path(formats_dir / "philips_xml" / "129DYPRG.XML")
    pipeline.jobs.store_result(info.id, _result(acceptable=False))
    assert pipeline.ecgs.get_info(info.id).status == "rejected"  # type: ignore[union-attr]


def test_failed_classification_stays_recorded_with_its_error(
    pipeline: Stores, formats_dir: Path
) -> None:
    info = pipeline.ecgs.accept_path(formats_dir / "philips_xml" / "129DYPRG.XML")
    pipeline.jobs.mark_job("classify", info.id, VERSION, "running")
    pipeline.jobs.mark_failed(info.id, VERSION, "classification failed: RuntimeError: boom")
    failed = pipeline.ecgs.get_info(info.id)
    assert failed is not None and failed.status == "failed"
    assert failed.error == "classification failed: RuntimeError: boom"
    assert pipeline.jobs.job_state("classify", info.id, VERSION) == "failed"
    assert [i.id for i, _ in pipeline.ecgs.list_ecgs(status="failed")] == [info.id]
    # wait() does not sit out its budget on an ECG that has failed
    assert pipeline.jobs.wait([info.id], timeout_s=30.0) == {info.id: None}
    with pipeline.sessions() as session:
        job = session.scalar(sa.select(JobRow).where(JobRow.ecg_id == info.id))
    assert job is not None and job.attempts == 1


def test_feedback_links_to_card_and_ecg_and_keeps_unknown_cards(
    pipeline: Stores, formats_dir: Path
) -> None:
    info = pipeline.ecgs.accept_path(formats_dir / "ge_muse_xml" / "muse-sinus.xml")
    card = {"uuid": "card-1", "summary": "Possible atrial fibrillation", "indicator": "warning"}
    pipeline.cards.save_card(
        card_uuid="card-1",
        service_id="ecg-review",
        ecg_id=info.id,
        patient_ref="Patient/p1",
        summary=card["summary"],
        indicator="warning",
        card=card,
    )
    pipeline.cards.save_card(  # the same card shown again is stored once
        card_uuid="card-1",
        service_id="ecg-review",
        ecg_id=info.id,
        patient_ref="Patient/p1",
        summary=card["summary"],
        indicator="warning",
        card=card,
    )
    assert pipeline.cards.get_card("card-1") == card
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    known = pipeline.cards.save_feedback(
        card_uuid="card-1",
        service_id="ecg-review",
        outcome="overridden",
        accepted_suggestions=[],
        override_reason={"reason": {"system": "http://example.org", "code": "artifact"}},
        user_comment="lead reversal",
        outcome_timestamp=when,
    )
    unknown = pipeline.cards.save_feedback(
        card_uuid="never-shown",
        service_id="ecg-review",
        outcome="accepted",
        accepted_suggestions=["s-1"],
        override_reason=None,
        user_comment=None,
        outcome_timestamp=None,
    )
    assert known.card_known and known.ecg_id == info.id and known.outcome_timestamp == when
    assert not unknown.card_known and unknown.ecg_id is None
    assert unknown.accepted_suggestions == ["s-1"]
    assert [f.id for f in pipeline.cards.feedback_for(info.id)] == [known.id]


def test_remembered_state_survives_reopening(database_url: str) -> None:
    for value in ({"last_run": "2026-01-01T00:00:00+00:00"}, {"last_run": "2026-02-01"}):
        engine = make_engine(database_url)
        upgrade(engine)
        state = StateStore(make_session_factory(engine))
        before = state.get("dicomweb-poll:x")
        state.set("dicomweb-poll:x", value)
        engine.dispose()
    assert before == {"last_run": "2026-01-01T00:00:00+00:00"}


@pytest.mark.parametrize("fails", [False, True])
def test_cards_and_their_audit_entries_are_one_transaction(
    pipeline: Stores, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    """Card rows written with the audit entries: stored together, or (the chain append
    failing inside the transaction) neither."""
    from cds_service.audit import AuditFilter, AuditRecord, AuditTrail
    from cds_service.storage.cards import card_row, insert_cards

    trail = AuditTrail(pipeline.sessions)
    card = {"uuid": f"card-tx-{fails}", "summary": "s", "indicator": "info"}
    rows = [
        card_row(
            card_uuid=card["uuid"],
            service_id="ecg-review",
            ecg_id=None,
            patient_ref="Patient/p1",
            summary="s",
            indicator="info",
            card=card,
        )
    ]
    if fails:

        def broken(*_: object) -> None:
            raise RuntimeError("disk full")

        monkeypatch.setattr(AuditTrail, "_next_rows", staticmethod(broken))
    entries = [AuditRecord("card", patient="Patient/p1", detail={"card": card["uuid"]})]
    if fails:
        with pytest.raises(RuntimeError):
            trail.record_many(entries, with_rows=lambda conn: insert_cards(conn, rows))
    else:
        trail.record_many(entries, with_rows=lambda conn: insert_cards(conn, rows))
    stored = pipeline.cards.get_card(card["uuid"])
    audited = trail.query(AuditFilter(events=["card"])).entries
    assert (stored is not None) is (not fails)
    assert (len(audited) == 1) is (not fails)


def test_list_filters_by_a_stored_score_in_sql(pipeline: Stores, formats_dir: Path) -> None:
    """The reviewer list's finding filters run in the database (SQLite and PostgreSQL)."""
    muse = pipeline.ecgs.accept_path(formats_dir / "ge_muse_xml" / "muse-sinus.xml")
    philips = pipeline.ecgs.accept_path(formats_dir / "philips_xml" / "129DYPRG.XML")
    unclassified = pipeline.ecgs.accept_path(formats_dir / "wfdb" / "100.hea")
    pipeline.jobs.store_result(muse.id, _result())  # afib 0.82, norm 0.05
    pipeline.jobs.store_result(philips.id, _result(acceptable=False))

    def ids(**filters: object) -> set[str]:
        return {i.id for i, _ in pipeline.ecgs.list_ecgs(limit=100, **filters)}  # type: ignore[arg-type]

    assert ids() == {muse.id, philips.id, unclassified.id}
    assert ids(scored="afib") == {muse.id, philips.id}  # every label is scored, rejected or not
    assert ids(scored="afib", min_probability=0.8) == {muse.id, philips.id}
    assert ids(scored="afib", min_probability=0.83) == set()
    assert ids(scored="norm", min_probability=0.5) == set()
    assert ids(min_probability=0.8) == {muse.id, philips.id}
    assert ids(scored="no_such_label") == set()
