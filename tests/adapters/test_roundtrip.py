"""Every sample format -> Ecg -> FHIR / DICOM -> Ecg keeps the recording.

The writers quantise each lead with the step of :mod:`adapters.quantise`, so the signal must
come back within half that step; names, rate, statements and codes must come back exactly.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fhir.resources.R4B.observation import Observation

from adapters import Ecg, load_ecg, to_dicom_bytes, to_fhir_observation
from adapters.quantise import quantisation_step_uv

SAMPLES = [
    "formats/dicom/pydicom_waveform_ecg.dcm",
    "formats/hl7_aecg/Example_aECG_HL7_2003-12.xml",
    "formats/hl7_aecg/minimum_aecg.xml",
    "formats/ge_muse_xml/muse-sinus.xml",
    "formats/philips_xml/129DYPRG.XML",
    "formats/philips_xml/3191723_ZZDEMOPTONLY_1-04_orig.xml",
    "formats/scp_ecg/Example.scp",
    "formats/scp_ecg/ECG_20060620_112352_197001138994.SCP",
    "formats/wfdb/s0010_re",
    "ptbxl/records500/00000/00001_hr",
    "ptbxl/records100/00000/00001_lr",
    "cinc/cinc2021/JS20000",
    "cinc/cpsc2018/A1980.mat",
    "cinc/cinc2021_more/smoke_data/SPH/SPH00001.h5",
]


def _assert_same_recording(back: Ecg, original: Ecg) -> None:
    assert back.leads == original.leads
    assert back.fs == pytest.approx(original.fs, rel=1e-9)
    assert back.signal.shape == original.signal.shape
    peaks = np.abs(original.signal).max(axis=1)
    half_step_mv = np.array([quantisation_step_uv(float(p)) for p in peaks]) / 2000.0
    error = np.abs(back.signal - original.signal)
    assert np.all(error <= half_step_mv[:, None] + 1e-7), float(error.max())
    assert back.statements == original.statements
    assert back.diagnosis_codes == original.diagnosis_codes


@pytest.fixture(scope="module", params=SAMPLES)
def original(request: pytest.FixtureRequest, data_dir: Path) -> Ecg:
    return load_ecg(data_dir / request.param)


def test_through_fhir(original: Ecg) -> None:
    document = to_fhir_observation(original, patient_ref="Patient/rt")
    Observation.model_validate(document)
    back = load_ecg(json.dumps(document).encode())
    _assert_same_recording(back, original)
    assert back.start_time == original.start_time


def test_through_dicom(original: Ecg) -> None:
    data = to_dicom_bytes(original)
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.Modality == "ECG"
    back = load_ecg(data)
    _assert_same_recording(back, original)
    if original.start_time is not None:
        assert back.start_time == original.start_time.replace(microsecond=0, tzinfo=None)
    if original.median_beats is not None:
        assert back.median_beats is not None
        assert back.median_beats.leads == original.median_beats.leads
        np.testing.assert_allclose(
            back.median_beats.signal, original.median_beats.signal, atol=1e-4
        )


def test_dicom_then_fhir_then_dicom(data_dir: Path) -> None:
    """Chained conversions do not accumulate error: the second pass is lossless."""
    original = load_ecg(data_dir / SAMPLES[0])
    once = load_ecg(to_dicom_bytes(original))
    via_fhir = load_ecg(json.dumps(to_fhir_observation(once)).encode())
    twice = load_ecg(to_dicom_bytes(via_fhir))
    np.testing.assert_allclose(twice.signal, once.signal, atol=1e-6)
