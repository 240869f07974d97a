"""Backfills fan out: a stored history classified in chunks by every worker at once.

``backfill`` with a selection (a patient, a source folder) starts a *run*: its cursor lives
in the database (``service_state``, key ``backfill:<uuid>``), and up to
``jobs.backfill_in_flight`` chunk tasks are queued at once, each carrying the ids of its
chunk. A chunk task classifies its ECGs in one batch, then claims the next chunk (under a
row lock on the run, so two workers never take the same one) and queues it: the number in
flight stays bounded, and every worker process takes chunks, not one after another.

Idempotent and resumable: ECGs that already have a result for the model are skipped, a
redelivered chunk (worker killed) classifies the same ids again (a no-op for those done), and
starting the same backfill again after an interruption only classifies what is still missing.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from sqlalchemy import select

from cds_service.storage.tables import EcgRow, StateRow, utcnow

if TYPE_CHECKING:
    from cds_service.runtime import Runtime

RUN_PREFIX = "backfill:"


def start(
    runtime: Runtime,
    *,
    patient_ref: str | None,
    source_prefix: str | None,
    after_id: str | None = None,
    chunk_size: int | None = None,
) -> str:
    """Record a run and queue its first chunks; returns the run's key."""
    run = RUN_PREFIX + str(uuid.uuid4())
    runtime.state.set(
        run,
        {
            "patient_ref": patient_ref,
            "source_prefix": source_prefix,
            "cursor": after_id,
            "chunk_size": chunk_size or runtime.settings.jobs.backfill_chunk_size,
            "claimed": 0,
            "finished": False,
            "started_at": utcnow().isoformat(),
        },
    )
    for _ in range(max(1, runtime.settings.jobs.backfill_in_flight)):
        if not queue_next(runtime, run):
            break
    return run


def run_chunk(runtime: Runtime, run: str, ids: list[str]) -> None:
    """Classify one chunk (bulk priority), then queue the run's next chunk, if any."""
    from cds_service.jobs.work import classify_ecgs

    done = runtime.jobs.with_result(ids, runtime.model_version)
    todo = [ecg_id for ecg_id in ids if ecg_id not in done]
    if todo:
        classify_ecgs(runtime, todo, bulk=True)
    queue_next(runtime, run)


def queue_next(runtime: Runtime, run: str) -> bool:
    """Claim the run's next chunk and queue it; False when the run has nothing left."""
    ids = claim(runtime, run)
    if ids:
        runtime.dispatcher.enqueue("backfill", bulk=True, run=run, ids=ids)
    return bool(ids)


def claim(runtime: Runtime, run: str) -> list[str]:
    """The next chunk of the run's selection (ordered by id), moving its cursor past it."""
    with runtime.session_factory.begin() as session:
        row = session.scalars(select(StateRow).where(StateRow.key == run).with_for_update()).first()
        if row is None or row.value.get("finished"):
            return []
        state = dict(row.value)
        size = int(state["chunk_size"])
        query = select(EcgRow.id).order_by(EcgRow.id).limit(size)
        if state.get("patient_ref") is not None:
            query = query.where(EcgRow.patient_ref == state["patient_ref"])
        if state.get("source_prefix") is not None:
            query = query.where(
                EcgRow.source_uri.startswith(state["source_prefix"], autoescape=True)
            )
        if state.get("cursor") is not None:
            query = query.where(EcgRow.id > state["cursor"])
        ids = list(session.scalars(query).all())
        if ids:
            state["cursor"] = ids[-1]
        state["claimed"] = int(state.get("claimed", 0)) + len(ids)
        state["finished"] = len(ids) < size
        row.value = state  # a new dict: the JSON column sees the change
        row.updated_at = utcnow()
    return ids
