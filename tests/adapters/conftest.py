"""Fixtures the adapter tests share: the real DICOM waveform sample, read once."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters import Ecg, load_ecg

#: A Mortara 12-lead ECG: RHYTHM (ORIGINAL, 10 s) and MEDIAN BEAT (DERIVED, 1.2 s), 1000 Hz.
DICOM_SAMPLE = "dicom/pydicom_waveform_ecg.dcm"


@pytest.fixture(scope="session")
def dicom_path(formats_dir: Path) -> Path:
    return formats_dir / DICOM_SAMPLE


@pytest.fixture(scope="session")
def dicom_ecg(dicom_path: Path) -> Ecg:
    return load_ecg(dicom_path)
