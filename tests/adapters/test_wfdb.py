"""WFDB records (PTB-XL, CinC challenge .mat, MIT-BIH, PTB) and CPSC 2018 originals.

The reference for every signal is ``wfdb.rdrecord`` / ``scipy.io.loadmat`` on the same
files: the adapter must agree with the plain library read, in millivolts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import wfdb

from adapters import STANDARD_LEADS, EcgFormatError, load_ecg

#: One or two records from every WFDB folder in the shared data.
SAMPLE_RECORDS = [
    "ptbxl/records100/00000/00001_lr",
    "ptbxl/records500/00000/00001_hr",
    "ptbxl/records500/00000/00500_hr",
    "cinc/cinc2021/E07500",
    "cinc/cinc2021/JS20000",
    "cinc/cinc2021/HR06000",
    "cinc/cinc2021_more/smoke_data/CPSC_CPSC-Extra/Q0001",
    "cinc/cinc2021_more/smoke_data/ChapmanShaoxing_Ningbo/JS45542",
    "cinc/cinc2021_more/smoke_data/G12EC/E00001",
    "cinc/cinc2021_more/smoke_data/PTB_PTBXL/S0001",
    "cinc/cinc2021_more/smoke_data/PTB_PTBXL/HR00001",
    "cinc/cinc2020_more/Q0017",
    "cinc/cpsc2018_a0001_a0010/A0001",
    "formats/wfdb/s0010_re",
    "formats/wfdb/100",
]


def _reference_mv(record_path: Path) -> tuple[np.ndarray, wfdb.Record]:
    record = wfdb.rdrecord(str(record_path))
    scale = {"mv": 1.0, "uv": 1e-3, "v": 1e3}
    factors = np.array([scale[u.lower()] for u in record.units])
    return (record.p_signal * factors).T, record


@pytest.mark.parametrize("relative", SAMPLE_RECORDS)
def test_wfdb_matches_rdrecord(data_dir: Path, relative: str) -> None:
    path = data_dir / relative
    ecg = load_ecg(path)
    expected, record = _reference_mv(path)
    assert ecg.source.format == "wfdb"
    assert ecg.fs == pytest.approx(float(record.fs))
    assert ecg.signal.shape == expected.shape
    assert ecg.signal.dtype == np.float32
    np.testing.assert_allclose(ecg.signal, expected, atol=1e-5)


def test_ptbxl_has_the_standard_leads_at_both_rates(ptbxl_dir: Path) -> None:
    low = load_ecg(ptbxl_dir / "records100/00000/00001_lr.hea")
    high = load_ecg(ptbxl_dir / "records500/00000/00001_hr.hea")
    assert low.leads == STANDARD_LEADS and high.leads == STANDARD_LEADS
    assert (low.fs, low.n_samples) == (100.0, 1000)
    assert (high.fs, high.n_samples) == (500.0, 5000)
    assert low.duration_s == pytest.approx(10.0)


def test_ptb_record_keeps_frank_leads_and_comments(formats_dir: Path) -> None:
    ecg = load_ecg(formats_dir / "wfdb/s0010_re")
    assert ecg.leads == (*STANDARD_LEADS, "vx", "vy", "vz")
    assert ecg.fs == 1000.0 and ecg.n_samples == 38400
    assert "Reason for admission: Myocardial infarction" in ecg.statements
    assert ecg.extra["sex"] == "female"


def test_mitbih_two_leads_at_360_hz(formats_dir: Path) -> None:
    ecg = load_ecg(formats_dir / "wfdb/100.dat")  # the signal file path finds its header
    assert ecg.leads == ("II", "V5")  # MLII: a modified lead II, read as II (alias kept)
    assert ecg.fs == 360.0
    assert ecg.n_samples == 650000
    # MIT-BIH ADC gain is 200/mV: a normal ECG stays within a few millivolts.
    assert 0.5 < float(np.abs(ecg.signal).max()) < 10.0


def test_cinc_snomed_codes_age_sex_and_start_time(cinc_dir: Path) -> None:
    ecg = load_ecg(cinc_dir / "cinc2021_more/smoke_data/PTB_PTBXL/S0001.mat")
    assert ecg.fs == 1000.0
    assert ecg.diagnosis_codes == (
        "http://snomed.info/sct|251146004",
        "http://snomed.info/sct|426783006",
    )
    assert ecg.extra["age"] == "81" and ecg.extra["sex"] == "Female"
    # The CinC header writes "15-May-2020 15:22:05" (date first), which wfdb mis-parses.
    assert ecg.start_time is not None
    assert ecg.start_time.isoformat() == "2020-05-15T15:22:05"
    assert not any("Unknown" in s for s in ecg.statements)


def test_early_cpsc_text_diagnosis_becomes_a_statement(cinc_dir: Path) -> None:
    ecg = load_ecg(cinc_dir / "cpsc2018_a0001_a0010/A0001")
    assert "Dx: RBBB" in ecg.statements
    assert ecg.diagnosis_codes == ()


def test_georgia_header_with_extension_in_record_name(cinc_dir: Path) -> None:
    header = cinc_dir / "cinc2021/E00666.hea"
    assert header.read_text().split()[0] == "E00666.mat"  # the quirk under test
    ecg = load_ecg(header)
    mat = scipy.io.loadmat(str(cinc_dir / "cinc2021/E00666.mat"))["val"]
    signal_lines = [ln.split() for ln in header.read_text().splitlines()[1:13]]
    gains = np.array([float(tokens[2].split("/")[0]) for tokens in signal_lines])
    baselines = np.array([float(tokens[4]) for tokens in signal_lines])
    expected = (mat - baselines[:, None]) / gains[:, None]
    np.testing.assert_allclose(ecg.signal, expected, atol=1e-6)
    assert "http://snomed.info/sct|164934002" in ecg.diagnosis_codes


@pytest.mark.slow
def _uncalibrated(header: Path) -> bool:
    """Whether a signal line gives an ADC gain of 0 (WFDB header(5): uncalibrated)."""
    lines = [ln.split() for ln in header.read_text().splitlines()[1:] if ln.strip()]
    return any(len(t) > 2 and not t[0].startswith("#") and t[2] == "0" for t in lines)


def test_every_wfdb_record_in_the_shared_data_loads(data_dir: Path) -> None:
    headers = sorted(data_dir.rglob("*.hea"))
    assert len(headers) > 1000
    uncalibrated = [header for header in headers if _uncalibrated(header)]
    assert len(uncalibrated) == 10  # QT Database excerpts (sel820, sel14157, ...): gain 0
    for header in uncalibrated:  # every channel at WFDB's default gain, and said so
        ecg = load_ecg(header)
        assert ecg.amplitude_assumed is not None and "200 units per mV" in ecg.amplitude_assumed
        assert ecg.fs == 250.0 and float(np.abs(ecg.signal).max()) < 30.0, header
    for header in sorted(set(headers) - set(uncalibrated)):
        ecg = load_ecg(header)
        assert ecg.amplitude_assumed is None, header
        # 250 Hz: the QT Database (two-lead Holter excerpts with cardiologist boundaries).
        assert ecg.fs in (100.0, 250.0, 360.0, 500.0, 1000.0), header
        assert float(np.abs(ecg.signal).max()) < 30.0, header


def test_bytes_alone_are_refused_with_a_hint(ptbxl_dir: Path) -> None:
    data = (ptbxl_dir / "records100/00000/00001_lr.hea").read_bytes()
    with pytest.raises(EcgFormatError, match="pass the path"):
        load_ecg(data)


def test_cinc_mat_without_header_is_explained(cinc_dir: Path, tmp_path: Path) -> None:
    lone = tmp_path / "E07500.mat"
    shutil.copy(cinc_dir / "cinc2021/E07500.mat", lone)
    with pytest.raises(EcgFormatError, match=r"without its \.hea"):
        load_ecg(lone)
    with pytest.raises(EcgFormatError, match="pass the path"):
        load_ecg(lone.read_bytes())


def _copy_record(src: Path, dst: Path) -> Path:
    for file in src.parent.glob(src.name + ".*"):
        shutil.copy(file, dst / file.name)
    return dst / src.name


def test_missing_signal_file(ptbxl_dir: Path, tmp_path: Path) -> None:
    shutil.copy(ptbxl_dir / "records100/00000/00001_lr.hea", tmp_path)
    with pytest.raises(EcgFormatError, match=r"00001_lr\.dat named by the header is missing"):
        load_ecg(tmp_path / "00001_lr")


def test_truncated_signal_file(ptbxl_dir: Path, tmp_path: Path) -> None:
    record = _copy_record(ptbxl_dir / "records100/00000/00001_lr", tmp_path)
    dat = record.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:10000])
    with pytest.raises(EcgFormatError, match="truncated"):
        load_ecg(record)


@pytest.mark.parametrize("fs_token", ["0", "-500", "abc"])
def test_absurd_sampling_rate(ptbxl_dir: Path, tmp_path: Path, fs_token: str) -> None:
    record = _copy_record(ptbxl_dir / "records100/00000/00001_lr", tmp_path)
    header = record.with_suffix(".hea")
    header.write_text(header.read_text().replace("00001_lr 12 100 ", f"00001_lr 12 {fs_token} "))
    with pytest.raises(EcgFormatError, match="sampling rate"):
        load_ecg(header)


def test_implausible_high_sampling_rate_rejected(ptbxl_dir: Path, tmp_path: Path) -> None:
    record = _copy_record(ptbxl_dir / "records100/00000/00001_lr", tmp_path)
    header = record.with_suffix(".hea")
    header.write_text(header.read_text().replace("00001_lr 12 100 ", "00001_lr 12 9000000 "))
    with pytest.raises(EcgFormatError, match="outside"):
        load_ecg(header)


@pytest.mark.parametrize(("unit", "to_mv"), [("uV", 1e-3), ("V", 1e3), ("mV", 1.0)])
def test_channel_units_are_converted_to_millivolts(
    ptbxl_dir: Path, tmp_path: Path, unit: str, to_mv: float
) -> None:
    """Write a real PTB-XL signal in another unit with wfdb itself, read it back in mV."""
    source = wfdb.rdrecord(str(ptbxl_dir / "records100/00000/00002_lr"))
    in_unit = source.p_signal / to_mv
    gain = 1000.0 * to_mv  # keep 1 uV resolution whatever the unit
    wfdb.wrsamp(
        "unit_test",
        fs=100,
        units=[unit] * 12,
        sig_name=source.sig_name,
        p_signal=in_unit,
        fmt=["32"] * 12,
        adc_gain=[gain] * 12,
        baseline=[0] * 12,
        write_dir=str(tmp_path),
    )
    ecg = load_ecg(tmp_path / "unit_test.hea")
    np.testing.assert_allclose(ecg.signal, source.p_signal.T, atol=2e-3)


def test_missing_samples_are_reported(ptbxl_dir: Path, tmp_path: Path) -> None:
    source = wfdb.rdrecord(str(ptbxl_dir / "records100/00000/00002_lr"), physical=False)
    digital = source.d_signal.copy()
    digital[100:110, 3] = -32768  # WFDB's invalid-sample marker for format 16
    wfdb.wrsamp(
        "gaps",
        fs=100,
        units=["mV"] * 12,
        sig_name=source.sig_name,
        d_signal=digital,
        fmt=["16"] * 12,
        adc_gain=source.adc_gain,
        baseline=source.baseline,
        write_dir=str(tmp_path),
    )
    with pytest.raises(EcgFormatError, match="channel AVR has 10 missing samples"):
        load_ecg(tmp_path / "gaps")


def test_cpsc2018_struct_matches_loadmat(cinc_dir: Path) -> None:
    path = cinc_dir / "cpsc2018/A1980.mat"
    ecg = load_ecg(path)
    struct = scipy.io.loadmat(str(path))["ECG"][0, 0]
    assert ecg.source.format == "cpsc2018-mat"
    assert ecg.leads == STANDARD_LEADS and ecg.fs == 500.0
    np.testing.assert_allclose(ecg.signal, struct["data"], atol=1e-6)
    assert ecg.extra["units"] == "mV"
    assert ecg.extra["sex"] == str(struct["sex"][0])
    assert ecg.extra["age"] == str(int(struct["age"][0, 0]))


def test_cpsc2018_all_originals_are_millivolts(cinc_dir: Path) -> None:
    for path in sorted((cinc_dir / "cpsc2018").glob("*.mat")):
        ecg = load_ecg(path.read_bytes(), name=path.name)
        assert ecg.extra["units"] == "mV"
        # A QRS complex is 0.5-5 mV; a whole-record peak outside that means a scale error.
        assert 0.3 < float(np.abs(ecg.signal).max()) < 10.0


def test_other_matlab_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.mat"
    scipy.io.savemat(str(path), {"x": np.arange(10.0)})
    with pytest.raises(EcgFormatError, match="CPSC 2018 struct"):
        load_ecg(path)


SPH_DIR = "cinc2021_more/smoke_data/SPH"


def test_sph_hdf5_matches_h5py_and_metadata(cinc_dir: Path) -> None:
    import csv

    import h5py

    folder = cinc_dir / SPH_DIR
    with (folder / "metadata.csv").open(newline="") as handle:
        rows = {row["ECG_ID"]: row for row in csv.DictReader(handle)}
    for path in sorted(folder.glob("*.h5")):
        ecg = load_ecg(path)
        with h5py.File(path, "r") as handle:
            expected = handle["ecg"][()].astype(np.float32)
        assert ecg.source.format == "sph-hdf5"
        assert ecg.leads == STANDARD_LEADS and ecg.fs == 500.0
        np.testing.assert_array_equal(ecg.signal, expected)
        row = rows.get(path.name)
        if row is None:  # SPH00005 has no metadata row
            assert ecg.diagnosis_codes == () and "default" in ecg.extra["fs_source"]
            continue
        assert ecg.n_samples == int(row["N"])
        assert ecg.patient_id == row["Patient_ID"]
        codes = {f"http://snomed.info/sct|{c.strip()}" for c in row["SNOMEDCTCode"].split(",")}
        assert set(ecg.diagnosis_codes) == codes


def test_hdf5_without_ecg_dataset_is_refused(tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle["x"] = np.zeros(3)
    with pytest.raises(EcgFormatError, match="without an 'ecg' dataset"):
        load_ecg(path)


@pytest.mark.parametrize("name", ["../secret.dat", "/etc/passwd", "sub/00001_lr.dat"])
def test_signal_file_outside_the_folder_is_refused(
    ptbxl_dir: Path, tmp_path: Path, name: str
) -> None:
    record = _copy_record(ptbxl_dir / "records100/00000/00001_lr", tmp_path)
    header = record.with_suffix(".hea")
    header.write_text(header.read_text().replace("00001_lr.dat ", f"{name} "))
    with pytest.raises(EcgFormatError, match="outside the record's folder"):
        load_ecg(header)


def test_signal_lines_without_a_description(formats_dir: Path, tmp_path: Path) -> None:
    # The description is optional in a WFDB signal line (header(5)); wfdb gives None for
    # it. Before: "unreadable (AttributeError: 'NoneType' object has no attribute 'strip')".
    original = load_ecg(formats_dir / "wfdb/100")
    shutil.copy(formats_dir / "wfdb/100.dat", tmp_path)
    lines = (formats_dir / "wfdb/100.hea").read_text().splitlines()
    signal_lines = [line for line in lines if line.startswith("100.dat")]
    unnamed = [" ".join(line.split()[:8]) for line in signal_lines]
    (tmp_path / "100.hea").write_text("\n".join(["100 2 360 650000", *unnamed]) + "\n")
    ecg = load_ecg(tmp_path / "100.hea")
    assert ecg.leads == ("ch1", "ch2")
    np.testing.assert_array_equal(ecg.signal, original.signal)


@pytest.mark.parametrize(
    ("field", "bad"),
    [("11", "-1"), ("11", "1.5"), ("1024", "nan"), ("200", "200(1.5)/mV"), ("995", "1e308")],
)
def test_a_malformed_signal_field_is_named_not_swallowed_into_the_lead_name(
    formats_dir: Path, tmp_path: Path, field: str, bad: str
) -> None:
    """wfdb's signal-line pattern backs off its optional fields: "-1" as the ADC resolution
    made the lead "-22131 0 MLII" and lost its zero (every sample ~5 mV off), silently."""
    shutil.copy(formats_dir / "wfdb/100.dat", tmp_path)
    text = (formats_dir / "wfdb/100.hea").read_text()
    line = "100.dat 212 200 11 1024 995 -22131 0 MLII"
    assert line in text
    tokens = line.split()
    tokens[tokens.index(field)] = bad
    (tmp_path / "100.hea").write_text(text.replace(line, " ".join(tokens)))
    with pytest.raises(EcgFormatError, match=r"signal line 1 .*WFDB header format"):
        load_ecg(tmp_path / "100.hea")


@pytest.mark.parametrize("fmt", ["0", "999", "99999999999", "16x0"])
def test_an_unknown_signal_format_is_named(ptbxl_dir: Path, tmp_path: Path, fmt: str) -> None:
    """Before: "the WFDB record cannot be read (KeyError: '0')" or a ZeroDivisionError."""
    source = ptbxl_dir / "records500/00000/00001_hr"
    shutil.copy(source.with_suffix(".dat"), tmp_path)
    text = source.with_suffix(".hea").read_text()
    (tmp_path / "00001_hr.hea").write_text(text.replace("00001_hr.dat 16 ", f"00001_hr.dat {fmt} "))
    with pytest.raises(EcgFormatError, match=r"format|samples per frame") as info:
        load_ecg(tmp_path / "00001_hr.hea")
    assert "KeyError" not in str(info.value) and "ZeroDivision" not in str(info.value)
