"""Job rows written inside a caller's transaction (Core statements, no ORM bookkeeping).

Split from :mod:`cds_service.storage.jobs` so that the ledger reads as the jobs' life cycle;
these are the row-level upserts it and the task bodies share.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, update
from sqlalchemy.orm import Session

from cds_service.storage.tables import JobRow, utcnow
from cds_service.storage.upsert import insert_ignore_many

#: The jobs table, for Core statements (no ORM session bookkeeping on bulk updates).
JOBS: Table = JobRow.__table__  # type: ignore[assignment]


def queued_job(ecg_id: str, model_version: str, now: datetime) -> dict[str, Any]:
    """The values of a new classification job row, queued."""
    return {
        "kind": "classify",
        "ecg_id": ecg_id,
        "model_version": model_version,
        "state": "queued",
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


def mark_job(
    session: Session,
    kind: str,
    ecg_id: str,
    model_version: str,
    state: str,
    error: str | None = None,
) -> None:
    """Upsert a job row's state inside the caller's transaction; ``running`` counts an attempt."""
    mark_jobs(session, kind, [ecg_id], model_version, state, error)


def mark_jobs(
    session: Session,
    kind: str,
    ecg_ids: Sequence[str],
    model_version: str,
    state: str,
    error: str | None = None,
) -> None:
    """:func:`mark_job` for many ECGs: one update of the rows there (nearly always all of
    them: the submit wrote them), one insert of those missing, already in ``state``.

    The update says which rows it found (RETURNING), so the common case sends no insert of
    rows that all conflict. A row another writer inserts between the two statements makes
    the insert skip it; it is updated then, as if it had been there.
    """
    now = utcnow()
    unique_ids = list(dict.fromkeys(ecg_ids))
    values: dict[str, Any] = {"state": state, "error": error, "updated_at": now}
    if state == "running":
        values["attempts"] = JOBS.c.attempts + 1
    found = update_jobs(session, kind, unique_ids, model_version, values)
    missing = [ecg_id for ecg_id in unique_ids if ecg_id not in found]
    if not missing:
        return
    inserted = insert_ignore_many(
        session,
        JOBS,
        [
            {
                "kind": kind,
                "ecg_id": ecg_id,
                "model_version": model_version,
                "state": state,
                "attempts": 1 if state == "running" else 0,
                "error": error,
                "created_at": now,
                "updated_at": now,
            }
            for ecg_id in missing
        ],
        ("kind", "ecg_id", "model_version"),
        returning="ecg_id",
    )
    raced = [ecg_id for ecg_id in missing if ecg_id not in inserted]
    if raced:
        update_jobs(session, kind, raced, model_version, values)


def update_jobs(
    session: Session, kind: str, ecg_ids: list[str], model_version: str, values: dict[str, Any]
) -> set[str]:
    """Set ``values`` on the job rows of ``ecg_ids``; the ECG ids whose rows were there."""
    return set(
        session.scalars(
            update(JOBS)
            .where(
                JOBS.c.kind == kind,
                JOBS.c.ecg_id.in_(ecg_ids),
                JOBS.c.model_version == model_version,
            )
            .values(**values)
            .returning(JOBS.c.ecg_id)
        ).all()
    )
