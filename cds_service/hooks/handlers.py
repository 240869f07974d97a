"""One hook call, start to finish: gather ECGs, look up or start classification, build cards.

The time budget rules everything here (CDS Hooks asks for answers "on the order of 500 ms"):
the call runs as explicit steps over one :class:`~cds_service.hooks.context.HookContext`,
gather -> load -> accept/wait -> cards -> record, and the wait budget
(``jobs.hook_wait_budget_s``) counts from the call's arrival, so fetching and storing new
ECGs eat into it instead of adding to it. ECGs still being analysed when it is spent get an
"analysis pending" card. A call about ECGs already classified (or about none) is answered on
the event loop from the process's caches; only its audit transaction leaves the loop.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool

from cds_service.audit import Actor, AuditError
from cds_service.auth import VerifiedToken
from cds_service.fhir_client import redact_url
from cds_service.hooks import cards as card_builders
from cds_service.hooks.accept import Classified, accept_and_wait, accept_known
from cds_service.hooks.assess import catalog_for, policy_for
from cds_service.hooks.cache import CardTemplates, caches_for
from cds_service.hooks.context import BuiltCard, Gathered, HookContext
from cds_service.hooks.gather import gather, open_fetcher
from cds_service.hooks.load import Loaded, load
from cds_service.hooks.qt_cards import qt_drug_card
from cds_service.hooks.qt_drugs import qt_drug_orders
from cds_service.hooks.record import call_record, record
from cds_service.hooks.schemas import FeedbackRequest, HookRequest
from cds_service.hooks.services import HookService
from cds_service.runtime import Runtime
from cds_service.settings import Settings
from cds_service.viewer.smart import card_links

log = logging.getLogger(__name__)


def _links(settings: Settings, ecg_id: str, card_uuid: str) -> list[dict[str, Any]]:
    """The signed viewer link, plus the SMART launch link when ``smart_client_id`` is set."""
    try:
        return card_links(settings, ecg_id, card_uuid=card_uuid)
    except Exception:  # the viewer is optional: a card without a link is still useful
        log.exception("viewer link unavailable")
        return []


def build_cards(
    ctx: HookContext,
    settings: Settings,
    model_version: str,
    classified: list[Classified],
    problems: list[str],
    templates: CardTemplates | None = None,
) -> list[BuiltCard]:
    """Cards with the ECG id and model version each is about (``templates``: where review
    cards of stored results are kept between calls)."""
    service, call, patient_ref = ctx.service, ctx.call, ctx.patient_ref
    catalog = catalog_for(settings)
    policy = policy_for(settings)
    out: list[BuiltCard] = []
    pending = [c for c in classified if c.result is None and not c.failed]

    if service.kind == "qt-drug":
        drugs = qt_drug_orders(
            call.context.get("draftOrders"),
            call.context.get("selections") if service.hook == "order-select" else None,
        )
        done = [c for c in classified if c.result is not None]
        if pending and (not done or _newer(pending[0], done[0])):
            out.append(
                BuiltCard(
                    card_builders.pending_card(len(pending), settings, model_version), None, None
                )
            )
            return out
        newest = done[0] if done else None
        newest_result = newest.result if newest is not None else None
        latest = (
            (newest.ref, newest_result.result)
            if newest is not None and newest_result is not None
            else None
        )
        card_uuid = str(uuid.uuid4())
        links = _links(settings, newest.ecg_id, card_uuid) if newest is not None else []
        card = qt_drug_card(
            drugs,
            latest,
            catalog=catalog,
            settings=settings,
            patient_ref=patient_ref,
            model_version=model_version,
            policy=policy,
            links=links,
        )
        if card is not None:
            card["uuid"] = card_uuid
            ecg_id = newest.ecg_id if newest is not None else None
            version = newest_result.model_version if newest_result is not None else None
            out.append(BuiltCard(card, ecg_id, version))
        return out

    for item in classified:
        stored = item.result
        if stored is None:
            continue
        # A stored result never changes: its card, but for ids and links, is made once.
        key = (item.ecg_id, stored.model_version, stored.created_at, patient_ref, item.ref)
        cached = templates.get(key) if templates is not None else None
        if cached is None:
            made = card_builders.review_card_template(
                item.ref,
                stored.result,
                catalog=catalog,
                settings=settings,
                patient_ref=patient_ref,
                policy=policy,
            )
            # kept serialised: issuing a card is then one parse instead of a dump and a parse
            cached = (orjson.dumps(made) if made is not None else None,)
            if templates is not None:
                templates.put(key, cached)
        template = cached[0]
        if template is None:
            continue
        card_uuid = str(uuid.uuid4())
        review = card_builders.issue_card(
            template, card_uuid=card_uuid, links=_links(settings, item.ecg_id, card_uuid)
        )
        out.append(BuiltCard(review, item.ecg_id, stored.model_version))
    rank = {"critical": 0, "warning": 1, "info": 2}
    out.sort(key=lambda c: rank[c.card["indicator"]])
    if pending:
        notice = card_builders.pending_card(len(pending), settings, model_version)
        out.append(BuiltCard(notice, None, None))
    if problems:
        notice = card_builders.unreadable_card(problems, settings, model_version)
        out.append(BuiltCard(notice, None, None))
    return out


def _newer(a: Classified, b: Classified) -> bool:
    if a.ref.acquired is None or b.ref.acquired is None:
        return False
    return a.ref.acquired > b.ref.acquired


async def handle_hook(
    service: HookService, call: HookRequest, runtime: Runtime, token: VerifiedToken
) -> list[dict[str, Any]]:
    """Answer one service call with its cards (already pruned and validated)."""
    settings = runtime.settings
    ctx = HookContext.of(
        service, call, token, deadline=time.monotonic() + settings.jobs.hook_wait_budget_s
    )

    if service.kind == "qt-drug":
        selections = call.context.get("selections") if service.hook == "order-select" else None
        if not qt_drug_orders(call.context.get("draftOrders"), selections):
            await call_record(ctx, [], Gathered(), None).awrite(runtime.audit)
            return []

    fetcher, why_not = open_fetcher(settings, call, token.iss)
    try:
        gathered = await gather(ctx, fetcher, why_not)
        loaded = await load(gathered.candidates, fetcher, gathered)
    finally:
        if fetcher is not None:
            await fetcher.aclose()
    server = redact_url(fetcher.base_url) if fetcher is not None else None
    known = await _answer_known(ctx, runtime, loaded, gathered, server)
    if known is not None:
        return [built.card for built in known]
    # One trip to a worker thread for the blocking rest of the call, not one per step.
    cards = await run_in_threadpool(_answer, ctx, runtime, loaded, gathered, server)
    return [built.card for built in cards]


async def _answer_known(
    ctx: HookContext,
    runtime: Runtime,
    loaded: list[Loaded],
    gathered: Gathered,
    server: str | None,
) -> list[BuiltCard] | None:
    """The call's cards when every ECG is already classified (a cached call) or there is
    none, built on the event loop from memory and recorded (awaited) before they are
    returned; None when the call needs the full path. Only the audit transaction leaves the
    loop, to the audit trail's writer thread."""
    caches = caches_for(runtime.ecgs)
    classified = accept_known(ctx, runtime.ecgs, loaded)
    if classified is None:
        return None
    settings = runtime.settings
    version = runtime.jobs.model_version  # loaded: ``current`` holds its results
    cards = build_cards(ctx, settings, version, classified, gathered.problems, caches.templates)
    try:
        await call_record(ctx, cards, gathered, server).awrite(runtime.audit)
    except AuditError:
        # Nothing of it was stored. An ECG removed from storage behind this process's back
        # fails its card row; the full path stores it again (and fails alike if the
        # database itself refuses).
        log.warning("audit of a cached hook call failed; answering it the full way")
        for item in classified:
            caches.forget_ecg(item.ecg_id)
        return None
    return cards


