"""Which labels a record speaks for: one that states no rhythm is not a rhythm negative."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.catalog import load_catalog
from models.labelled import LabelledRecord, labelled_records, rhythm_labels


@pytest.fixture(scope="module")
def ptbxl(ptbxl_dir: Path) -> dict[str, LabelledRecord]:
    return {r.name: r for r in labelled_records(ptbxl_dir, load_catalog(), split="train")}


@pytest.fixture(scope="module")
def cpsc(cinc_dir: Path) -> dict[str, LabelledRecord]:
    return {r.name: r for r in labelled_records(cinc_dir, load_catalog(), sources=("CPSC 2018",))}


def test_rhythm_labels_are_those_of_scp_rhythm_statements() -> None:
    rhythms = rhythm_labels(load_catalog())
    assert {"sinus_rhythm", "sinus_bradycardia", "atrial_fibrillation", "paced_rhythm"} <= rhythms
    assert not {"normal_ecg", "first_degree_av_block", "left_axis_deviation"} & rhythms


def test_ptbxl_record_without_a_rhythm_statement_is_not_a_rhythm_negative(
    ptbxl: dict[str, LabelledRecord],
) -> None:
    unstated = ptbxl["ptbxl:309"]  # fold 2: NORM alone, no rhythm statement
    assert "sinus_rhythm" not in unstated.assessed
    assert "atrial_fibrillation" not in unstated.assessed
    assert "normal_ecg" in unstated.assessed and "normal_ecg" in unstated.positives
    brady = ptbxl["ptbxl:2"]  # fold 2: NORM, SBRAD: a stated rhythm, so a sinus-rhythm negative
    assert "sinus_rhythm" in brady.assessed and "sinus_rhythm" not in brady.positives
    assert "sinus_bradycardia" in brady.positives


def test_cpsc_record_labelled_for_st_depression_alone_is_not_a_rhythm_negative(
    cpsc: dict[str, LabelledRecord],
) -> None:
    st_only = cpsc["A0008"]  # CPSC 2018 reference: STD alone
    assert "st_depression" in st_only.positives
    assert "sinus_rhythm" not in st_only.assessed
    assert "st_depression" in st_only.assessed
    af = cpsc["A0003"]  # AF: a stated rhythm, a sinus-rhythm negative
    assert "atrial_fibrillation" in af.positives
    assert "sinus_rhythm" in af.assessed and "sinus_rhythm" not in af.positives
    normal = cpsc["A0002"]  # "Normal" (SNR): sinus rhythm
    assert "sinus_rhythm" in normal.positives and "sinus_rhythm" in normal.assessed


def test_fascicular_block_leaves_its_implied_axis_unassessed(
    ptbxl: dict[str, LabelledRecord],
) -> None:
    stated_block = ptbxl["ptbxl:424"]  # fold 5: CRBBB, LAFB; heart_axis "LAD" (-30 to +30)
    assert "left_anterior_fascicular_block" in stated_block.positives
    assert "left_axis_deviation" not in stated_block.assessed
    both = ptbxl["ptbxl:103"]  # fold 4: LAFB with heart_axis "ALAD": stated, so positive
    assert "left_axis_deviation" in both.assessed and "left_axis_deviation" in both.positives
