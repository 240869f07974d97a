"""Backfills fan out: a stored history classified in chunks by every worker at once.

``backfill`` with a selection (a patient, a source folder) starts a *run*
(:class:`cds_service.storage.backfills.BackfillRuns`: its cursor lives in the database) and
queues up to ``jobs.backfill_in_flight`` chunk tasks at once, each carrying the ids of its
chunk. A chunk task classifies its ECGs in one batch, then claims the run's next chunk (under
a row lock, so two workers never take the same one) and queues it: the number in flight
stays bounded, and every worker process takes chunks instead of waiting for one chain.

Idempotent and resumable: ECGs that already have a result for the model are skipped; a
redelivered chunk (worker killed) classifies the same ids again, a no-op for those done; a
backfill started again after an interruption classifies only what is still missing. A chunk
redelivered after it had queued its successor starts one extra chain: more in flight for a
while, never a wrong or duplicate result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cds_service.jobs.work import TaskRuntime


def start(
    runtime: TaskRuntime,
    *,
    patient_ref: str | None,
    source_prefix: str | None,
    after_id: str | None = None,
    chunk_size: int | None = None,
) -> str:
    """Record a run and queue its first chunks; returns the run's key."""
    run = runtime.backfills.create(
        patient_ref=patient_ref,
        source_prefix=source_prefix,
        chunk_size=chunk_size or runtime.settings.jobs.backfill_chunk_size,
        after_id=after_id,
    )
    for _ in range(max(1, runtime.settings.jobs.backfill_in_flight)):
        if not queue_next(runtime, run):
            break
    return run


def run_chunk(runtime: TaskRuntime, run: str, ids: list[str]) -> None:
    """Classify one chunk (bulk priority), then queue the run's next chunk, if any."""
    from cds_service.jobs.work import classify_ecgs

    done = runtime.jobs.classified(ids, runtime.model_version)
    todo = [ecg_id for ecg_id in ids if ecg_id not in done]
    if todo:
        classify_ecgs(runtime, todo, bulk=True)
    queue_next(runtime, run)


def queue_next(runtime: TaskRuntime, run: str) -> bool:
    """Claim the run's next chunk and queue it; False when the run has nothing left."""
    ids = runtime.backfills.claim(run)
    if ids:
        runtime.dispatcher.enqueue("backfill", bulk=True, run=run, ids=ids)
    return bool(ids)
