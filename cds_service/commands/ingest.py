"""`ecg-cds ingest`: store and classify ECG files, folders, or what a PACS holds.

Files are stored (duplicates recognised by SHA-256), queued for classification, and, when
``fhir.writeback_server`` is set, written back as Observation + DiagnosticReport +
Provenance. In embedded mode classification runs in this process, so the command waits
for it (``--no-wait`` leaves it to the next ``ecg-cds serve``); in distributed mode the
workers do it.

``--dicomweb URL`` polls a DICOMweb server for ECGs not stored yet
(:mod:`cds_service.commands.dicomweb_poll`).
"""

from __future__ import annotations

import itertools
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cds_service.commands._inputs import progress_bar

if TYPE_CHECKING:
    from cds_service.audit import Actor
    from cds_service.runtime import Runtime
    from cds_service.settings import Settings

#: Files that are never ECGs (licences, notes, tables, schemas); not worth an error line.
_SKIP_SUFFIXES = {
    ".md", ".txt", ".csv", ".tsv", ".xsd", ".xsx", ".py", ".png", ".jpg", ".pdf", ".html",
    ".gz", ".zip", ".npy", ".npz", ".pkl", ".log",
}  # fmt: skip
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".pdf", ".tif", ".tiff", ".bmp"}
_SKIP_SUFFIXES |= _IMAGE_SUFFIXES
#: WFDB companions of a ``.hea`` (read together with it).
_WFDB_COMPANIONS = {".dat", ".mat", ".atr", ".xyz", ".qrs", ".ecg", ".hea-"}
#: Files are stored and queued in groups (one transaction each): the first small, so that
#: classification starts early, then doubling up to the largest, so that commits, lookups
#: and audit appends are few (64 instead of 16 measured 0.3-0.5 ms less CPU per 500 Hz
#: PTB-XL record, outside the model).
_FIRST_GROUP, _LARGEST_GROUP = 16, 64
#: Classification batches in flight in an embedded ingest. With one, the signal-work
#: processes stood idle while the batch's results were built and stored (about 40% of
#: their time); with two, the next batch's signal work runs meanwhile.
INGEST_JOB_THREADS = 2
#: In embedded mode at most this many ECGs are stored ahead of their classification. The
#: store side is twice as fast as classification: unbounded, it ran thousands ahead, and
#: every parsed waveform handed over to the jobs (64 MiB, ~270 500 Hz records) was dropped
#: before its job came, which then unpacked and parsed the stored bytes again.
MAX_AHEAD = 192


def ingest(
    paths: list[Path] = typer.Argument(
        None, help="ECG files or folders (searched recursively).", show_default=False
    ),
    dicomweb: str = typer.Option(
        "", help="Poll this DICOMweb base URL (must be in fhir.allowed_dicomweb) for new ECGs."
    ),
    full: bool = typer.Option(False, help="With --dicomweb: ask for every ECG, not only new."),
    patient: str = typer.Option("", help="FHIR reference to attach, e.g. Patient/123."),
    wait: bool = typer.Option(True, help="Wait for classification to finish."),
    timeout: float = typer.Option(3600.0, help="Longest wait for classification, seconds."),
    progress: bool = typer.Option(True, help="Show progress bars (on stderr)."),
    backfill: bool = typer.Option(
        False,
        help="Read no files: classify ECGs already stored from PATHS (folders or files) or of "
        "--patient that lack a result for the current model, in chunks (e.g. after a model "
        "upgrade, or what an earlier --no-wait left pending).",
    ),
) -> None:
    from cds_service.audit import Actor
    from cds_service.commands.dicomweb_poll import poll_dicomweb
    from cds_service.runtime import Runtime
    from cds_service.settings import get_settings

    if backfill:
        if not paths and not patient:
            typer.echo("--backfill needs folders/files or --patient to select ECGs.", err=True)
            raise typer.Exit(2)
        _backfill(paths or [], patient or None, wait, timeout, progress)
        return
    if not paths and not dicomweb:
        typer.echo("error: nothing to ingest: give files/folders or --dicomweb URL.", err=True)
        raise typer.Exit(2)
    skipped: list[Path] = []
    files = list(_expand(paths or [], skipped))
    if skipped:
        typer.echo(_skipped_line(skipped), err=True)
    if paths and not files and not dicomweb:
        typer.echo(
            f"error: no ECG files in {', '.join(str(p) for p in paths)}"
            + (" (only files that are not ECG signals, above)" if skipped else " (empty)"),
            err=True,
        )
        raise typer.Exit(2)
    settings = ingest_settings(get_settings())
    runtime = Runtime.start(settings, role="cli", resume=False)
    actor = Actor(client="ecg-cds-ingest")
    started = time.perf_counter()
    try:
        stored = store_all(runtime, files, patient or None, actor, progress, wait=wait)
        if dicomweb:
            new_ids, dicom_problems = poll_dicomweb(
                runtime, dicomweb, full, patient, actor, progress
            )
            stored.created += len(new_ids)
            stored.problems.extend(dicom_problems)
            stored.ids.extend(new_ids)
        accepted_s = time.perf_counter() - started
        results: dict[str, bool] = {}
        if wait and stored.ids:
            results = wait_all(runtime, stored.ids, timeout, progress)
        elapsed = time.perf_counter() - started
        failed = _report(runtime, stored, results, accepted_s, elapsed, wait)
    finally:
        runtime.stop()
    if stored.problems or failed:
        raise typer.Exit(1)


