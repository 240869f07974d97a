"""ECG measurements against annotated intervals, independent R-peak detection and diagnoses."""

from __future__ import annotations

import ast
import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import wfdb.processing
from lxml import etree

from adapters import Ecg, load_ecg
from models.measurements import SPECS, measure
from models.results import ClassificationResult, Measurement, QualityReport

Values = dict[str, float | None]


def _values(ecg: Ecg) -> Values:
    return {name: m.value for name, m in measure(ecg).items()}


@pytest.fixture(scope="session")
def ptbxl_rows(ptbxl_dir: Path) -> list[dict[str, str]]:
    with (ptbxl_dir / "ptbxl_database.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def load_ptbxl(ptbxl_dir: Path) -> Callable[[dict[str, str], str], Ecg]:
    def load(row: dict[str, str], column: str = "filename_hr") -> Ecg:
        return load_ecg(ptbxl_dir / f"{row[column]}.hea")

    return load


def _codes(row: dict[str, str]) -> dict[str, float]:
    codes: dict[str, float] = ast.literal_eval(row["scp_codes"])
    return codes


@pytest.fixture(scope="session")
def groups(
    ptbxl_rows: list[dict[str, str]], load_ptbxl: Callable[[dict[str, str], str], Ecg]
) -> dict[str, list[Values]]:
    """Measurements of the PTB-XL records (500 Hz) carrying each statement (NORM: first 40)."""
    wanted = ("1AVB", "CLBBB", "CRBBB", "AFIB", "SBRAD", "STACH", "NORM")
    result: dict[str, list[Values]] = {g: [] for g in wanted}
    for row in ptbxl_rows:
        codes = _codes(row)
        hits = [g for g in wanted if g in codes and not (g == "NORM" and len(result[g]) >= 40)]
        if hits:
            values = _values(load_ptbxl(row, "filename_hr"))
            for g in hits:
                result[g].append(values)
    return result


def _measured(group: list[Values], key: str) -> np.ndarray:
    return np.array([v[key] for v in group if v[key] is not None], dtype=float)


def test_every_key_has_unit_loinc_and_display(formats_dir: Path) -> None:
    result = measure(load_ecg(formats_dir / "ge_muse_xml" / "muse-sinus.xml"))
    assert set(result) == set(SPECS)
    loinc = {name: m.loinc for name, m in result.items() if m.loinc}
    # LOINC's EKG measurement codes: PR, QRS, QT, QTc, heart rate, QRS/P/T axes.
    assert loinc == {
        "heart_rate": "8867-4", "pr": "8625-6", "qrs": "8633-0", "qt": "8634-8",
        "qtc": "8636-3", "axis": "8632-2", "p_axis": "8626-4", "t_axis": "8638-9",
    }  # fmt: skip
    assert result["qtc"].display == "QTc (Bazett)"
    assert {m.unit for m in result.values()} == {"/min", "1", "ms", "deg", "mV", "mV.ms"}
    assert all(isinstance(m, Measurement) for m in result.values())
    core = ("heart_rate", "rr_irregularity", "pr", "qrs", "qt", "qtc", "qtc_fridericia", "axis")
    assert all(result[k].value is not None for k in core)
    for name, spec in SPECS.items():  # lead-wise keys carry a per-lead mapping, others none
        assert (result[name].per_lead is None) == (spec.summary is None), name


def test_measurements_survive_json_storage(formats_dir: Path) -> None:
    result = measure(load_ecg(formats_dir / "ge_muse_xml" / "muse-sinus.xml"))
    stored = ClassificationResult(
        model_version="t", quality=QualityReport(acceptable=True), measurements=result
    )
    again = ClassificationResult.from_dict(json.loads(json.dumps(stored.to_dict())))
    assert again == stored
    # Results stored before per-lead values existed still load.
    old = stored.to_dict()
    for m in old["measurements"].values():
        del m["per_lead"]
    assert ClassificationResult.from_dict(old).measurements["qrs"].per_lead is None


def _aecg_annotation(tree: etree._ElementTree, code: str) -> float:
    ns = {"h": "urn:hl7-org:v3"}
    values = tree.xpath(f"//h:annotation[h:code/@code='{code}']/h:value/@value", namespaces=ns)
    assert values, code
    return float(values[0])


def test_hl7_aecg_example_matches_its_annotated_intervals(formats_dir: Path) -> None:
    path = formats_dir / "hl7_aecg" / "Example_aECG_HL7_2003-12.xml"
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    tree = etree.parse(str(path), parser)
    values = _values(load_ecg(path))
    # The annotation set was made by the cart (Mortara ELI250) on the same recording.
    tolerances = {
        "pr": ("MDC_ECG_TIME_PD_PR", 20),
        "qrs": ("MDC_ECG_TIME_PD_QRS", 20),
        "qt": ("MDC_ECG_TIME_PD_QT", 30),
        "qtc": ("MDC_ECG_TIME_PD_QTc", 40),
        "axis": ("MDC_ECG_ANGLE_QRS_FRONT", 20),
    }
    for key, (code, tolerance) in tolerances.items():
        expected = _aecg_annotation(tree, code)
        measured = values[key]
        assert measured is not None, key
        assert abs(measured - expected) <= tolerance, (key, measured, expected)


def test_heart_rate_agrees_with_an_independent_qrs_detector(
    ptbxl_rows: list[dict[str, str]], load_ptbxl: Callable[[dict[str, str], str], Ecg]
) -> None:
    """Heart rate vs the RR intervals wfdb's XQRS detector finds in lead II."""
    rows = [r for r in ptbxl_rows[:40] if "SR" in _codes(r)][:15]
    differences = []
    for row in rows:
        ecg = load_ptbxl(row, "filename_hr")
        peaks = wfdb.processing.xqrs_detect(
            ecg.lead("II").astype(np.float64), fs=ecg.fs, verbose=False
        )
        reference = 60.0 / float(np.median(np.diff(peaks) / ecg.fs))
        measured = _values(ecg)["heart_rate"]
        assert measured is not None
        differences.append(abs(measured - reference))
    assert len(differences) == 15
    assert np.median(differences) <= 1.0
    assert max(differences) <= 5.0, differences


def test_first_degree_av_block_has_long_pr(groups: dict[str, list[Values]]) -> None:
    avb, normal = _measured(groups["1AVB"], "pr"), _measured(groups["NORM"], "pr")
    assert len(avb) >= 7 and len(normal) >= 35
    assert np.median(avb) > 200
    assert np.mean(avb > 200) >= 0.6
    assert np.mean(normal <= 200) >= 0.9
    assert np.median(avb) - np.median(normal) >= 50


def test_bundle_branch_blocks_have_wide_qrs(groups: dict[str, list[Values]]) -> None:
    for group in ("CLBBB", "CRBBB"):
        qrs = _measured(groups[group], "qrs")
        assert len(qrs) >= 6, group
        assert np.mean(qrs >= 120) >= 0.75, (group, qrs)
    normal = _measured(groups["NORM"], "qrs")
    assert np.mean(normal < 120) >= 0.9


def test_atrial_fibrillation_is_irregular_and_has_no_pr(groups: dict[str, list[Values]]) -> None:
    af, normal = (
        _measured(groups["AFIB"], "rr_irregularity"),
        _measured(groups["NORM"], "rr_irregularity"),
    )
    assert len(af) == len(groups["AFIB"]) >= 10
    assert np.median(af) >= 3 * np.median(normal)
    assert np.mean(af > np.percentile(normal, 90)) >= 0.8
    # No P waves: PR is not reported for most AF recordings.
    assert np.mean([v["pr"] is None for v in groups["AFIB"]]) >= 0.75


def test_sinus_brady_and_tachycardia_rates(groups: dict[str, list[Values]]) -> None:
    brady, tachy = (
        _measured(groups["SBRAD"], "heart_rate"),
        _measured(groups["STACH"], "heart_rate"),
    )
    assert len(brady) == len(groups["SBRAD"]) and len(tachy) == len(groups["STACH"])
    assert np.mean(brady < 60) >= 0.85, brady
    assert np.all(tachy > 100), tachy


def test_qtc_formulas(groups: dict[str, list[Values]]) -> None:
    for values in groups["NORM"]:
        qt, qtc, hr = values["qt"], values["qtc"], values["heart_rate"]
        if qt is None or hr is None:
            continue
        rr = 60.0 / hr
        assert qtc == pytest.approx(qt / np.sqrt(rr), abs=2.0)
        assert values["qtc_fridericia"] == pytest.approx(qt / rr ** (1 / 3), abs=2.0)
    assert 350 <= np.median(_measured(groups["NORM"], "qtc")) <= 450


def test_unmeasurable_input_gives_none_not_errors(
    ptbxl_rows: list[dict[str, str]], load_ptbxl: Callable[[dict[str, str], str], Ecg]
) -> None:
    ecg = load_ptbxl(ptbxl_rows[0], "filename_hr")
    flat = _values(ecg.with_signal(np.zeros_like(ecg.signal), ecg.leads))
    assert all(v is None for v in flat.values())
    short = _values(ecg.with_signal(ecg.signal[:, :500], ecg.leads))  # 1 s
    assert all(v is None for v in short.values())
    rng = np.random.default_rng(3)
    noise = _values(
        ecg.with_signal(rng.standard_normal(ecg.signal.shape).astype(np.float32), ecg.leads)
    )
    # Whatever "beats" a detector finds in noise share no shape: no intervals from them.
    assert all(noise[k] is None for k in ("pr", "qrs", "qt", "qtc", "axis"))


def test_two_lead_holter_record(formats_dir: Path) -> None:
    # MIT-BIH 100 (MLII, V5; 360 Hz): rate and intervals from V5, no frontal axis without I/aVF.
    values = _values(load_ecg(formats_dir / "wfdb" / "100.hea"))
    assert values["heart_rate"] is not None and 60 <= values["heart_rate"] <= 90
    assert values["qrs"] is not None and values["axis"] is None


@pytest.mark.slow
def test_axis_follows_ptbxl_heart_axis_categories(
    ptbxl_rows: list[dict[str, str]], load_ptbxl: Callable[[dict[str, str], str], Ecg]
) -> None:
    """PTB-XL's heart_axis (German convention): ALAD < -30, LAD -30..+30, MID, RAD +90..+120."""
    axes: dict[str, list[float]] = {"ALAD": [], "LAD": [], "MID": [], "RAD": []}
    for row in ptbxl_rows:
        category = row["heart_axis"]
        if category in axes:
            axis = _values(load_ptbxl(row, "filename_hr"))["axis"]
            if axis is not None:
                axes[category].append(axis)
    alad, lad, mid, rad = (np.array(axes[k]) for k in ("ALAD", "LAD", "MID", "RAD"))
    assert len(alad) >= 10 and len(lad) >= 30 and len(mid) >= 10 and len(rad) >= 5
    assert np.mean(alad < -20) >= 0.9
    assert np.mean((mid > -15) & (mid < 95)) >= 0.9
    assert np.mean(rad > 75) >= 0.9
    assert np.median(alad) < np.median(lad) < np.median(mid) < np.median(rad)


@pytest.mark.slow
def test_every_ptbxl_record_at_both_rates(
    ptbxl_rows: list[dict[str, str]], load_ptbxl: Callable[[dict[str, str], str], Ecg]
) -> None:
    """Never raises, always finds a rate, and 100 Hz agrees with 500 Hz for the same record.

    Intervals, and the amplitudes the criteria read (Sokolow-Lyon voltage, ST at J+60 ms).

    Records 1-200 (the full 500 take a minute on a shared core).
    """
    tolerances = {"heart_rate": 2.0, "qrs": 12.0, "qt": 20.0, "sokolow_lyon": 0.2, "st_j60": 0.03}
    agree: dict[str, list[bool]] = {key: [] for key in tolerances}
    for row in ptbxl_rows[:200]:
        high, low = _values(load_ptbxl(row, "filename_hr")), _values(load_ptbxl(row, "filename_lr"))
        assert high["heart_rate"] is not None and low["heart_rate"] is not None, row["ecg_id"]
        for key, tolerance in tolerances.items():
            a, b = high[key], low[key]
            if a is not None and b is not None:
                agree[key].append(abs(a - b) <= tolerance)
    for key, flags in agree.items():
        assert len(flags) >= 180 and np.mean(flags) >= 0.9, key


def test_cpsc_records_from_another_hospital(cinc_dir: Path) -> None:
    """CPSC 2018 A0001-A0010 (independent of PTB-XL), labelled by SNOMED codes in the header."""
    folder = cinc_dir / "cinc2021_more" / "smoke_data" / "CPSC_CPSC-Extra"
    af: list[Values] = []
    other: list[Values] = []
    rbbb: list[Values] = []
    not_rbbb: list[Values] = []
    for header in sorted(folder.glob("A00*.hea")):
        ecg = load_ecg(header)
        codes = {code.split("|")[-1] for code in ecg.diagnosis_codes}
        values = _values(ecg)
        (af if "164889003" in codes else other).append(values)
        (rbbb if "59118001" in codes else not_rbbb).append(values)
    assert len(af) == 4 and len(rbbb) == 3
    assert np.median(_measured(af, "rr_irregularity")) >= 3 * np.median(
        _measured(other, "rr_irregularity")
    )
    assert sum(v["pr"] is None for v in af) >= 3
    assert all(v["pr"] is not None for v in other)
    assert np.median(_measured(rbbb, "qrs")) >= 120
    assert np.median(_measured(not_rbbb, "qrs")) < 110


def test_an_assumed_millivolt_scale_reports_times_but_no_amplitudes(
    data_dir: Path, ptbxl_dir: Path
) -> None:
    """A QT Database excerpt with ADC gain 0 (read at WFDB's default scale): intervals and
    rate are measured, amplitudes are not, and the quality report says why. The same
    12-lead PTB-XL record with and without an assumed scale differs only in the amplitudes."""
    from dataclasses import replace

    from models.measurement_specs import SCALE_DEPENDENT_KEYS
    from models.quality import assess_quality

    assert {"r_amplitude", "st_j60", "sokolow_lyon", "p_terminal_force_v1"} <= SCALE_DEPENDENT_KEYS
    assert {
        "pacing_spike_count",
        "paced_beat_share",
    } <= SCALE_DEPENDENT_KEYS  # an absolute threshold
    assert not SCALE_DEPENDENT_KEYS & {"qrs", "qt", "pr", "heart_rate", "axis"}
    holter = load_ecg(data_dir / "qtdb" / "sel820.hea")
    assert holter.amplitude_assumed is not None
    values = _values(holter)
    assert values["heart_rate"] is not None and values["qrs"] is not None
    assert all(values[key] is None for key in SCALE_DEPENDENT_KEYS)
    assert any("amplitude uncalibrated" in r for r in assess_quality(holter).reasons)

    given = load_ecg(ptbxl_dir / "records500" / "00000" / "00001_hr.hea")
    assumed = replace(given, amplitude_assumed="uncalibrated: test")
    on_scale, off_scale = measure(given), measure(assumed)
    assert all(
        on_scale[k].value is not None for k in ("r_amplitude", "sokolow_lyon", "pacing_spike_count")
    )
    for key, measurement in off_scale.items():
        if key in SCALE_DEPENDENT_KEYS:
            assert measurement.value is None and not measurement.per_lead, key
        else:
            assert measurement.value == on_scale[key].value, key
    assert not any("amplitude" in r for r in assess_quality(given).reasons)
