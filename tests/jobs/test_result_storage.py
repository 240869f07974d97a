"""Compact result rows (storage.compact): what is read back is exactly what was stored.

Real records in several formats go through the classifier, are stored, and are read back by
a second ledger on the same database (nothing cached, the rows and their parts decoded);
rows written in the full form before migration 0002 read the same, and the downgrade
writes compact rows back in full form. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from adapters import load_ecg
from cds_service.jobs.dispatch import EmbeddedDispatcher
from cds_service.settings import Settings
from cds_service.storage.base import make_engine, make_session_factory
from cds_service.storage.ecgs import EcgStore
from cds_service.storage.jobs import JobLedger
from cds_service.storage.migrate import upgrade
from cds_service.storage.tables import ResultPartRow, ResultRow
from models.results import ClassificationResult


def _records(data_dir: Path) -> list[Path]:
    """One real record of each kind the service reads, and a few PTB-XL ones."""
    formats = data_dir / "formats"
    ptbxl = sorted((data_dir / "ptbxl" / "records500" / "00000").glob("*_hr.hea"))[:3]
    return [
        *ptbxl,
        data_dir / "cinc" / "cinc2021" / "E07500.hea",
        formats / "ge_muse_xml" / "muse-sinus.xml",
        formats / "hl7_aecg" / "Example_aECG_HL7_2003-12.xml",
        formats / "philips_xml" / "129DYPRG.XML",
        formats / "dicom" / "pydicom_waveform_ecg.dcm",
        formats / "scp_ecg" / "Example.scp",
    ]


def _ledger(database_url: str, tmp_path: Path, version: str) -> tuple[EcgStore, JobLedger]:
    """Stores on a database brought to the current schema (a process starting)."""
    engine = make_engine(database_url)
    upgrade(engine)
    return _stores(engine, tmp_path, database_url, version)


@pytest.fixture
def classified(
    database_url: str, tmp_path: Path, data_dir: Path, classifier: Any
) -> Iterator[tuple[EcgStore, dict[str, ClassificationResult]]]:
    """Real records stored and classified; ECG id -> the classifier's own result."""
    ecgs, jobs = _ledger(database_url, tmp_path, classifier.model_version)
    paths = _records(data_dir)
    infos = [ecgs.accept_path(path) for path in paths]
    results = classifier.classify([load_ecg(path) for path in paths])
    assert jobs.store_results(list(zip([i.id for i in infos], results, strict=True))) == {
        i.id for i in infos
    }
    yield ecgs, {info.id: result for info, result in zip(infos, results, strict=True)}
    ecgs._sessions.kw["bind"].dispose()


def test_a_stored_result_reads_back_exactly_as_the_classifier_gave_it(
    classified: tuple[EcgStore, dict[str, ClassificationResult]],
    database_url: str,
    tmp_path: Path,
) -> None:
    _, direct = classified
    version = next(iter(direct.values())).model_version
    _, reader = _ledger(database_url, tmp_path, version)  # a fresh process: nothing cached
    read = reader.results(sorted(direct))
    assert set(read) == set(direct)
    for ecg_id, result in direct.items():
        assert read[ecg_id].result == result
        assert orjson.dumps(read[ecg_id].result.to_dict()) == orjson.dumps(result.to_dict())
    with reader._sessions() as session:
        rows = session.scalars(sa.select(ResultRow)).all()
        n_parts = session.scalar(sa.select(sa.func.count()).select_from(ResultPartRow))
    # every row is compact and names parts; results of one model share a few parts rows
    assert all(row.parts_digest is not None for row in rows)
    assert n_parts is not None and 1 <= n_parts < len(rows)
    full = sum(len(orjson.dumps(direct[row.ecg_id].to_dict())) for row in rows)
    compact = sum(len(orjson.dumps(row.result)) for row in rows)
    assert compact < full / 2


def test_the_list_filter_reads_compact_rows_in_sql(
    classified: tuple[EcgStore, dict[str, ClassificationResult]],
) -> None:
    ecgs, direct = classified
    scored = [(i, r) for i, r in direct.items() if r.scores]
    assert scored
    ecg_id, result = scored[0]
    top = result.scores[0]
    found = {i.id for i, _ in ecgs.list_ecgs(scored=top.label_id, min_probability=top.probability)}
    expected = {
        i
        for i, r in direct.items()
        if any(s.label_id == top.label_id and s.probability >= top.probability for s in r.scores)
    }
    assert ecg_id in found and found == expected