@dataclass
class Stored:
    """What :func:`store_all` did: the ids of every ECG read (new or known), and problems."""

    ids: list[str] = field(default_factory=list)
    created: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)


def ingest_settings(settings: Settings) -> Settings:
    """The settings ``ecg-cds ingest`` runs with: at least :data:`INGEST_JOB_THREADS`
    embedded job threads (this process does nothing but the ingest)."""
    threads = max(settings.jobs.embedded_threads, INGEST_JOB_THREADS)
    jobs = settings.jobs.model_copy(update={"embedded_threads": threads})
    return settings.model_copy(update={"jobs": jobs})


def _groups(files: list[Path]) -> Iterator[list[Path]]:
    start, size = 0, _FIRST_GROUP
    while start < len(files):
        yield files[start : start + size]
        start, size = start + size, min(2 * size, _LARGEST_GROUP)


def store_all(
    runtime: Runtime,
    files: list[Path],
    patient: str | None,
    actor: Actor,
    progress: bool,
    *,
    wait: bool = True,
) -> Stored:
    """Store every ECG file of ``files`` and queue it as bulk work (``ecg-cds ingest``).

    Where the jobs run in this process and the caller will ``wait`` for them, storing
    pauses while :data:`MAX_AHEAD` stored ECGs await their classification.
    """
    from adapters import EcgFormatError

    out = Stored()
    ahead = _Ahead(runtime, MAX_AHEAD if wait and runtime.jobs.runs_here else None)
    bar = progress_bar(files, "store", progress)
    for group in _groups(files):
        ahead.make_room()
        # One accept and one job-ledger transaction per group. ECGs this call stored have no
        # result and no job yet: their job rows are inserted without looking anything up.
        new: list[str] = []
        known: list[str] = []
        for path, info in zip(
            group,
            runtime.ecgs.accept_paths(group, patient_ref=patient, actor=actor),
            strict=True,
        ):
            if isinstance(info, EcgFormatError):
                out.problems.append(str(info))
                continue
            if isinstance(info, OSError):
                out.problems.append(f"{path}: {info.strerror or info}")
                continue
            out.created += info.created
            out.duplicates += not info.created
            out.ids.append(info.id)
            (new if info.created else known).append(info.id)
        runtime.jobs.submit_new_many(new, bulk=True)
        runtime.jobs.submit_many(known, bulk=True)
        ahead.submitted(new + known)
        bar.update(len(group))
    bar.close()
    return out


class _Ahead:
    """The ECGs submitted by :func:`store_all` whose classification has not finished."""

    #: A wait that sees none of the oldest finish this long stops holding storing back
    #: (a stalled classification must not stall the store side too).
    PATIENCE_S = 60.0

    def __init__(self, runtime: Runtime, limit: int | None) -> None:
        self._runtime = runtime
        self._limit = limit
        self._pending: deque[str] = deque()

    def submitted(self, ecg_ids: list[str]) -> None:
        if self._limit is not None:
            self._pending.extend(ecg_ids)

    def make_room(self) -> None:
        """Wait until at most ``limit`` are pending (or the classification stalls)."""
        if self._limit is None:
            return
        while len(self._pending) > self._limit:
            oldest = list(itertools.islice(self._pending, len(self._pending) - self._limit))
            finished = self._runtime.jobs.wait_finished(oldest, self.PATIENCE_S)
            if not finished:
                self._limit = None  # stalled: store the rest without waiting
                return
            self._pending = deque(i for i in self._pending if i not in finished)


