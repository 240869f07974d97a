"""Training and evaluation data: record indexes (metadata only) and lazily loaded signals.

An index is a list of :class:`RecordRef` (an id, where the signal is, the English facts and
the split); signals are read from disk one record at a time when a batch needs them, so
the same code trains on our 500 PTB-XL records, the full 21,837, or a hospital archive of
millions (only the index, a few hundred bytes per record, is held in memory; preprocessed
signals are kept in a bounded LRU cache).

Two layouts are understood:

* **PhysioNet PTB-XL** (``ptbxl_database.csv`` + ``scp_statements.csv`` + ``records100/``
  or ``records500/``): facts from the SCP statements and the descriptive columns;
  ``strat_fold`` 1-8 train, 9 validation, 10 test (the field's convention).
* **A folder of ECG files** in any format :func:`adapters.load_ecg` reads, with report texts
  either in a CSV (``file,report[,split]``) or inside the files (MUSE/Philips statements).
  Without a ``split`` column a stable hash of the file name assigns 80/10/10.
"""

from __future__ import annotations

import csv
import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from adapters import Ecg, load_ecg
from models.config import EcgClipConfig
from models.preprocessing import standardise_signal
from models.text import Fact, ptbxl_facts, report_facts

Split = str  # "train" | "val" | "test"
COMPANION_SUFFIXES = {".dat", ".mat", ".atr", ".xyz", ".hea~", ".csv", ".txt", ".md", ".json"}


@dataclass(frozen=True)
class RecordRef:
    """One training/evaluation record: where its signal is and what is stated about it."""

    record_id: str
    path: Path
    facts: tuple[Fact, ...]
    split: Split


def is_ptbxl_layout(root: Path) -> bool:
    return (root / "ptbxl_database.csv").is_file() and (root / "scp_statements.csv").is_file()


def read_scp_statements(root: Path) -> dict[str, dict[str, object]]:
    with (root / "scp_statements.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        first = reader.fieldnames[0] if reader.fieldnames else ""
        return {row[first]: dict(row) for row in reader}


def fold_split(
    fold: int, val_folds: Sequence[int] = (9,), test_folds: Sequence[int] = (10,)
) -> Split:
    return "test" if fold in test_folds else "val" if fold in val_folds else "train"


def ptbxl_records(root: Path, rate: int = 500, require_signal: bool = True) -> list[RecordRef]:
    """Index a PhysioNet PTB-XL folder (streams the CSV; signals are not read here).

    ``rate`` picks ``filename_hr`` (500 Hz) or ``filename_lr`` (100 Hz); either way the
    model's own preprocessing resamples, so training matches inference.
    """
    root = Path(root)
    statements = read_scp_statements(root)
    column = "filename_hr" if rate == 500 else "filename_lr"
    refs: list[RecordRef] = []
    with (root / "ptbxl_database.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            path = root / row[column]
            if require_signal and not path.with_suffix(".hea").is_file():
                continue
            refs.append(
                RecordRef(
                    record_id=f"ptbxl:{int(float(row['ecg_id']))}",
                    path=path,
                    facts=tuple(ptbxl_facts(row, statements)),
                    split=fold_split(int(float(row["strat_fold"]))),
                )
            )
    return refs


def hash_split(name: str) -> Split:
    bucket = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


def _signal_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if (
            path.is_file()
            and path.suffix.lower() not in COMPANION_SUFFIXES
            and not path.name.startswith(".")
        ):
            yield path


def folder_records(folder: Path, reports_csv: Path | None = None) -> list[RecordRef]:
    """Index a folder of ECG files with reports (a CSV ``file,report[,split]``, or in-file text)."""
    folder = Path(folder)
    refs: list[RecordRef] = []
    if reports_csv is not None:
        with Path(reports_csv).open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if "file" not in row or "report" not in row:
                    raise ValueError(
                        f"{reports_csv}: needs columns 'file' and 'report' (optional 'split')"
                    )
                facts = report_facts(row["report"] or "")
                if not facts:
                    continue
                split = (row.get("split") or "").strip() or hash_split(row["file"])
                refs.append(RecordRef(row["file"], folder / row["file"], tuple(facts), split))
        return refs
    for path in _signal_files(folder):
        try:
            ecg = load_ecg(path)
        except ValueError:
            continue  # not an ECG file: the folder may hold anything else
        facts = report_facts(ecg.statements)
        if facts:
            rel = str(path.relative_to(folder))
            refs.append(RecordRef(rel, path, tuple(facts), hash_split(rel)))
    return refs


def read_record(ref: RecordRef) -> Ecg:
    """The record's ECG, read as serving reads it (:func:`adapters.load_ecg`)."""
    return load_ecg(ref.path)


class SignalDataset(Dataset[tuple[torch.Tensor, int]]):
    """Preprocessed signals (12, samples at the model rate) by index, read lazily, LRU-cached."""

    def __init__(
        self, refs: Sequence[RecordRef], config: EcgClipConfig, cache_size: int = 20000
    ) -> None:
        self.refs = list(refs)
        self.config = config
        self.cache_size = cache_size
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.refs)

    def signal(self, index: int) -> np.ndarray:
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached.astype(np.float32)
        x, _, _ = standardise_signal(read_record(self.refs[index]), self.config)
        if self.cache_size > 0:
            self._cache[index] = x.astype(np.float16)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return x

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.signal(index)), index


def fit_window(x: np.ndarray, length: int, rng: np.random.Generator | None) -> np.ndarray:
    """Crop (random offset when ``rng`` is given, else centred) or zero-pad to ``length``."""
    n = x.shape[1]
    if n == length:
        return x
    if n < length:
        out = np.zeros((x.shape[0], length), dtype=np.float32)
        out[:, :n] = x
        return out
    start = int(rng.integers(0, n - length + 1)) if rng is not None else (n - length) // 2
    return x[:, start : start + length]