def test_a_result_that_cannot_be_split_is_kept_whole(
    database_url: str, tmp_path: Path, data_dir: Path, classifier: Any
) -> None:
    """Two scores of one label id (an ad-hoc label named like a catalog one): full form."""
    ecgs, jobs = _ledger(database_url, tmp_path, classifier.model_version)
    path = data_dir / "formats" / "ge_muse_xml" / "muse-sinus.xml"
    info = ecgs.accept_path(path)
    [result] = classifier.classify([load_ecg(path)])
    first = result.scores[0]
    twice = replace(result, scores=(first, replace(first, text="ad hoc"), *result.scores[1:]))
    jobs.store_result(info.id, twice)
    _, reader = _ledger(database_url, tmp_path, classifier.model_version)
    stored = reader.result(info.id)
    assert stored is not None and stored.result == twice
    with reader._sessions() as session:
        row = session.scalars(sa.select(ResultRow)).one()
    assert row.parts_digest is None and row.result == orjson.loads(orjson.dumps(twice.to_dict()))


def test_rows_written_before_the_compact_form_read_the_same_and_downgrade_back(
    database_url: str, tmp_path: Path, data_dir: Path, classifier: Any
) -> None:
    """A database at revision 0001 with a full-form row; upgraded, it reads as it did and
    new rows are compact; downgraded, every row is full form again (what 0001 code reads)."""
    engine = make_engine(database_url)
    upgrade(engine, "0001")
    paths = [data_dir / "formats" / "ge_muse_xml" / "muse-sinus.xml", *_records(data_dir)[:1]]
    old_result, new_result = classifier.classify([load_ecg(p) for p in paths])
    version = classifier.model_version
    ecgs, jobs = _stores(engine, tmp_path, database_url, version)  # the 0001 schema
    old_info = ecgs.accept_path(paths[0])  # the ECG tables are the same in 0001 and 0002
    new_info = ecgs.accept_path(paths[1])
    with engine.begin() as conn:  # the row 0001's code wrote: to_dict() in full
        conn.execute(
            sa.text(
                "INSERT INTO results (ecg_id, model_version, acceptable, result, created_at)"
                " VALUES (:e, :v, :a, :r, CURRENT_TIMESTAMP)"
            ),
            {
                "e": old_info.id,
                "v": version,
                "a": old_result.quality.acceptable,
                "r": orjson.dumps(old_result.to_dict()).decode(),
            },
        )
    upgrade(engine)
    jobs.store_result(new_info.id, new_result)
    _, reader = _ledger(database_url, tmp_path, version)
    read = reader.results([old_info.id, new_info.id])
    assert read[old_info.id].result == old_result
    assert read[new_info.id].result == new_result
    top = old_result.scores[0]
    listed = {i.id for i, _ in ecgs.list_ecgs(scored=top.label_id, min_probability=top.probability)}
    assert old_info.id in listed  # the SQL filter reads the old form too

    from alembic import command

    from cds_service.storage.migrate import alembic_config

    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0001")
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT ecg_id, result FROM results")).all())
        tables = set(sa.inspect(conn).get_table_names())
    assert "result_parts" not in tables
    decoded = {k: orjson.loads(v) if isinstance(v, str | bytes) else v for k, v in rows.items()}
    assert decoded[old_info.id] == orjson.loads(orjson.dumps(old_result.to_dict()))
    assert decoded[new_info.id] == orjson.loads(orjson.dumps(new_result.to_dict()))
    assert ClassificationResult.from_dict(decoded[new_info.id]) == new_result
    engine.dispose()


def _stores(
    engine: sa.Engine, tmp_path: Path, database_url: str, version: str
) -> tuple[EcgStore, JobLedger]:
    """Stores on ``engine`` at whatever revision it is (no upgrade)."""
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    dispatcher = EmbeddedDispatcher(threads=1, max_retries=0)  # never started: no jobs run
    sessions = make_session_factory(engine)
    jobs = JobLedger(settings, sessions, dispatcher, lambda: version)
    return EcgStore(settings, sessions, jobs), jobs