def _answer(
    ctx: HookContext,
    runtime: Runtime,
    loaded: list[Loaded],
    gathered: Gathered,
    server: str | None,
) -> list[BuiltCard]:
    """Store/look up the ECGs (waiting for new ones), build the cards, record them. Sync."""
    classified = accept_and_wait(ctx, runtime.ecgs, runtime.jobs, loaded, gathered.problems)
    cards = build_cards(
        ctx,
        runtime.settings,
        runtime.jobs.model_version,
        classified,
        gathered.problems,
        caches_for(runtime.ecgs).templates,
    )
    record(ctx, runtime.audit, cards, gathered, server)
    return cards


def handle_feedback(
    service: HookService, body: FeedbackRequest, runtime: Runtime, token: VerifiedToken
) -> int:
    """Store each feedback item against its card (and so its ECG); audit it. Sync (thread)."""
    actor = Actor(iss=token.iss, sub=token.sub)
    for item in body.feedback:
        reason = item.overrideReason
        stored = runtime.cards.save_feedback(
            card_uuid=item.card,
            service_id=service.id,
            outcome=item.outcome,
            accepted_suggestions=[s.id for s in item.acceptedSuggestions or []],
            override_reason=(
                reason.reason.model_dump(exclude_none=True) if reason and reason.reason else None
            ),
            user_comment=reason.userComment if reason else None,
            outcome_timestamp=item.outcomeTimestamp,
        )
        try:
            runtime.audit.record(
                "feedback",
                actor=actor,
                ecg_id=stored.ecg_id,
                detail={
                    "service": service.id,
                    "card": item.card,
                    "outcome": item.outcome,
                    "cardKnown": stored.card_known,
                },
            )
        except Exception:
            log.exception("audit trail write failed for feedback")
    return len(body.feedback)
