"""Task bodies: what ``classify_ecg``, ``annotate_report`` and ``backfill`` do.

They take identifiers only and re-read everything from storage, so they can run in any
process (the web process in embedded mode, ``ecg-cds worker`` processes in distributed mode)
and be run twice without harm: a result is stored once per (ECG, model version), and a
write-back already done is not repeated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from adapters import Ecg, EcgFormatError
from cds_service.jobs.errors import RetryableError
from cds_service.storage.tables import EcgRow, ResultRow

if TYPE_CHECKING:
    from cds_service.runtime import Runtime

log = logging.getLogger(__name__)


def run_task(runtime: Runtime, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Run one task body by name (the embedded dispatcher's entry point)."""
    attempt = int(kwargs.pop("attempt", 0))
    if name == "classify_ecg":
        classify_ecgs(runtime, [str(args[0] if args else kwargs["ecg_id"])])
    elif name == "annotate_report":
        final = attempt >= runtime.settings.jobs.max_retries
        annotate_report(runtime, *args, final_attempt=final, **kwargs)
    elif name == "backfill":
        backfill(runtime, *args, **kwargs)
    else:
        raise ValueError(f"unknown task {name!r}")


def classify_ecgs(runtime: Runtime, ecg_ids: Sequence[str]) -> dict[str, str]:
    """Classify ECGs that have no result for the current model; returns id -> outcome.

    Outcomes: ``exists`` (already classified), ``stored``, ``failed`` (recorded with its error),
    ``missing`` (no such ECG). Database outages raise :class:`RetryableError`.
    """
    outcomes: dict[str, str] = {}
    try:
        classifier = runtime.classifier
        version = classifier.model_version
        todo: list[str] = []
        for ecg_id in ecg_ids:
            if runtime.jobs.has_result(ecg_id, version):
                outcomes[ecg_id] = "exists"
                runtime.jobs.mark_job("classify", ecg_id, version, "done")
            elif runtime.ecgs.get_info(ecg_id) is None:
                outcomes[ecg_id] = "missing"
            else:
                todo.append(ecg_id)
        loaded: list[tuple[str, Ecg]] = []
        for ecg_id in todo:
            runtime.jobs.mark_job("classify", ecg_id, version, "running")
            try:
                loaded.append((ecg_id, runtime.ecgs.load_ecg(ecg_id)))
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
        for (ecg_id, _), result in _classify_each(runtime, loaded, version).items():
            if result is None:
                outcomes[ecg_id] = "failed"
                continue
            stored = runtime.jobs.store_result(ecg_id, result, notify=False)
            outcomes[ecg_id] = "stored" if stored else "exists"
            try:
                if stored:  # a redelivered task does not audit the classification twice
                    runtime.audit.record(
                        "classification",
                        ecg_id=ecg_id,
                        model_version=version,
                        patient=_patient(runtime, ecg_id),
                        detail={
                            "acceptable": result.quality.acceptable,
                            "top": [s.label_id for s in result.scores[:3]],
                        },
                    )
            finally:
                runtime.jobs.notify()  # waiters see the result together with its audit entry
    except OperationalError as exc:  # the database is unreachable: try again later
        raise RetryableError(f"database unavailable: {exc.orig}") from exc
    if runtime.settings.fhir.writeback_server:
        # A report annotation belongs in a patient's record: ECGs with no patient are not sent.
        for ecg_id, outcome in outcomes.items():
            if outcome in ("stored", "exists") and _patient(runtime, ecg_id):
                runtime.dispatcher.enqueue("annotate_report", ecg_id)
    return outcomes


def _classify_each(
    runtime: Runtime, loaded: list[tuple[str, Ecg]], version: str
) -> dict[tuple[str, Ecg], Any]:
    """One batched call; if the batch fails, one call per ECG so one bad ECG fails alone."""
    if not loaded:
        return {}
    classifier = runtime.classifier
    try:
        results = classifier.classify([ecg for _, ecg in loaded])
        return dict(zip(loaded, results, strict=True))
    except Exception as exc:
        if len(loaded) == 1:
            ecg_id = loaded[0][0]
            _fail(runtime, ecg_id, version, f"classification failed: {type(exc).__name__}: {exc}")
            return {loaded[0]: None}
    out: dict[tuple[str, Ecg], Any] = {}
    for item in loaded:
        out.update(_classify_each(runtime, [item], version))
    return out


def _fail(runtime: Runtime, ecg_id: str, version: str, error: str) -> None:
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
        runtime.jobs.notify()


def _patient(runtime: Runtime, ecg_id: str) -> str | None:
    info = runtime.ecgs.get_info(ecg_id)
    return info.patient_ref if info else None


def annotate_report(runtime: Runtime, ecg_id: str, *, final_attempt: bool = False) -> str:
    """Write the result back to the FHIR server (Observation, DiagnosticReport, Provenance).

    The FHIR resources are J2's (:func:`cds_service.writeback.write_back`); this body adds
    the once-only bookkeeping and turns outages into retries. On the ``final_attempt`` an
    outage marks the job failed (with its error) instead of asking for another retry.
    """
    if not runtime.settings.fhir.writeback_server:
        return "disabled"
    version = runtime.model_version
    if runtime.jobs.job_state("annotate", ecg_id, version) == "done":
        return "exists"
    if not runtime.jobs.has_result(ecg_id, version):
        return "no-result"
    from cds_service.writeback import write_back

    runtime.jobs.mark_job("annotate", ecg_id, version, "running")
    try:
        write_back(runtime, ecg_id)
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
    import httpx

    if isinstance(exc, RetryableError | ConnectionError | TimeoutError | httpx.TransportError):
        return True
    if getattr(exc, "retryable", False):
        return True
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return isinstance(status, int) and (status >= 500 or status == 429)


def backfill(
    runtime: Runtime,
    *,
    patient_ref: str | None = None,
    source_prefix: str | None = None,
    after_id: str | None = None,
    chunk_size: int | None = None,
) -> str | None:
    """Classify a patient's or a folder's stored history, one chunk per task.

    Picks the next ``chunk_size`` ECGs (ordered by id, after ``after_id``) that lack a result
    for the current model, classifies them in one batch, and enqueues itself for the next
    chunk. Returns the cursor of the next chunk, or None when done.
    """
    size = chunk_size or runtime.settings.jobs.backfill_chunk_size
    version = runtime.model_version
    with runtime.session_factory() as session:
        query = select(EcgRow.id).order_by(EcgRow.id).limit(size)
        if patient_ref is not None:
            query = query.where(EcgRow.patient_ref == patient_ref)
        if source_prefix is not None:
            query = query.where(EcgRow.source_uri.startswith(source_prefix, autoescape=True))
        if after_id is not None:
            query = query.where(EcgRow.id > after_id)
        ids = list(session.scalars(query).all())
        done = set(
            session.scalars(
                select(ResultRow.ecg_id).where(
                    ResultRow.ecg_id.in_(ids), ResultRow.model_version == version
                )
            ).all()
        )
    todo = [ecg_id for ecg_id in ids if ecg_id not in done]
    if todo:
        classify_ecgs(runtime, todo)
    if len(ids) < size:
        return None
    cursor = ids[-1]
    runtime.dispatcher.enqueue(
        "backfill",
        bulk=True,
        patient_ref=patient_ref,
        source_prefix=source_prefix,
        after_id=cursor,
        chunk_size=size,
    )
    return cursor
