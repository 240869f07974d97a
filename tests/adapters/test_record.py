"""The canonical record: derived limb leads on real PTB-XL data and the record's invariants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapters import STANDARD_LEADS, Ecg, EcgFormatError, EcgSource, load_ecg, standard_12_lead
from adapters.leads import normalize_lead_name

LIMB = ("III", "aVR", "aVL", "aVF")
#: PTB-XL stores every lead at 1 uV resolution, so recorded and derived values each carry up
#: to 0.5 uV of rounding per lead involved: III = II - I combines three such roundings.
TOLERANCE_MV = 0.0015 + 1e-6


def _without(ecg: Ecg, dropped: tuple[str, ...]) -> Ecg:
    keep = [i for i, name in enumerate(ecg.leads) if name not in dropped]
    return ecg.with_signal(ecg.signal[keep], [ecg.leads[i] for i in keep])


@pytest.mark.parametrize("folder", ["records500", "records100"])
def test_derived_limb_leads_reproduce_the_recorded_ones(ptbxl_dir: Path, folder: str) -> None:
    headers = sorted((ptbxl_dir / folder / "00000").glob("*.hea"))[:25]
    assert len(headers) == 25
    for header in headers:
        recorded = load_ecg(header)
        view = standard_12_lead(_without(recorded, LIMB))
        assert view.derived == frozenset(LIMB) and view.missing == frozenset()
        assert view.ecg.leads == STANDARD_LEADS
        for name in LIMB:
            error = float(np.abs(view.ecg.lead(name) - recorded.lead(name)).max())
            assert error <= TOLERANCE_MV, (header.name, name, error)
        for name in ("I", "II", "V1", "V6"):
            np.testing.assert_array_equal(view.ecg.lead(name), recorded.lead(name))


def test_recorded_leads_are_never_replaced(ptbxl_dir: Path) -> None:
    recorded = load_ecg(ptbxl_dir / "records500/00000/00010_hr")
    view = standard_12_lead(recorded)
    assert view.derived == frozenset() and view.missing == frozenset()
    np.testing.assert_array_equal(view.ecg.signal, recorded.signal)


def test_extra_leads_dropped_and_missing_ones_reported(formats_dir: Path) -> None:
    ptb = standard_12_lead(load_ecg(formats_dir / "wfdb/s0010_re"))
    assert ptb.ecg.leads == STANDARD_LEADS  # Frank vx/vy/vz are not in the 12-lead view

    mitbih = load_ecg(formats_dir / "wfdb/100")  # MLII and V5 only: nothing to derive from
    view = standard_12_lead(mitbih)
    assert view.derived == frozenset()
    assert view.missing == frozenset(STANDARD_LEADS) - {"II", "V5"}  # MLII is read as II
    assert not view.ecg.lead("I").any()
    np.testing.assert_array_equal(view.ecg.lead("V5"), mitbih.lead("V5"))


def _source() -> EcgSource:
    return EcgSource(format="test", uri="made-up", sha256="0" * 64)


@pytest.mark.parametrize(
    ("signal", "leads", "fs", "message"),
    [
        (np.zeros((2, 10)), ("I",), 500.0, "2 signal rows but 1 lead names"),
        (np.zeros((2, 10)), ("I", "I"), 500.0, "duplicate lead names"),
        (np.zeros((1, 10)), ("I",), 5.0, "outside"),
        (np.full((1, 10), np.nan), ("I",), 500.0, "NaN"),
        (np.full((1, 10), 1500.0), ("I",), 500.0, "not physiological"),
        (np.zeros((1, 0)), ("I",), 500.0, "no samples"),
        (np.zeros(10), ("I",), 500.0, "2-D"),
    ],
)
def test_record_invariants(
    signal: np.ndarray, leads: tuple[str, ...], fs: float, message: str
) -> None:
    with pytest.raises(EcgFormatError, match=message):
        Ecg(signal=signal, fs=fs, leads=leads, source=_source())


def test_signal_is_float32_millivolts(ptbxl_dir: Path) -> None:
    ecg = load_ecg(ptbxl_dir / "records100/00000/00001_lr")
    assert ecg.signal.dtype == np.float32
    assert ecg.duration_s == pytest.approx(10.0)
    with pytest.raises(KeyError):
        ecg.lead("V9")


def test_standard_signal_is_the_standard_views_signal(ptbxl_dir: Path) -> None:
    from adapters.record import standard_signal

    ecg = load_ecg(ptbxl_dir / "records500" / "00000" / "00001_hr.hea")
    assert ecg.leads == STANDARD_LEADS
    signal, derived, missing = standard_signal(ecg)
    assert signal is ecg.signal and not derived and not missing  # no copy needed
    # Another order, two limb leads and a precordial lead absent: the view's values.
    keep = [i for i, name in enumerate(ecg.leads) if name not in ("aVL", "III", "V4")][::-1]
    shuffled = ecg.with_signal(ecg.signal[keep], [ecg.leads[i] for i in keep])
    view = standard_12_lead(shuffled)
    signal, derived, missing = standard_signal(shuffled)
    np.testing.assert_array_equal(signal, view.ecg.signal)
    assert (derived, missing) == (view.derived, view.missing) == ({"aVL", "III"}, {"V4"})


@pytest.mark.parametrize(
    ("raw", "name"),
    [("-aVR", "-aVR"), ("Lead -aVR", "-aVR"), ("aVRneg", "-aVR"), ("-V1", "-V1"),
     ("I-II", "I-II"), ("V-1", "V1"), ("MDC_ECG_LEAD_AVR", "aVR"), ("ML II", "II")],
)  # fmt: skip
def test_lead_names_keep_their_sign(raw: str, name: str) -> None:
    # Before, dashes were stripped: "-aVR" (aVR inverted) read as aVR, "I-II" as lead III.
    assert normalize_lead_name(raw) == name
