"""Fixtures shared by every test: where the real ECG data lives, and service availability.

Real data is read in place from ``../shared/data`` (override with ``ECG_DATA_DIR``).
When ``CI=true``, a required service that is unavailable fails the test instead of
skipping it, so CI can never go green by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Test apps load the model only when a test classifies; a background preload in every
# short-lived app would only burn the CI machine's two cores.
os.environ.setdefault("ECG_CDS_PRELOAD_MODEL", "false")

#: Real servers on loopback (FHIR, Orthanc) as session fixtures for every test.
pytest_plugins = ["tests.servers"]


def _data_dir() -> Path:
    configured = os.environ.get("ECG_DATA_DIR")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real ECG data folder (see its PROVENANCE.md)."""
    path = _data_dir()
    if not (path / "PROVENANCE.md").is_file():
        pytest.fail(
            f"ECG data not found at {path}. Put the shared data folder beside the repo "
            "(../shared/data) or set ECG_DATA_DIR to its location.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def formats_dir(data_dir: Path) -> Path:
    return data_dir / "formats"


@pytest.fixture(scope="session")
def ptbxl_dir(data_dir: Path) -> Path:
    return data_dir / "ptbxl"


@pytest.fixture(scope="session")
def cinc_dir(data_dir: Path) -> Path:
    return data_dir / "cinc"


def service_unavailable(reason: str) -> None:
    """Skip locally, fail in CI: a test that needs a real service must not pass by skipping."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required service unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests leave files a person may want to look at (screenshots, plots)."""
    path = REPO_ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
