"""The label catalog: schema validation, code provenance, coverage, free-text labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from models.catalog import (
    PTBXL_SUPERCLASSES,
    SCP_SYSTEM,
    SNOMED_SYSTEM,
    CatalogError,
    LabelCatalog,
    load_catalog,
    ptbxl_statements_with_superclasses,
    snomed_to_label_ids,
)

#: Codes sourced from the FHIR R4 ECG examples rather than the CinC mapping tables.
FHIR_EXAMPLE_SNOMED = {"164854000": "ECG normal"}

#: Conditions the product must cover (the cards' critical findings and the common rhythms), by
#: catalog id.
REQUIRED_IDS = {
    "normal_ecg", "myocardial_infarction", "st_t_change", "conduction_disturbance", "hypertrophy",
    "sinus_rhythm", "sinus_bradycardia", "sinus_tachycardia", "sinus_arrhythmia",
    "atrial_fibrillation", "atrial_flutter", "supraventricular_tachycardia",
    "premature_atrial_complexes", "premature_ventricular_complexes", "ventricular_tachycardia",
    "paced_rhythm", "first_degree_av_block", "second_degree_av_block", "complete_heart_block",
    "left_bundle_branch_block", "right_bundle_branch_block",
    "incomplete_right_bundle_branch_block", "left_anterior_fascicular_block",
    "left_posterior_fascicular_block", "wpw", "left_ventricular_hypertrophy",
    "right_ventricular_hypertrophy", "left_atrial_enlargement", "right_atrial_enlargement",
    "acute_st_elevation", "anterior_mi", "inferior_mi", "lateral_mi", "st_depression",
    "t_wave_inversion", "t_wave_abnormality", "prolonged_qt", "very_prolonged_qt",
    "low_qrs_voltage", "left_axis_deviation", "right_axis_deviation",
}  # fmt: skip
#: Labels that must raise critical alerts: STEMI, complete heart block, VT, very long QT.
REQUIRED_CRITICAL = {
    "acute_st_elevation", "complete_heart_block", "ventricular_tachycardia", "very_prolonged_qt",
}  # fmt: skip


@pytest.fixture(scope="session")
def catalog() -> LabelCatalog:
    return load_catalog()


@pytest.fixture(scope="session")
def cinc_snomed(cinc_dir: Path) -> dict[str, str]:
    """SNOMED code -> name from every CinC mapping table in the shared data."""
    names: dict[str, str] = {}
    tables = [
        (cinc_dir / "dx_mapping_scored.csv", "SNOMED CT Code"),
        (cinc_dir / "dx_mapping_unscored.csv", "SNOMED CT Code"),
        (cinc_dir / "cinc2021_more" / "scored_diagnoses_2021.csv", "SNOMEDCTCode"),
    ]
    for path, column in tables:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                names.setdefault(row[column].strip(), row["Dx"].strip())
    return names


@pytest.fixture(scope="session")
def scp_table(ptbxl_dir: Path) -> dict[str, dict[str, str]]:
    with (ptbxl_dir / "scp_statements.csv").open(newline="") as f:
        return {row[""]: row for row in csv.DictReader(f)}


def test_shipped_catalog_loads_with_unique_ids_and_prompt_ensembles(catalog: LabelCatalog) -> None:
    assert len(catalog) == len(set(catalog.ids)) >= 40
    for label in catalog:
        assert 2 <= len(label.prompts) <= 5, label.id
        assert len(set(label.prompts)) == len(label.prompts), label.id
        assert label.text == label.prompts[0]


def test_required_conditions_are_covered(catalog: LabelCatalog) -> None:
    assert set(catalog.ids) >= REQUIRED_IDS, REQUIRED_IDS - set(catalog.ids)


def test_critical_labels_are_the_life_threatening_ones(catalog: LabelCatalog) -> None:
    critical = {label.id for label in catalog if label.severity == "critical"}
    assert critical >= REQUIRED_CRITICAL
    # Only the required ones plus ventricular fibrillation: a critical card interrupts care.
    assert critical - REQUIRED_CRITICAL == {"ventricular_fibrillation"}
    for label_id in critical:
        threshold = catalog.get(label_id).critical_threshold
        assert threshold is not None and 0 < threshold < 1
    assert catalog.get("normal_ecg").severity == "normal"
    assert catalog.get("sinus_rhythm").severity == "normal"


def test_every_snomed_code_comes_from_the_cinc_tables(
    catalog: LabelCatalog, cinc_snomed: dict[str, str]
) -> None:
    known = {**cinc_snomed, **FHIR_EXAMPLE_SNOMED}
    n_codes = 0
    for label in catalog:
        for code in label.codes:
            if code.system != SNOMED_SYSTEM:
                continue
            n_codes += 1
            assert code.code in known, f"{label.id}: SNOMED {code.code} not in the CinC tables"
            # The display is the table's name, so a typo in the code shows up here.
            assert (code.display or "").lower() == known[code.code].lower(), (label.id, code)
    assert n_codes >= 40


def test_scp_codes_and_ptbxl_mappings_exist_in_the_statement_table(
    catalog: LabelCatalog, scp_table: dict[str, dict[str, str]]
) -> None:
    for label in catalog:
        for code in label.codes:
            if code.system == SCP_SYSTEM:
                assert code.code in scp_table, (label.id, code.code)
                assert code.display == scp_table[code.code]["description"], (label.id, code)
        for entry in label.ptbxl:
            assert entry in scp_table or entry in PTBXL_SUPERCLASSES, (label.id, entry)


def test_scored_cinc_diagnoses_map_to_labels(cinc_dir: Path) -> None:
    """Every diagnosis the CinC challenge scores can be evaluated against some label."""
    unmapped = {
        # "bradycardia" without a rhythm: no label claims it rather than mislabel it as sinus.
        "426627000",
    }
    with (cinc_dir / "dx_mapping_scored.csv").open(newline="") as f:
        scored = {row["SNOMED CT Code"]: row["Dx"] for row in csv.DictReader(f)}
    missing = {c: n for c, n in scored.items() if c not in unmapped and not snomed_to_label_ids(c)}
    assert not missing


def test_real_cinc_headers_map_to_labels(cinc_dir: Path) -> None:
    """Every CinC 2021 sample record's "# Dx:" SNOMED codes reach at least one label."""
    headers = sorted((cinc_dir / "cinc2021").glob("*.hea"))
    assert len(headers) >= 40
    for header in headers:
        dx = next(
            line for line in header.read_text().splitlines() if line.lstrip("# ").startswith("Dx:")
        )
        codes = [c.strip() for c in dx.split(":", 1)[1].split(",")]
        assert any(snomed_to_label_ids(c) for c in codes), f"{header.name}: {codes}"
    assert snomed_to_label_ids("164889003") == ["atrial_fibrillation"]
    assert snomed_to_label_ids("59118001") == ["right_bundle_branch_block"]
    assert snomed_to_label_ids("713427006") == ["right_bundle_branch_block"]


