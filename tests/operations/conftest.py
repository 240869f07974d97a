"""Fixtures for the operations tests: the real ``ecg-cds`` entry point in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

CliRun = Callable[..., subprocess.CompletedProcess[str]]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment without any ECG_CDS_ setting of the caller's, data in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_CDS_")}
    env.update({"ECG_CDS_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path / "home")})
    env.update(extra)
    return env


@pytest.fixture
def cli(tmp_path: Path) -> CliRun:
    """Run ``ecg-cds ARGS`` as a user would (``python -m cds_service.cli``), 120 s bound."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cds_service.cli", *args],
            env=env if env is not None else clean_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    return run
