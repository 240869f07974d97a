"""The signal-quality gate on real recordings and on real recordings deliberately corrupted."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from adapters import Ecg, load_ecg
from models.quality import assess_quality
from models.results import ClassificationResult, QualityReport

NOISE_FLAGS = ("baseline_drift", "static_noise", "burst_noise", "electrodes_problems")


def _ptbxl_rows(ptbxl_dir: Path) -> list[dict[str, str]]:
    with (ptbxl_dir / "ptbxl_database.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _flagged(row: dict[str, str]) -> bool:
    return any(row[flag].strip() for flag in NOISE_FLAGS)


@pytest.fixture(scope="session")
def ptbxl_first_100(ptbxl_dir: Path) -> list[tuple[dict[str, str], Ecg]]:
    """PTB-XL records 1-100 at 500 Hz (the ones whose checksums the official list verifies)."""
    rows = _ptbxl_rows(ptbxl_dir)[:100]
    return [(row, load_ecg(ptbxl_dir / f"{row['filename_hr']}.hea")) for row in rows]


@pytest.fixture(scope="session")
def record_1(ptbxl_dir: Path) -> Ecg:
    return load_ecg(ptbxl_dir / "records500" / "00000" / "00001_hr.hea")


def _corrupt(ecg: Ecg, signal: np.ndarray) -> Ecg:
    return ecg.with_signal(signal.astype(np.float32), ecg.leads)


def _problems_other_than_wander(report: QualityReport) -> list[str]:
    return [r for r in report.reasons if not r.startswith("baseline wander")]


def test_real_ptbxl_records_pass(ptbxl_first_100: list[tuple[dict[str, str], Ecg]]) -> None:
    for row, ecg in ptbxl_first_100:
        report = assess_quality(ecg)
        assert report.acceptable, (row["ecg_id"], report.reasons)
        assert not report.out_of_distribution  # the model's job, not the gate's
        if not _flagged(row):
            # Clean records: at most a baseline-wander note, never a lead called bad.
            assert not _problems_other_than_wander(report), (row["ecg_id"], report.reasons)
            assert report.unusable_leads == ()


@pytest.mark.slow
@pytest.mark.parametrize("column", ["filename_hr", "filename_lr"])
def test_all_500_ptbxl_records_pass_at_500_and_100_hz(ptbxl_dir: Path, column: str) -> None:
    rows = _ptbxl_rows(ptbxl_dir)
    warned_clean = 0
    for row in rows:
        report = assess_quality(load_ecg(ptbxl_dir / f"{row[column]}.hea"))
        assert report.acceptable, (row["ecg_id"], report.reasons)
        if not _flagged(row):
            assert not _problems_other_than_wander(report), (row["ecg_id"], report.reasons)
            warned_clean += bool(report.reasons)
    # Baseline wander notes on unflagged records stay rare (PTB-XL's flags are incomplete).
    assert warned_clean <= 0.03 * len(rows)


def test_zeroed_lead_is_reported_as_lead_off(record_1: Ecg) -> None:
    signal = record_1.signal.copy()
    signal[record_1.leads.index("V3")] = 0.0
    report = assess_quality(_corrupt(record_1, signal))
    assert report.acceptable
    assert report.reasons == ("V3 flat (lead off?)",)
    assert report.unusable_leads == ("V3",)


def test_lead_railing_at_a_constant_is_flat(record_1: Ecg) -> None:
    signal = record_1.signal.copy()
    signal[record_1.leads.index("aVL")] = 4.5
    report = assess_quality(_corrupt(record_1, signal))
    assert report.acceptable and any("aVL flat" in r for r in report.reasons)


def test_lead_lost_halfway_is_partly_flat(record_1: Ecg) -> None:
    signal = record_1.signal.copy()
    signal[record_1.leads.index("V5"), signal.shape[1] // 2 :] = 0.0
    report = assess_quality(_corrupt(record_1, signal))
    assert report.acceptable
    assert report.reasons == ("V5 flat for part of the recording",)


def test_clipping_is_reported_as_saturation(record_1: Ecg) -> None:
    signal = record_1.signal.copy()
    lead = record_1.leads.index("II")
    limit = 0.5 * float(np.abs(signal[lead]).max())
    signal[lead] = np.clip(signal[lead], -limit, limit)
    report = assess_quality(_corrupt(record_1, signal))
    assert report.acceptable
    assert report.reasons == ("II clipped (signal saturated at its limit)",)


@pytest.mark.parametrize(
    ("amplitude_mv", "acceptable"), [(0.1, True), (0.5, False)], ids=["moderate", "strong"]
)
def test_mains_hum_is_named(record_1: Ecg, amplitude_mv: float, acceptable: bool) -> None:
    t = np.arange(record_1.n_samples) / record_1.fs
    report = assess_quality(
        _corrupt(record_1, record_1.signal + amplitude_mv * np.sin(2 * np.pi * 50.0 * t))
    )
    assert report.acceptable is acceptable
    assert any("all leads" in r and "mains interference" in r for r in report.reasons)
    if not acceptable:
        assert report.reasons[0].startswith("too few usable leads (0 of 12")


def test_strong_white_noise_rejects(record_1: Ecg) -> None:
    rng = np.random.default_rng(7)
    noisy = record_1.signal + 0.4 * rng.standard_normal(record_1.signal.shape)
    report = assess_quality(_corrupt(record_1, noisy))
    assert not report.acceptable
    assert any("very noisy (high-frequency noise" in r for r in report.reasons)


def test_noise_in_a_few_leads_is_a_warning(record_1: Ecg) -> None:
    rng = np.random.default_rng(8)
    signal = record_1.signal.copy()
    for name in ("V1", "V2"):
        signal[record_1.leads.index(name)] += 0.4 * rng.standard_normal(signal.shape[1])
    report = assess_quality(_corrupt(record_1, signal))
    assert report.acceptable
    assert report.unusable_leads == ("V1", "V2")
    assert any(r.startswith("V1, V2 very noisy") for r in report.reasons)


def test_baseline_wander_is_a_warning(record_1: Ecg) -> None:
    t = np.arange(record_1.n_samples) / record_1.fs
    report = assess_quality(_corrupt(record_1, record_1.signal + 2.5 * np.sin(2 * np.pi * 0.3 * t)))
    assert report.acceptable
    assert len(report.reasons) == 1 and report.reasons[0].startswith("baseline wander in all leads")


def test_flat_record_is_rejected(record_1: Ecg) -> None:
    report = assess_quality(_corrupt(record_1, np.zeros_like(record_1.signal)))
    assert not report.acceptable
    assert report.reasons == ("no signal: every lead is flat",)


def test_short_record_is_rejected(record_1: Ecg) -> None:
    short = record_1.with_signal(record_1.signal[:, : int(4 * record_1.fs)], record_1.leads)
    report = assess_quality(short)
    assert not report.acceptable
    assert report.reasons[0].startswith("recording too short (4.0 s")


def test_five_leads_off_is_rejected(record_1: Ecg) -> None:
    signal = record_1.signal.copy()
    signal[:5] = 0.0
    report = assess_quality(_corrupt(record_1, signal))
    assert not report.acceptable
    assert report.reasons[0] == "too few usable leads (7 of 12; at least 8 needed)"


def test_real_records_with_zeroed_precordial_leads(cinc_dir: Path) -> None:
    # Chapman-Shaoxing/Ningbo records whose files hold all-zero precordial leads.
    three_off = assess_quality(load_ecg(cinc_dir / "cinc2021" / "JS20004.hea"))
    assert three_off.acceptable
    assert "V2, V4, V6 flat (leads off?)" in three_off.reasons
    six_off = assess_quality(
        load_ecg(
            cinc_dir / "cinc2021_more" / "smoke_data" / "ChapmanShaoxing_Ningbo" / "JS45542.hea"
        )
    )
    assert not six_off.acceptable
    assert six_off.unusable_leads == ("V1", "V2", "V3", "V4", "V5", "V6")


def test_missing_leads_are_noted(record_1: Ecg) -> None:
    keep = [record_1.leads.index(name) for name in ("I", "II", "V5")]
    subset = record_1.with_signal(record_1.signal[keep], ["I", "II", "V5"])
    report = assess_quality(subset)
    # III, aVR, aVL and aVF are derived from I and II; the other chest leads are missing.
    assert report.acceptable
    assert report.reasons == ("V1, V2, V3, V4, V6 not recorded",)


def test_real_two_lead_and_frank_lead_recordings(formats_dir: Path) -> None:
    # MIT-BIH 100: leads MLII and V5 at 360 Hz for 30 minutes.
    report = assess_quality(load_ecg(formats_dir / "wfdb" / "100.hea"))
    assert report.acceptable
    assert report.reasons == ("I, III, aVR, aVL, aVF, V1, V2, V3, V4, V6 not recorded",)  # MLII=II
    # The PTB recording's 12 standard leads pass; its Frank leads alone are not a 12-lead ECG.
    ptb = load_ecg(formats_dir / "wfdb" / "s0010_re.hea")
    assert assess_quality(ptb).reasons == ()
    frank = [i for i, name in enumerate(ptb.leads) if name.lower() in ("vx", "vy", "vz")]
    assert len(frank) == 3
    report = assess_quality(ptb.with_signal(ptb.signal[frank], [ptb.leads[i] for i in frank]))
    assert not report.acceptable
    assert report.reasons[0].startswith("none of the 12 standard leads is present")


def test_unusable_leads_survive_the_result_round_trip() -> None:
    quality = QualityReport(
        acceptable=True, reasons=("V3 flat (lead off?)",), unusable_leads=("V3",)
    )
    result = ClassificationResult(model_version="t", quality=quality)
    assert ClassificationResult.from_dict(result.to_dict()).quality == quality


@pytest.mark.slow
def test_every_other_real_recording_gets_an_explained_verdict(data_dir: Path) -> None:
    """All CinC/CPSC/format sample records: rejected only when too short or leads really dead."""
    paths = [
        p
        for p in sorted((data_dir / "cinc").rglob("*.hea"))
        + sorted((data_dir / "formats").rglob("*"))
        if p.suffix.lower() in (".hea", ".xml", ".dcm") and p.parent.name != "xsd"
    ]
    checked = rejected = 0
    for path in paths:
        try:
            ecg = load_ecg(path)
        except Exception:
            continue  # not an ECG this project reads (schemas, unsupported formats)
        report = assess_quality(ecg)
        checked += 1
        if report.acceptable:
            continue
        rejected += 1
        if ecg.duration_s < 5.0:
            assert report.reasons[0].startswith("recording too short"), path
            continue
        assert report.reasons[0].startswith("too few usable leads"), (path, report.reasons)
        for lead in report.unusable_leads:  # the leads called dead are constant in the file
            still = float(np.mean(np.diff(ecg.lead(lead)) == 0.0))  # for most of the recording
            assert still >= 0.5, (path, lead, still)
    assert checked >= 150
    assert rejected <= 0.05 * checked
