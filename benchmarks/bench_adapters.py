"""How fast the adapters read each format, against the plain library read of the same file.

For every format: the median wall time of ``load_ecg`` per record, records per second, and
the ratio to the plain library read that produces the same samples with the least work
(``wfdb.rdrecord``; ``pydicom.dcmread`` + ``waveform_array`` of every group;
``json.loads`` + parsing the SampledData numbers; ``sierraecg.read_file`` for Philips;
``scipy.io.loadmat``; ``h5py``). The adapter does more than the plain read (unit
conversion, lead names, metadata, a SHA-256 of the input, validation of the record). The
target is at most 1.5x the plain read.

Run: ``.venv/bin/python benchmarks/bench_adapters.py [--repeats 15] [--data ../shared/data]``.
Times are CPU seconds of this process (``time.process_time``), not wall time, because the
development machine is shared and wall time mostly measured the wait for a core. Adapter
and baseline calls alternate on the same warm files; medians per file are reported.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adapters import load_ecg, to_dicom_bytes, to_fhir_observation

REPO = Path(__file__).resolve().parent.parent
Input = Path | bytes


@dataclass
class Case:
    name: str
    inputs: list[Input]
    baseline_name: str | None = None
    baseline: Callable[[Input], object] | None = None


def _wfdb(item: Input) -> object:
    import wfdb

    assert isinstance(item, Path)
    return wfdb.rdrecord(str(item.with_suffix("")))


def _dicom(item: Input) -> object:
    import pydicom

    data = item.read_bytes() if isinstance(item, Path) else item
    ds = pydicom.dcmread(io.BytesIO(data))
    return [ds.waveform_array(i) for i in range(len(ds.WaveformSequence))]


def _fhir(item: Input) -> object:
    document = json.loads(item.read_bytes() if isinstance(item, Path) else item)
    return [
        np.array(c["valueSampledData"]["data"].split(), dtype=np.float64)
        for c in document["component"]
        if "valueSampledData" in c
    ]


def _philips(item: Input) -> object:
    import sierraecg

    return sierraecg.read_file(str(item))


def _loadmat(item: Input) -> object:
    import scipy.io

    return scipy.io.loadmat(str(item))


def _h5py(item: Input) -> object:
    import h5py

    with h5py.File(str(item), "r") as handle:
        return handle["ecg"][()]


def cases(data: Path) -> list[Case]:
    formats = data / "formats"
    ptbxl = sorted((data / "ptbxl/records500/00000").glob("*.hea"))[:20]
    dicom: list[Input] = [formats / "dicom/pydicom_waveform_ecg.dcm"]
    dicom += [to_dicom_bytes(load_ecg(p)) for p in ptbxl[:4]]
    fhir: list[Input] = [json.dumps(to_fhir_observation(load_ecg(p))).encode() for p in ptbxl[:5]]
    return [
        Case("wfdb PTB-XL 500 Hz", list(ptbxl), "wfdb.rdrecord", _wfdb),
        Case(
            "wfdb CinC .hea+.mat",
            list(sorted((data / "cinc/cinc2021").glob("JS*.hea"))[:10]),
            "wfdb.rdrecord",
            _wfdb,
        ),
        Case("wfdb MIT-BIH 100 (30 min)", [formats / "wfdb/100.hea"], "wfdb.rdrecord", _wfdb),
        Case("DICOM ECG waveform", dicom, "dcmread+waveform_array", _dicom),
        Case("FHIR Observation JSON", fhir, "json.loads+float parse", _fhir),
        Case("HL7 aECG XML", [formats / "hl7_aecg/Example_aECG_HL7_2003-12.xml"]),
        Case("GE MUSE XML", [formats / "ge_muse_xml/muse-sinus.xml"]),
        Case(
            "Philips XML",
            sorted((formats / "philips_xml").glob("*.[xX][mM][lL]")),
            "sierraecg.read_file",
            _philips,
        ),
        Case("SCP-ECG", sorted((formats / "scp_ecg").glob("*.[sS][cC][pP]"))),
        Case(
            "CPSC 2018 .mat",
            list(sorted((data / "cinc/cpsc2018").glob("*.mat"))[:5]),
            "scipy.io.loadmat",
            _loadmat,
        ),
        Case(
            "SPH HDF5",
            list(sorted((data / "cinc/cinc2021_more/smoke_data/SPH").glob("*.h5"))[:5]),
            "h5py read",
            _h5py,
        ),
    ]


def _time(fn: Callable[[], object]) -> float:
    """CPU seconds of this process for one call, garbage collection paused (as timeit does)."""
    gc.disable()
    try:
        start = time.process_time()
        fn()
        return time.process_time() - start
    finally:
        gc.enable()


def run(case: Case, repeats: int) -> tuple[float, float | None]:
    """Mean over the case's inputs of the median seconds per read, adapter and baseline.

    Each repeat times the adapter and then the baseline on the same input, so both see the
    same load on the shared machine.
    """
    adapter_total, baseline_total = 0.0, 0.0
    for item in case.inputs:

        def adapter(item: Input = item) -> object:
            return load_ecg(item)

        def plain(
            item: Input = item, base: Callable[[Input], object] | None = case.baseline
        ) -> object:
            return base(item) if base is not None else None

        adapter()
        plain()  # warm: imports, page cache
        adapter_times, plain_times = [], []
        for repeat in range(repeats):
            # Alternate which goes first so neither always runs on a colder cache.
            if repeat % 2:
                adapter_times.append(_time(adapter))
            if case.baseline is not None:
                plain_times.append(_time(plain))
            if not repeat % 2:
                adapter_times.append(_time(adapter))
        adapter_total += statistics.median(adapter_times)
        if plain_times:
            baseline_total += statistics.median(plain_times)
    n = len(case.inputs)
    return adapter_total / n, (baseline_total / n if case.baseline is not None else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    header = (
        f"{'format':28} {'n':>3} {'adapter ms':>11} {'rec/s':>8} {'plain ms':>9} {'ratio':>6}"
        "  plain read"
    )
    print(header)
    print("-" * len(header))
    for case in cases(args.data):
        adapter, baseline = run(case, args.repeats)
        ratio = f"{adapter / baseline:6.2f}" if baseline else "     -"
        plain = f"{baseline * 1000:9.2f}" if baseline else "        -"
        print(
            f"{case.name:28} {len(case.inputs):>3} {adapter * 1000:11.2f} {1 / adapter:8.1f} "
            f"{plain} {ratio}  {case.baseline_name or '-'}"
        )
    print(
        f"\nCPU ms per record: median of {args.repeats} runs per file, mean over the n files;"
        " rec/s = 1000 / adapter ms"
    )


if __name__ == "__main__":
    main()
