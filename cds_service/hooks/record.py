"""Last step of a hook call: remember the cards (for feedback) and audit the call.

This runs before the EHR gets its answer. The card rows and the call's audit entries go in
one transaction (one disk sync): both are stored or neither. A failure here fails the call:
cards that carry PHI are never shown unaudited.
"""

from __future__ import annotations

from cds_service.audit import AuditRecord, AuditTrail
from cds_service.hooks.context import BuiltCard, Gathered, HookContext
from cds_service.storage.cards import card_row, insert_cards


def record(
    ctx: HookContext,
    audit: AuditTrail,
    cards: list[BuiltCard],
    gathered: Gathered,
    server: str | None,
) -> None:
    """Store each card and write the call's fetch, hook-call and card audit entries, in one
    transaction."""
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
    audit.record_many(entries, with_rows=lambda conn: insert_cards(conn, rows))
