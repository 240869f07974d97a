"""Task bodies: what ``classify_ecg``, ``annotate_report`` and ``backfill`` do.

They take identifiers only and re-read everything from storage (an ECG this process has
just stored comes parsed, from :meth:`EcgStore.take_accepted`), so they can run in any
process (the web process in embedded mode, ``ecg-cds worker`` processes in distributed mode)
and be run twice without harm: a result is stored once per (ECG, model version), and a
write-back already done is not repeated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import httpx
from sqlalchemy.exc import OperationalError

from adapters import Ecg, EcgFormatError
from cds_service.audit import AuditRecord, AuditTrail
from cds_service.jobs.dispatch import Dispatcher
from cds_service.jobs.errors import RetryableError
from cds_service.settings import Settings
from cds_service.storage.backfills import BackfillRuns
from cds_service.storage.ecgs import EcgStore
from cds_service.storage.jobs import JobLedger
from cds_service.writeback import write_back
from models.results import ClassificationResult

log = logging.getLogger(__name__)


class Classifier(Protocol):
    """What the task bodies need of a model (``models.ZeroShotClassifier``)."""

    @property
    def model_version(self) -> str: ...

    def classify(self, ecgs: list[Ecg]) -> list[ClassificationResult]: ...


class TaskRuntime(Protocol):
    """What the task bodies need of a process (:class:`cds_service.runtime.Runtime`)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def ecgs(self) -> EcgStore: ...
    @property
    def jobs(self) -> JobLedger: ...
    @property
    def audit(self) -> AuditTrail: ...
    @property
    def dispatcher(self) -> Dispatcher: ...
    @property
    def backfills(self) -> BackfillRuns: ...
    @property
    def classifier(self) -> Classifier: ...
    @property
    def model_version(self) -> str: ...


