"""Which DICOM multiplex group is the rhythm and which the median beat, when carts label
them their own way or not at all (derived from the real sample: RHYTHM ORIGINAL 10 s and
MEDIAN BEAT DERIVED 1.2 s, both 1000 Hz)."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.sequence import Sequence

from adapters import Ecg, EcgFormatError, load_ecg


@pytest.fixture(scope="module")
def sample(dicom_path: Path, dicom_ecg: Ecg) -> tuple[pydicom.Dataset, Ecg]:
    return pydicom.dcmread(dicom_path), dicom_ecg


def _load(ds: pydicom.Dataset) -> Ecg:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return load_ecg(out.getvalue(), name="variant.dcm")


def _variant(ds: pydicom.Dataset, median_first: bool) -> pydicom.Dataset:
    fresh = pydicom.dcmread(io.BytesIO(_raw(ds)))
    rhythm, median = fresh.WaveformSequence
    fresh.WaveformSequence = Sequence([median, rhythm] if median_first else [rhythm, median])
    return fresh


def _raw(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("label", ["AVERAGE BEAT", "Representative", "TEMPLATE"])
def test_other_carts_words_for_the_averaged_beat_are_the_median(
    sample: tuple[pydicom.Dataset, Ecg], label: str
) -> None:
    ds, reference = sample
    variant = _variant(ds, median_first=True)
    variant.WaveformSequence[0].MultiplexGroupLabel = label
    ecg = _load(variant)
    np.testing.assert_array_equal(ecg.signal, reference.signal)
    assert ecg.median_beats is not None and ecg.median_beats.signal.shape == (12, 1200)


def test_unlabelled_groups_without_originality_take_the_longest_as_the_rhythm(
    sample: tuple[pydicom.Dataset, Ecg],
) -> None:
    """Before: the first group was the rhythm, so a median beat stored first was read as a
    1.2 s recording (and refused as too short or classified)."""
    ds, reference = sample
    variant = _variant(ds, median_first=True)
    for group in variant.WaveformSequence:
        del group.MultiplexGroupLabel
        group.WaveformOriginality = "DERIVED"  # nothing says which was recorded
    ecg = _load(variant)
    np.testing.assert_array_equal(ecg.signal, reference.signal)
    assert ecg.median_beats is not None and ecg.median_beats.signal.shape == (12, 1200)


@pytest.mark.parametrize("median_first", [True, False])
def test_an_unlabelled_derived_beat_beside_the_rhythm_is_the_median(
    sample: tuple[pydicom.Dataset, Ecg], median_first: bool
) -> None:
    ds, reference = sample
    variant = _variant(ds, median_first=median_first)
    for group in variant.WaveformSequence:
        del group.MultiplexGroupLabel
    ecg = _load(variant)
    np.testing.assert_array_equal(ecg.signal, reference.signal)
    assert ecg.median_beats is not None
    np.testing.assert_array_equal(ecg.median_beats.signal, reference.median_beats.signal)  # type: ignore[union-attr]


def test_a_long_derived_group_is_not_taken_for_a_median_beat(
    sample: tuple[pydicom.Dataset, Ecg],
) -> None:
    """A second rhythm-length group (a filtered copy, say) is not an averaged beat."""
    ds, reference = sample
    variant = _variant(ds, median_first=False)
    rhythm = variant.WaveformSequence[0]
    variant.WaveformSequence = Sequence([rhythm, copy.deepcopy(rhythm)])
    first, second = variant.WaveformSequence
    del first.MultiplexGroupLabel
    del second.MultiplexGroupLabel
    second.WaveformOriginality = "DERIVED"
    ecg = _load(variant)
    np.testing.assert_array_equal(ecg.signal, reference.signal)
    assert ecg.median_beats is None


def test_a_file_with_only_an_averaged_beat_is_refused(
    sample: tuple[pydicom.Dataset, Ecg],
) -> None:
    ds, _ = sample
    variant = _variant(ds, median_first=True)
    variant.WaveformSequence = Sequence([variant.WaveformSequence[0]])
    variant.WaveformSequence[0].MultiplexGroupLabel = "AVERAGE BEAT"
    with pytest.raises(EcgFormatError, match="median beats, no rhythm"):
        _load(variant)


def test_groups_not_read_are_named(sample: tuple[pydicom.Dataset, Ecg]) -> None:
    """An Ambulatory ECG holds its time segments as consecutive groups; the rhythm is one of
    them, and the others were left without a word."""
    ds, reference = sample
    variant = _variant(ds, median_first=False)
    rhythm, median = variant.WaveformSequence
    second = copy.deepcopy(rhythm)
    second.MultiplexGroupLabel = "SEGMENT 2"
    variant.WaveformSequence = Sequence([rhythm, median, second])
    ecg = _load(variant)
    np.testing.assert_array_equal(ecg.signal, reference.signal)
    assert ecg.extra["unread_groups"] == "3 SEGMENT 2 (10 s)"
    assert "unread_groups" not in reference.extra
