"""Last step of a hook call: remember the cards (for feedback) and audit the call.

This runs before the EHR gets its answer. The audit entries of one call go in one
transaction (one disk sync). A failure here fails the call: cards that carry PHI are never
shown unaudited.
"""

from __future__ import annotations

from cds_service.audit import AuditRecord, AuditTrail
from cds_service.hooks.context import BuiltCard, Gathered, HookContext
from cds_service.storage.cards import CardStore


def record(
    ctx: HookContext,
    cards_store: CardStore,
    audit: AuditTrail,
    cards: list[BuiltCard],
    gathered: Gathered,
    server: str | None,
) -> None:
    """Store each card and write the call's fetch, hook-call and card audit entries."""
    service, actor, patient_ref = ctx.service, ctx.actor, ctx.patient_ref
    for built in cards:
        card = built.card
        cards_store.save_card(
            card_uuid=card["uuid"],
            service_id=service.id,
            ecg_id=built.ecg_id,
            patient_ref=patient_ref,
            summary=card["summary"],
            indicator=card["indicator"],
            card=card,
        )
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
    audit.record_many(entries)
