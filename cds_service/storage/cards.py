"""Cards shown to an EHR and the feedback given on them (CDS Hooks feedback and the viewer's).

A card is remembered by its uuid so that feedback, which names only the card, can be tied to
the ECG and result it was about.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session, sessionmaker

from cds_service.storage.records import FeedbackInfo
from cds_service.storage.tables import CardRow, FeedbackRow, utcnow
from cds_service.storage.upsert import ignoring_insert


class CardStore:
    """Cards and feedback. Thread-safe; one per process."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory

    def save_card(
        self,
        *,
        card_uuid: str,
        service_id: str,
        ecg_id: str | None,
        patient_ref: str | None,
        summary: str,
        indicator: str,
        card: dict[str, Any],
    ) -> None:
        """Remember a card shown to an EHR (the same uuid twice is stored once)."""
        row = card_row(
            card_uuid=card_uuid,
            service_id=service_id,
            ecg_id=ecg_id,
            patient_ref=patient_ref,
            summary=summary,
            indicator=indicator,
            card=card,
        )
        with self._sessions.begin() as session:
            insert_cards(session, [row])

    def get_card(self, card_uuid: str) -> dict[str, Any] | None:
        with self._sessions() as session:
            row = session.get(CardRow, card_uuid)
            return dict(row.card) if row else None

    def save_feedback(
        self,
        *,
        card_uuid: str,
        service_id: str,
        outcome: str,
        accepted_suggestions: list[str],
        override_reason: dict[str, Any] | None,
        user_comment: str | None,
        outcome_timestamp: datetime | None,
        source: str = "cds-hooks",
    ) -> FeedbackInfo:
        """Store feedback tied to its card and ECG; feedback on an unknown card is kept, flagged."""
        with self._sessions.begin() as session:
            card = session.get(CardRow, card_uuid)
            row = FeedbackRow(
                card_uuid=card_uuid,
                card_known=card is not None,
                service_id=service_id,
                ecg_id=card.ecg_id if card else None,
                outcome=outcome,
                accepted_suggestions=list(accepted_suggestions),
                override_reason=override_reason,
                user_comment=user_comment,
                outcome_timestamp=outcome_timestamp,
                source=source,
                created_at=utcnow(),
            )
            session.add(row)
            session.flush()
            return FeedbackInfo.from_row(row)

    def feedback_for(self, ecg_id: str) -> list[FeedbackInfo]:
        with self._sessions() as session:
            rows = session.scalars(
                select(FeedbackRow)
                .where(FeedbackRow.ecg_id == ecg_id)
                .order_by(FeedbackRow.created_at, FeedbackRow.id)
            ).all()
            return [FeedbackInfo.from_row(row) for row in rows]

    def feedback_for_many(self, ecg_ids: Sequence[str]) -> dict[str, list[FeedbackInfo]]:
        """:meth:`feedback_for` of several ECGs in one query (ECGs without any are absent)."""
        if not ecg_ids:
            return {}
        out: dict[str, list[FeedbackInfo]] = {}
        with self._sessions() as session:
            rows = session.scalars(
                select(FeedbackRow)
                .where(FeedbackRow.ecg_id.in_(list(ecg_ids)))
                .order_by(FeedbackRow.created_at, FeedbackRow.id)
            ).all()
            for row in rows:
                if row.ecg_id is not None:
                    out.setdefault(row.ecg_id, []).append(FeedbackInfo.from_row(row))
        return out


def card_row(
    *,
    card_uuid: str,
    service_id: str,
    ecg_id: str | None,
    patient_ref: str | None,
    summary: str,
    indicator: str,
    card: dict[str, Any],
) -> dict[str, Any]:
    """The stored form of one card shown to an EHR."""
    return {
        "uuid": card_uuid,
        "service_id": service_id,
        "ecg_id": ecg_id,
        "patient_ref": patient_ref,
        "summary": summary[:256],
        "indicator": indicator,
        "card": card,
        "created_at": utcnow(),
    }


def insert_cards(session: Session | Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert card rows in the caller's transaction (a uuid already stored is kept as is),
    in one statement compiled once (every hook call stores its cards)."""
    if rows:
        statement = ignoring_insert(session, CardRow.__table__, ("uuid",))  # type: ignore[arg-type]
        session.execute(statement, list(rows))