def _backfill(
    paths: list[Path], patient: str | None, wait: bool, timeout: float, progress: bool
) -> None:
    """Queue ``backfill`` tasks for the selected stored ECGs; wait for them when asked."""
    from cds_service.runtime import Runtime
    from cds_service.settings import get_settings

    # Stored ECGs remember where they came from as file URIs: a folder selects what was under it.
    prefixes: list[str | None] = [
        path.resolve().as_uri() + ("/" if path.is_dir() else "") for path in paths
    ] or [None]
    runtime = Runtime.start(get_settings(), role="cli", resume=False)
    started = time.perf_counter()
    try:
        ids: list[str] = []
        for prefix in prefixes:
            ids.extend(runtime.ecgs.ids_matching(patient_ref=patient, source_prefix=prefix))
            runtime.dispatcher.enqueue(
                "backfill", bulk=True, patient_ref=patient, source_prefix=prefix
            )
        if wait and ids:
            wait_all(runtime, ids, timeout, progress)
        statuses: dict[str, int] = {}
        for ecg_id in dict.fromkeys(ids):
            status = _status(runtime, ecg_id) or "missing"
            statuses[status] = statuses.get(status, 0) + 1
        typer.echo(
            f"backfill: {len(set(ids))} stored ECGs selected; status: "
            + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
            + f"; {time.perf_counter() - started:.1f} s"
        )
    finally:
        runtime.stop()
    if statuses.get("failed"):
        raise typer.Exit(1)


def _expand(paths: list[Path], skipped: list[Path]) -> Iterator[Path]:
    """Files to ingest: WFDB headers stand for their record; companions are not read alone.
    Files in folders that are not ECG signals go to ``skipped`` (reported, never silent)."""
    for path in paths:
        if path.is_dir():
            yield from _folder(path, skipped)
        elif path.exists() or path.with_suffix(".hea").exists():
            yield path if path.exists() else path.with_suffix(".hea")
        else:
            typer.echo(f"error: {path}: no such file or folder", err=True)
            raise typer.Exit(2)


def _skipped_line(skipped: list[Path]) -> str:
    kinds: dict[str, int] = {}
    for path in skipped:
        kind = path.suffix.lower() or path.name
        kinds[kind] = kinds.get(kind, 0) + 1
    listed = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
    images = sum(kinds.get(k, 0) for k in _IMAGE_SUFFIXES)
    note = "; images of ECGs (scans, screenshots) cannot be read, only signals" if images else ""
    return f"skipped {len(skipped)} files that are not ECG signals ({listed}){note}"


def _folder(folder: Path, skipped: list[Path]) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        suffix = path.suffix.lower()
        if suffix in _SKIP_SUFFIXES or path.name.upper().startswith(
            ("LICENSE", "README", "COPYING")
        ):
            skipped.append(path)
            continue
        if suffix in _WFDB_COMPANIONS and path.with_suffix(".hea").is_file():
            continue
        yield path


def wait_all(runtime: Runtime, ids: list[str], timeout: float, progress: bool) -> dict[str, bool]:
    """Wait for every id, showing progress: id -> True (result stored) or False (failed);
    ids still unfinished at the timeout are absent. Reads no result (see ``wait_finished``)."""
    from tqdm import tqdm

    deadline = time.monotonic() + timeout
    remaining = list(dict.fromkeys(ids))
    finished: dict[str, bool] = {}
    with tqdm(
        total=len(remaining), desc="classify", unit="ECG", disable=not progress, file=sys.stderr
    ) as bar:
        while remaining and time.monotonic() < deadline:
            got = runtime.jobs.wait_finished(remaining, min(1.0, deadline - time.monotonic()))
            finished.update(got)
            remaining = [i for i in remaining if i not in got]
            bar.update(len(got))
    return finished


def _status(runtime: Runtime, ecg_id: str) -> str | None:
    info = runtime.ecgs.get_info(ecg_id)
    return info.status if info else None


def _report(
    runtime: Runtime,
    stored: Stored,
    results: dict[str, bool],
    accepted_s: float,
    elapsed: float,
    waited: bool,
) -> int:
    """Print what happened; returns how many ECGs failed classification."""
    for problem in stored.problems:
        typer.echo(f"unreadable: {problem}", err=True)
    unique = list(dict.fromkeys(stored.ids))
    statuses: dict[str, int] = {}
    for ecg_id in unique:
        status = _status(runtime, ecg_id) or "missing"
        statuses[status] = statuses.get(status, 0) + 1
    for ecg_id in unique:
        info = runtime.ecgs.get_info(ecg_id)
        if info is not None and info.status == "failed":
            typer.echo(f"failed: {info.source_uri or ecg_id}: {info.error}", err=True)
    rate = len(unique) / elapsed if elapsed > 0 and waited else len(unique) / max(accepted_s, 1e-9)
    typer.echo(
        f"{len(unique)} ECGs ({stored.created} new, {stored.duplicates} already stored), "
        f"{len(stored.problems)} unreadable; status: "
        + (", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) or "none")
        + f"; {elapsed:.1f} s ({rate:.1f} ECGs/s)"
    )
    return statuses.get("failed", 0)
