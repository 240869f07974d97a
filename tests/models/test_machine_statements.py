"""GE 12SL machine statements as training facts, on the real PTB-XL and PTB-XL+ files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.data import RecordRef, ptbxl_records, read_scp_statements
from models.machine_statements import (
    add_machine_statements,
    machine_facts,
    read_machine_statements,
    stated,
)
from models.training import TrainArgs, index_data


@pytest.fixture(scope="module")
def labels_dir(data_dir: Path) -> Path:
    return data_dir / "ptbxl_plus" / "labels"


@pytest.fixture(scope="module")
def refs_pair(ptbxl_dir: Path, labels_dir: Path) -> tuple[list[RecordRef], list[RecordRef]]:
    refs = ptbxl_records(ptbxl_dir)
    return refs, add_machine_statements(refs, labels_dir, read_scp_statements(ptbxl_dir))


def _keys(refs: list[RecordRef], record_id: str) -> set[str]:
    (ref,) = [r for r in refs if r.record_id == record_id]
    return {f.key for f in ref.facts}


def test_training_records_gain_the_facts_12sl_states(
    refs_pair: tuple[list[RecordRef], list[RecordRef]], ptbxl_dir: Path, labels_dir: Path
) -> None:
    before, after = refs_pair
    table = read_machine_statements(labels_dir)
    statements = read_scp_statements(ptbxl_dir)
    # Record 2 (fold 2): 12SL says SBRAD, which is the cardiologists' fact key; the
    # parenthesised criteria names (SOKOLYON) and BORDE/QRSV add nothing.
    assert table["ptbxl:2"][0] == "SBRAD"
    assert [f.key for f in machine_facts(table["ptbxl:2"], statements)] == ["scp:SBRAD"]
    # ... and the cardiologists already stated it there: the union adds no duplicate.
    assert _keys(after, "ptbxl:2") == _keys(before, "ptbxl:2")
    # Record 24 (fold 3): the cardiologists say only sinus rhythm, 12SL "SBRAD ABR".
    assert "scp:SBRAD" not in _keys(before, "ptbxl:24")
    assert _keys(after, "ptbxl:24") - _keys(before, "ptbxl:24") == {"scp:SBRAD"}
    # Record 98 (fold 8): MSAR (already SARRH) and FAV -> first-degree AV block with its
    # diagnostic class and subclass, the same keys an SCP 1AVB carries.
    assert _keys(after, "ptbxl:98") - _keys(before, "ptbxl:98") == {
        "scp:1AVB",
        "class:CD",
        "sub:_AVB",
    }
    # Record 4 (fold 3): "with premature atrial complexes", "Rightward axis".
    assert {"scp:PAC", "axis:RAD"} <= _keys(after, "ptbxl:4") - _keys(before, "ptbxl:4")
    # Record 85 (fold 5): "Cannot rule out anterior infarct" is not an infarct.
    assert "CRO" in table["ptbxl:85"] and "AMI" in table["ptbxl:85"]
    assert "scp:AMI" not in _keys(after, "ptbxl:85")


def test_validation_and_test_records_get_nothing(
    refs_pair: tuple[list[RecordRef], list[RecordRef]], labels_dir: Path
) -> None:
    before, after = refs_pair
    table = read_machine_statements(labels_dir)
    # Record 72 (fold 9): 12SL says SBRAD, the cardiologists do not: it stays that way.
    assert "SBRAD" in table["ptbxl:72"]
    assert "scp:SBRAD" not in _keys(after, "ptbxl:72")
    held_out = [(b, a) for b, a in zip(before, after, strict=True) if b.split != "train"]
    assert len(held_out) > 100
    assert all(a is b for b, a in held_out)
    gained = [a for b, a in zip(before, after, strict=True) if a.facts != b.facts]
    assert len(gained) > 50 and all(r.split == "train" for r in gained)


def test_hedges_and_parentheses() -> None:
    assert stated(["SBRAD", "PO", "LAE", "CRO", "IMI", "AU", "AB"]) == ["SBRAD", "AU", "AB"]
    assert stated(["NSR", "LVH", "LPAREN", "RAVL", "COMMA", "SOKOLYON", "RPAREN"]) == [
        "NSR",
        "LVH",
    ]
    assert stated(["IMI", "MAFB", "FAV"]) == ["FAV"]


def test_train_args_option_and_its_errors(
    ptbxl_dir: Path, labels_dir: Path, tmp_path: Path
) -> None:
    plain = index_data(TrainArgs(data=ptbxl_dir))
    with_12sl = index_data(TrainArgs(data=ptbxl_dir, machine_statements=labels_dir))
    assert "scp:SBRAD" not in _keys(plain, "ptbxl:24")
    assert "scp:SBRAD" in _keys(with_12sl, "ptbxl:24")
    with pytest.raises(FileNotFoundError, match=r"12sl_statements\.csv"):
        index_data(TrainArgs(data=ptbxl_dir, machine_statements=tmp_path))
    # The statements without the 12SL statement list: the table cannot be checked.
    shutil.copy(labels_dir / "12sl_statements.csv", tmp_path / "12sl_statements.csv")
    with pytest.raises(FileNotFoundError, match="mapping"):
        index_data(TrainArgs(data=ptbxl_dir, machine_statements=tmp_path))
    bad = tmp_path / "bad"
    (bad / "mapping").mkdir(parents=True)
    shutil.copy(labels_dir / "mapping" / "12slv23ToSNOMED.csv", bad / "mapping")
    (bad / "12sl_statements.csv").write_text("ecg_id,statements\n24,SBRAD\n")
    with pytest.raises(ValueError, match="line 2"):
        index_data(TrainArgs(data=ptbxl_dir, machine_statements=bad))
    with pytest.raises(ValueError, match="PTB-XL folder"):
        index_data(TrainArgs(data=data_folder_of_files(ptbxl_dir), machine_statements=labels_dir))


def data_folder_of_files(ptbxl_dir: Path) -> Path:
    """A folder of ECG files (not a PTB-XL layout): the first records500 subfolder."""
    return sorted((ptbxl_dir / "records500").iterdir())[0]
