"""Small remembered state between runs (e.g. how far a DICOMweb poll got), by key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from cds_service.storage.tables import StateRow


class StateStore:
    """JSON values by key, kept in the database. Thread-safe; one per process."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory

    def get(self, key: str) -> dict[str, Any] | None:
        with self._sessions() as session:
            row = session.get(StateRow, key)
            return dict(row.value) if row else None

    def set(self, key: str, value: dict[str, Any]) -> None:
        with self._sessions.begin() as session:
            row = session.get(StateRow, key)
            if row is None:
                session.add(StateRow(key=key, value=value, updated_at=datetime.now(UTC)))
            else:
                row.value = value