def test_ptbxl_superclass_expansion_on_real_records(
    catalog: LabelCatalog, ptbxl_dir: Path, scp_table: dict[str, dict[str, str]]
) -> None:
    diagnostic_class = {code: row["diagnostic_class"] for code, row in scp_table.items()}
    with (ptbxl_dir / "ptbxl_database.csv").open(newline="") as f:
        rows = {int(r["ecg_id"]): r for r in csv.DictReader(f)}
    # Record 8: IMI (superclass MI), ABQRS, SR.
    codes = json.loads(rows[8]["scp_codes"].replace("'", '"'))
    statements = ptbxl_statements_with_superclasses(codes, diagnostic_class)
    assert {"IMI", "MI", "SR"} <= statements
    assert catalog.get("inferior_mi").is_ptbxl_positive(statements) is True
    assert catalog.get("myocardial_infarction").is_ptbxl_positive(statements) is True
    assert catalog.get("normal_ecg").is_ptbxl_positive(statements) is False
    assert catalog.get("ventricular_tachycardia").is_ptbxl_positive(statements) is None


def test_from_texts_builds_info_labels_with_unique_slugs() -> None:
    catalog = LabelCatalog.from_texts(
        ["Hyperkalaemia with peaked T waves", "  hyperkalaemia with PEAKED t-waves ", "Brugada"]
    )
    assert catalog.ids == (
        "hyperkalaemia_with_peaked_t_waves",
        "hyperkalaemia_with_peaked_t_waves_2",
        "brugada",
    )
    label = catalog.get("brugada")
    assert label.prompts == ("Brugada",) and label.severity == "info" and label.codes == ()
    assert label.calibration is None


@pytest.mark.parametrize(
    ("texts", "message"),
    [([""], "empty"), (["x" * 301], "301 characters"), ("atrial fibrillation", "not one string")],
)
def test_from_texts_rejects_bad_input_clearly(texts: list[str], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        LabelCatalog.from_texts(texts)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.yaml"
    path.write_text(text)
    return path


GOOD_LABEL = """
  - id: af
    name: AF
    severity: warning
    prompts: [atrial fibrillation, irregularly irregular rhythm]
    codes: [{system: snomed, code: 164889003, display: Atrial fibrillation}]
"""


def test_custom_catalog_file_loads(tmp_path: Path) -> None:
    catalog = load_catalog(_write(tmp_path, "labels:" + GOOD_LABEL))
    (label,) = catalog.labels
    # An unquoted code is read as an int by YAML; the loader keeps it as SNOMED text.
    assert label.codes[0].code == "164889003" and label.codes[0].system == SNOMED_SYSTEM


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (GOOD_LABEL.replace("severity: warning", "severity: urgent"), ["'af'", "severity"]),
        (GOOD_LABEL.replace(", irregularly irregular rhythm", ""),
         ["'af'", "prompts", "at least 2"]),
        (GOOD_LABEL.replace("id: af", "id: Atrial Fib"), ["'Atrial Fib'", "id", "pattern"]),
        (GOOD_LABEL + GOOD_LABEL, ["label #2", "duplicate label id 'af'"]),
        (GOOD_LABEL.replace("system: snomed", "system: icd"), ["'af'", "codes.0.system", "icd"]),
        (GOOD_LABEL.replace("name: AF", "name: AF\n    colour: red"), ["'af'", "colour"]),
        (GOOD_LABEL.replace("prompts:", "calibration: {slope: x, intercept: 0}\n    prompts:"),
         ["'af'", "calibration.slope"]),
    ],
)  # fmt: skip
def test_schema_errors_name_file_label_and_problem(
    tmp_path: Path, body: str, expected: list[str]
) -> None:
    path = _write(tmp_path, "labels:" + body)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, message


def test_unreadable_or_malformed_files_raise_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.yaml")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(_write(tmp_path, "labels: [unclosed"))
    with pytest.raises(CatalogError, match="labels"):
        load_catalog(_write(tmp_path, "- just a list"))
