"""Last step of a hook call: remember the cards (for feedback) and audit the call.

This runs before the EHR gets its answer. The card rows and the call's audit entries go in
one transaction (one disk sync): both are stored or neither. A failure here fails the call:
cards that carry PHI are never shown unaudited.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from cds_service.audit import AuditRecord, AuditTrail
from cds_service.hooks.context import BuiltCard, Gathered, HookContext
from cds_service.storage.cards import card_row, insert_cards


@dataclass(frozen=True)
class CallRecord:
    """What one hook call stores before its answer: its audit entries, and the writer of its
    card rows (run in the entries' transaction)."""

    entries: list[AuditRecord]
    write_rows: Callable[[Connection], None]

    def write(self, audit: AuditTrail) -> None:
        """Store it, in one transaction. Sync (a worker thread)."""
        audit.record_many(self.entries, with_rows=self.write_rows)

    async def awrite(self, audit: AuditTrail) -> None:
        """Store it from the event loop: the same transaction, committed by the audit
        trail's writer thread; returns once it is stored."""
        await audit.arecord_many(self.entries, with_rows=self.write_rows)


def record(
    ctx: HookContext,
    audit: AuditTrail,
    cards: list[BuiltCard],
    gathered: Gathered,
    server: str | None,
) -> None:
    """Store each card and write the call's fetch, hook-call and card audit entries, in one
    transaction. Sync (a worker thread)."""
    call_record(ctx, cards, gathered, server).write(audit)


def call_record(
    ctx: HookContext, cards: list[BuiltCard], gathered: Gathered, server: str | None
) -> CallRecord:
    """The call's audit entries and card rows (see :class:`CallRecord`)."""
    service, actor, patient_ref = ctx.service, ctx.actor, ctx.patient_ref
    rows = [
        card_row(
            card_uuid=built.card["uuid"],
            service_id=service.id,
            ecg_id=built.ecg_id,
            patient_ref=patient_ref,
            summary=built.card["summary"],
            indicator=built.card["indicator"],
            card=built.card,
        )
        for built in cards
    ]
    entries: list[AuditRecord] = []
    if gathered.fetched:
        entries.append(
            AuditRecord(
                "fetch",
                actor=actor,
                patient=patient_ref,
                detail={"server": server, "read": sorted(set(gathered.fetched))},
            )
        )
    entries.append(
        AuditRecord(
            "hook-call",
            actor=actor,
            patient=patient_ref,
            detail={
                "service": service.id,
                "hook": ctx.call.hook,
                "hookInstance": str(ctx.call.hookInstance),
                "ecgs": len(gathered.candidates),
                "cards": len(cards),
            },
        )
    )
    entries.extend(
        AuditRecord(
            "card",
            actor=actor,
            patient=patient_ref,
            ecg_id=built.ecg_id,
            model_version=built.model_version,
            detail={
                "service": service.id,
                "card": built.card["uuid"],
                "indicator": built.card["indicator"],
                "summary": built.card["summary"],
            },
        )
        for built in cards
    )

    def write_rows(conn: Connection) -> None:
        insert_cards(conn, rows)

    return CallRecord(entries, write_rows)
