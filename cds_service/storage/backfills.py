"""Backfill runs: a selection of stored ECGs and a cursor through it, claimed chunk by chunk.

A run is a ``service_state`` row (key ``backfill:<uuid>``). :meth:`BackfillRuns.claim` takes
the next chunk under a row lock (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite has one
writer at a time), so two workers never take the same chunk. See
:func:`cds_service.jobs.work.backfill` for how chunks are queued.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cds_service.storage.tables import EcgRow, StateRow, utcnow

RUN_PREFIX = "backfill:"


class BackfillRuns:
    """Backfill runs in the database. Thread-safe; one per process."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory

    def create(
        self,
        *,
        patient_ref: str | None,
        source_prefix: str | None,
        chunk_size: int,
        after_id: str | None = None,
    ) -> str:
        """Record a new run over the selection; returns its key."""
        run = RUN_PREFIX + str(uuid.uuid4())
        with self._sessions.begin() as session:
            session.add(
                StateRow(
                    key=run,
                    value={
                        "patient_ref": patient_ref,
                        "source_prefix": source_prefix,
                        "cursor": after_id,
                        "chunk_size": chunk_size,
                        "claimed": 0,
                        "finished": False,
                        "started_at": utcnow().isoformat(),
                    },
                    updated_at=utcnow(),
                )
            )
        return run

    def claim(self, run: str) -> list[str]:
        """The next chunk of the run's selection (ordered by id), moving its cursor past it;
        empty when the run is finished or unknown."""
        with self._sessions.begin() as session:
            row = session.scalars(
                select(StateRow).where(StateRow.key == run).with_for_update()
            ).first()
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

    def get(self, run: str) -> dict[str, object] | None:
        with self._sessions() as session:
            row = session.get(StateRow, run)
            return dict(row.value) if row else None
