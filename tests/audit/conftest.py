"""Audit-trail fixtures: a fresh SQLite file and a fresh PostgreSQL database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from adapters import load_ecg
from cds_service.audit import AuditTrail
from cds_service.runtime import Runtime
from cds_service.settings import FhirSettings
from cds_service.storage.base import make_engine, make_session_factory
from models.results import ClassificationResult
from tests.audit.writeback_support import TOKEN, start_runtime
from tests.conftest import service_unavailable
from tests.servers import FhirServer

#: An administrative connection to a local PostgreSQL (trust auth); each test makes its own db.
PG_ADMIN_URL = os.environ.get(
    "ECG_CDS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"ecg_cds_audit_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        service_unavailable(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc.orig}")
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The trail's database: every trail test runs on SQLite and on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def trail(engine: Engine) -> AuditTrail:
    trail = AuditTrail(make_session_factory(engine))
    trail.create_table()
    return trail


# -- write-back: the shipped model on a real FHIR server ------------------------------------


@pytest.fixture(scope="module")
def classifier() -> Any:
    """The shipped model (a few of its labels).

    Write-back does not depend on what the model concludes, only on a real result.
    """
    from models import LabelCatalog, ZeroShotClassifier, load_catalog

    shipped = load_catalog()
    # A few real labels keep the text-encoding cost of the test small.
    catalog = LabelCatalog(
        [shipped.get(i) for i in ("atrial_fibrillation", "sinus_rhythm", "normal_ecg")]
    )
    return ZeroShotClassifier.from_pretrained(catalog=catalog)


@pytest.fixture(scope="module")
def ecg_path(formats_dir: Path) -> Path:
    """A GE MUSE resting ECG acquired 2023-04-29 22:41:16 (its AcquisitionDate/Time)."""
    return formats_dir / "ge_muse_xml" / "muse-sinus.xml"


@pytest.fixture(scope="module")
def result(classifier: Any, ecg_path: Path) -> ClassificationResult:
    """The model's result for the ECG (classified once for the module)."""
    (classified,) = classifier.classify([load_ecg(ecg_path)])
    assert isinstance(classified, ClassificationResult)
    return classified


@pytest.fixture
def runtime(tmp_path: Path, classifier: Any, fhir_server: FhirServer) -> Iterator[Runtime]:
    rt = start_runtime(
        tmp_path,
        classifier,
        FhirSettings(
            allowed_servers=[fhir_server.base_url],
            writeback_server=fhir_server.base_url,
            writeback_token=TOKEN,
        ),
    )
    yield rt
    rt.stop()
