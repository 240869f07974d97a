"""Zero-shot classification on real records in every sample format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapters import load_ecg
from models.catalog import load_catalog
from models.classifier import ZeroShotClassifier

SAMPLE_FILES = [
    "../ptbxl/records500/00000/00009_hr.hea",
    "../ptbxl/records100/00000/00009_lr.hea",
    "../cinc/cinc2021/E07500.hea",
    "../cinc/cpsc2018/A1980.mat",
    "dicom/pydicom_waveform_ecg.dcm",
    "hl7_aecg/Example_aECG_HL7_2003-12.xml",
    "ge_muse_xml/muse-sinus.xml",
    "philips_xml/129DYPRG.XML",
    "wfdb/s0010_re.hea",
]


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_classify_every_format(
    classifier: ZeroShotClassifier, formats_dir: Path, name: str
) -> None:
    ecg = load_ecg(formats_dir / name)
    [result] = classifier.classify([ecg])
    assert result.model_version == classifier.model_version
    if not result.quality.acceptable:
        assert result.scores == () and result.quality.reasons
        return
    catalog = classifier.catalog
    assert {s.label_id for s in result.scores} == set(catalog.ids)
    probs = [s.probability for s in result.scores]
    assert probs == sorted(probs, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probs)
    for score in result.scores:
        label = catalog.get(score.label_id)
        assert score.severity == label.severity and score.codes == label.codes
        assert -1.0 <= score.similarity <= 1.0


def test_free_text_labels_are_uncalibrated_info_slugs(
    classifier: ZeroShotClassifier, ptbxl_dir: Path
) -> None:
    ecg = load_ecg(ptbxl_dir / "records500/00000/00009_hr.hea")
    [result] = classifier.classify(ecg, ["Sinus bradycardia with first degree AV block", "LBBB"])
    ids = {s.label_id for s in result.scores}
    assert ids == {"sinus_bradycardia_with_first_degree_av_block", "lbbb"}
    assert all(s.severity == "info" and not s.calibrated and s.codes == () for s in result.scores)


def test_batch_equals_one_by_one(classifier: ZeroShotClassifier, ptbxl_dir: Path) -> None:
    ecgs = [load_ecg(ptbxl_dir / f"records500/00000/{i:05d}_hr.hea") for i in (9, 38, 40)]
    batch = classifier.classify(ecgs)
    for ecg, res in zip(ecgs, batch, strict=True):
        [single] = classifier.classify([ecg])
        a = {s.label_id: s.probability for s in single.scores}
        b = {s.label_id: s.probability for s in res.scores}
        assert a.keys() == b.keys()
        assert np.allclose([a[k] for k in a], [b[k] for k in a], atol=1e-5)


def test_catalog_labels_fitted_on_validation_are_calibrated(
    classifier: ZeroShotClassifier, ptbxl_dir: Path
) -> None:
    [result] = classifier.classify(load_ecg(ptbxl_dir / "records500/00000/00009_hr.hea"))
    calibrated = {s.label_id for s in result.scores if s.calibrated}
    assert "normal_ecg" in calibrated and "sinus_rhythm" in calibrated
    # Catalog object passed explicitly gives the same label set as the default.
    [again] = classifier.classify(
        load_ecg(ptbxl_dir / "records500/00000/00009_hr.hea"), load_catalog()
    )
    assert [s.label_id for s in again.scores] == [s.label_id for s in result.scores]


def test_flat_line_is_rejected_without_scores(
    classifier: ZeroShotClassifier, ptbxl_dir: Path
) -> None:
    ecg = load_ecg(ptbxl_dir / "records500/00000/00009_hr.hea")
    flat = ecg.with_signal(np.zeros_like(ecg.signal), ecg.leads)
    [result] = classifier.classify([flat])
    assert not result.quality.acceptable and result.scores == ()


def test_to_dict_is_asdict_and_round_trips(
    classifier: ZeroShotClassifier, formats_dir: Path, ptbxl_dir: Path
) -> None:
    """The written-out ``to_dict`` is ``dataclasses.asdict`` (a field added to a result
    dataclass and not to ``to_dict`` fails here), and ``from_dict`` restores the result."""
    from dataclasses import asdict

    from models.results import ClassificationResult

    flat = load_ecg(formats_dir / "wfdb/s0010_re.hea")
    ecgs = [load_ecg(ptbxl_dir / f"records500/00000/{i:05d}_hr.hea") for i in (9, 38)]
    results = classifier.classify([*ecgs, flat], ["LBBB"]) + classifier.classify(ecgs)
    assert any(r.scores and r.measurements for r in results)
    for result in results:
        assert result.to_dict() == asdict(result)
        assert ClassificationResult.from_dict(result.to_dict()) == result