def run_task(
    runtime: TaskRuntime, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Run one task body by name (the embedded dispatcher's entry point)."""
    attempt = int(kwargs.pop("attempt", 0))
    if name == "classify_ecg":
        ecg_id = str(args[0] if args else kwargs["ecg_id"])
        classify_ecgs(runtime, [ecg_id], bulk=bool(kwargs.get("bulk")))
    elif name == "classify_ecgs":
        classify_ecgs(runtime, [str(i) for i in args[0]], bulk=bool(kwargs.get("bulk")))
    elif name == "annotate_report":
        final = attempt >= runtime.settings.jobs.max_retries
        annotate_report(runtime, *args, final_attempt=final, **kwargs)
    elif name == "backfill":
        backfill(runtime, *args, **kwargs)
    else:
        raise ValueError(f"unknown task {name!r}")


def classify_ecgs(
    runtime: TaskRuntime, ecg_ids: Sequence[str], *, bulk: bool = False
) -> dict[str, str]:
    """Classify ECGs that have no result for the current model; returns id -> outcome.

    Outcomes: ``exists`` (already classified), ``stored``, ``failed`` (recorded with its error),
    ``missing`` (no such ECG). Database outages raise :class:`RetryableError`.

    The batch goes through the model in one call and through storage in a few transactions
    (which exist, mark running, store every result, append every classification's audit
    entry under one lock), not a handful per ECG. Each classification keeps its own audit
    entry (which ECG, which model, when). Write-backs it causes are queued with the batch's
    priority: ``bulk`` for a backfill or a folder ingest.
    """
    outcomes: dict[str, str] = {}
    ids = list(dict.fromkeys(ecg_ids))
    try:
        classifier = runtime.classifier
        version = classifier.model_version
        patients = runtime.ecgs.patients(ids)
        done = runtime.jobs.classified(ids, version)
        for ecg_id in ids:
            if ecg_id in done:
                outcomes[ecg_id] = "exists"
            elif ecg_id not in patients:
                outcomes[ecg_id] = "missing"
        runtime.jobs.mark_jobs("classify", sorted(done), version, "done")
        todo = [ecg_id for ecg_id in ids if ecg_id not in outcomes]
        runtime.jobs.mark_jobs("classify", todo, version, "running")
        loaded: list[tuple[str, Ecg]] = []
        for ecg_id in todo:
            try:
                ecg = runtime.ecgs.take_accepted(ecg_id) or runtime.ecgs.load_ecg(ecg_id)
                loaded.append((ecg_id, ecg))
            except OperationalError:
                raise
            except (EcgFormatError, KeyError) as exc:
                _fail(runtime, ecg_id, version, f"stored ECG could not be re-read: {exc}")
                outcomes[ecg_id] = "failed"
            except Exception as exc:  # never leave an ECG pending because of a surprise
                _fail(
                    runtime,
                    ecg_id,
                    version,
                    f"stored ECG could not be re-read: {type(exc).__name__}: {exc}",
                )
                outcomes[ecg_id] = "failed"
        if runtime.settings.jobs.debug_task_delay_s > 0:
            time.sleep(runtime.settings.jobs.debug_task_delay_s)
        classified: list[tuple[str, ClassificationResult]] = []
        for (ecg_id, _), result in _classify_each(runtime, loaded, version).items():
            if result is None:
                outcomes[ecg_id] = "failed"
            else:
                classified.append((ecg_id, result))
        try:
            stored = runtime.jobs.store_results(classified, hand_over=not bulk)
            # A redelivered task does not audit a classification twice: only what it stored.
            runtime.audit.record_many(
                [
                    AuditRecord(
                        "classification",
                        ecg_id=ecg_id,
                        model_version=version,
                        patient=patients.get(ecg_id),
                        detail={
                            "acceptable": result.quality.acceptable,
                            "top": [s.label_id for s in result.scores[:3]],
                        },
                    )
                    for ecg_id, result in classified
                    if ecg_id in stored
                ]
            )
            for ecg_id, _ in classified:
                outcomes[ecg_id] = "stored" if ecg_id in stored else "exists"
        finally:
            runtime.jobs.notify(ids)  # waiters see the results with their audit entries
    except OperationalError as exc:  # the database is unreachable: try again later
        raise RetryableError(f"database unavailable: {exc.orig}") from exc
    if runtime.settings.fhir.writeback_server:
        # A report annotation belongs in a patient's record: ECGs with no patient are not sent.
        for ecg_id, outcome in outcomes.items():
            if outcome in ("stored", "exists") and patients.get(ecg_id):
                runtime.dispatcher.enqueue("annotate_report", ecg_id, bulk=bulk)
    return outcomes


def _classify_each(
    runtime: TaskRuntime, loaded: list[tuple[str, Ecg]], version: str
) -> dict[tuple[str, Ecg], ClassificationResult | None]:
    """One batched call; if the batch fails, one call per ECG so one bad ECG fails alone."""
    if not loaded:
        return {}
    from cds_service.instruments import CLASSIFICATION_SECONDS

    classifier = runtime.classifier
    try:
        started = time.perf_counter()
        results = classifier.classify([ecg for _, ecg in loaded])
        per_ecg = (time.perf_counter() - started) / len(loaded)
        for _ in loaded:
            CLASSIFICATION_SECONDS.observe(per_ecg)
        return dict(zip(loaded, results, strict=True))
    except Exception as exc:
        if len(loaded) == 1:
            ecg_id = loaded[0][0]
            _fail(runtime, ecg_id, version, f"classification failed: {type(exc).__name__}: {exc}")
            return {loaded[0]: None}
    out: dict[tuple[str, Ecg], ClassificationResult | None] = {}
    for item in loaded:
        out.update(_classify_each(runtime, [item], version))
    return out


def _fail(runtime: TaskRuntime, ecg_id: str, version: str, error: str) -> None:
    log.warning("ECG %s failed: %s", ecg_id, error)
    runtime.jobs.mark_failed(ecg_id, version, error, notify=False)
    try:
        runtime.audit.record(
            "classification",
            outcome="error",
            ecg_id=ecg_id,
            model_version=version,
            detail={"error": error[:500]},
        )
    finally:
        runtime.jobs.notify([ecg_id])


def annotate_report(runtime: TaskRuntime, ecg_id: str, *, final_attempt: bool = False) -> str:
    """Write the result back to the FHIR server (Observation, DiagnosticReport, Provenance).

    The FHIR resources and the request are :func:`cds_service.writeback.write_back`'s; this
    body adds the once-only bookkeeping and turns outages into retries. On the ``final_attempt`` an
    outage marks the job failed (with its error) instead of asking for another retry.
    """
    if not runtime.settings.fhir.writeback_server:
        return "disabled"
    version = runtime.model_version
    if runtime.jobs.job_state("annotate", ecg_id, version) == "done":
        return "exists"
    if not runtime.jobs.has_result(ecg_id, version):
        return "no-result"
    runtime.jobs.mark_job("annotate", ecg_id, version, "running")
    try:
        write_back(
            runtime.settings,
            runtime.audit,
            ecg_id,
            runtime.ecgs.get_info(ecg_id),
            runtime.jobs.result(ecg_id),
        )
    except Exception as exc:
        if _is_outage(exc) and not final_attempt:
            runtime.jobs.mark_job("annotate", ecg_id, version, "queued", f"retrying: {exc}")
            raise RetryableError(f"FHIR server unavailable: {exc}") from exc
        runtime.jobs.mark_job("annotate", ecg_id, version, "failed", f"{type(exc).__name__}: {exc}")
        raise
    runtime.jobs.mark_job("annotate", ecg_id, version, "done")
    return "written"


def _is_outage(exc: BaseException) -> bool:
    """Connection errors, timeouts and 5xx/429 answers are passing; 4xx are our bug or data."""
    if isinstance(exc, RetryableError | ConnectionError | TimeoutError | httpx.TransportError):
        return True
    if getattr(exc, "retryable", False):
        return True
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return isinstance(status, int) and (status >= 500 or status == 429)


def backfill(
    runtime: TaskRuntime,
    *,
    patient_ref: str | None = None,
    source_prefix: str | None = None,
    after_id: str | None = None,
    chunk_size: int | None = None,
    run: str | None = None,
    ids: Sequence[str] | None = None,
) -> str | None:
    """Classify a patient's or a folder's stored history, in chunks (see below).

    Without ``run`` this starts a run (its first chunks are queued at once, every worker
    takes some); with ``run`` and ``ids`` it classifies that chunk and queues the next.
    Returns the run's key.
    """
    if run is None:
        return _start_backfill(
            runtime,
            patient_ref=patient_ref,
            source_prefix=source_prefix,
            after_id=after_id,
            chunk_size=chunk_size,
        )
    _backfill_chunk(runtime, run, [str(i) for i in ids or []])
    return run


# Backfills fan out: a stored history classified in chunks by every worker at once.
#
# Starting a backfill records a *run* (storage.backfills.BackfillRuns: its cursor lives in
# the database) and queues up to ``jobs.backfill_in_flight`` chunk tasks at once, each
# carrying the ids of its chunk. A chunk task classifies its ECGs in one batch, then claims
# the run's next chunk (under a row lock, so two workers never take the same one) and queues
# it: the number in flight stays bounded and every worker process takes chunks, instead of
# one chain that a second worker cannot speed up. Idempotent and resumable: ECGs with a
# result for the model are skipped; a redelivered chunk (worker killed) classifies the same
# ids again, a no-op for those done; a backfill started again classifies what is missing.
# A chunk redelivered after it had queued its successor starts one extra chain: more in
# flight for a while, never a wrong or duplicate result.


def _start_backfill(
    runtime: TaskRuntime,
    *,
    patient_ref: str | None,
    source_prefix: str | None,
    after_id: str | None,
    chunk_size: int | None,
) -> str:
    run = runtime.backfills.create(
        patient_ref=patient_ref,
        source_prefix=source_prefix,
        chunk_size=chunk_size or runtime.settings.jobs.backfill_chunk_size,
        after_id=after_id,
    )
    for _ in range(max(1, runtime.settings.jobs.backfill_in_flight)):
        if not _queue_next_chunk(runtime, run):
            break
    return run


def _backfill_chunk(runtime: TaskRuntime, run: str, ids: list[str]) -> None:
    """Classify one chunk (bulk priority), then queue the run's next chunk, if any."""
    done = runtime.jobs.classified(ids, runtime.model_version)
    todo = [ecg_id for ecg_id in ids if ecg_id not in done]
    if todo:
        classify_ecgs(runtime, todo, bulk=True)
    _queue_next_chunk(runtime, run)


def _queue_next_chunk(runtime: TaskRuntime, run: str) -> bool:
    """Claim the run's next chunk and queue it; False when the run has nothing left."""
    ids = runtime.backfills.claim(run)
    if ids:
        runtime.dispatcher.enqueue("backfill", bulk=True, run=run, ids=ids)
    return bool(ids)
