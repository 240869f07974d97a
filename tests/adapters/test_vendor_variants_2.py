"""More of other vendors' variants of the real sample files (second round; the first is
test_vendor_variants.py): each is read as its standard says, or refused by name.

Every variant is an edit of a real file in ``formats/``; the expected values come from the
original file as read, and the edit's meaning from the format's own definition: the
Philips XML schemas (SierraECG 1.03, PhilipsECG 1.04.01: ``TYPEleadname``,
``TYPEdataencoding``), DICOM PS3.3 C.10.9.1 (Channel Source, Channel Label).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest

from adapters import STANDARD_LEADS, Ecg, load_ecg

PHILIPS_104 = "philips_xml/3191723_ZZDEMOPTONLY_1-04_orig.xml"


@pytest.fixture(scope="module")
def philips(formats_dir: Path) -> tuple[str, Ecg]:
    """The real PhilipsECG 1.04 file's text (UTF-16 on disk) and the file as read."""
    path = formats_dir / PHILIPS_104
    return path.read_bytes().decode("utf-16"), load_ecg(path)


# --- Philips --------------------------------------------------------------------------------


def test_philips_iec_chest_lead_labels_are_the_v_leads(philips: tuple[str, Ecg]) -> None:
    # The Philips schemas name the chest leads C1..C6 as well as V1..V6 (IEC labels, as
    # European carts print them). Before, "C1".."C6" were kept as unknown leads: the
    # 12-lead view had no V1-V6 and filled them with zeros, silently.
    philips_text, philips_ecg = philips
    text = philips_text.replace(
        'leadlabels="I II III aVR aVL aVF V1 V2 V3 V4 V5 V6"',
        'leadlabels="I II III aVR aVL aVF C1 C2 C3 C4 C5 C6"',
    )
    text = re.sub(r'<repbeat leadname="V(\d)">', r'<repbeat leadname="C\1">', text)
    assert text.count('leadname="C') == 6
    ecg = load_ecg(text.encode("utf-16"), name="iec.xml")
    assert ecg.leads == STANDARD_LEADS
    np.testing.assert_array_equal(ecg.signal, philips_ecg.signal)
    assert ecg.extra["lead_aliases"] == "C1 -> V1, C2 -> V2, C3 -> V3, C4 -> V4, C5 -> V5, C6 -> V6"
    assert ecg.median_beats is not None and philips_ecg.median_beats is not None
    assert ecg.median_beats.leads == philips_ecg.median_beats.leads


# --- DICOM ----------------------------------------------------------------------------------


def _dicom_bytes(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_dicom_channel_label_never_overrides_a_lead_code(dicom_path: Path, dicom_ecg: Ecg) -> None:
    # Channel Label is the fallback for codes that name no lead (test_vendor_variants:
    # "label only"); where the Channel Source code names one, the code is what was recorded.
    ds = pydicom.dcmread(dicom_path)
    for channel in ds.WaveformSequence[0].ChannelDefinitionSequence:
        channel.ChannelLabel = "II"  # a display label; the coded lead is what was recorded
    assert load_ecg(_dicom_bytes(ds), name="labels.dcm").leads == dicom_ecg.leads
