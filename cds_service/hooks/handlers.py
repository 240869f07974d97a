"""One hook call, start to finish: gather ECGs, look up or start classification, build cards.

The time budget rules everything here (CDS Hooks asks for answers "on the order of 500 ms"):
ECGs already seen are found by content hash and their cached result is used as is; new
ECGs are stored and submitted, and the call waits at most ``jobs.hook_wait_budget_s`` for
them before answering with an "analysis pending" card. The model never runs twice for the
same ECG and model version.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool

from adapters import EcgFormatError, sha256_hex
from cds_service.audit import Actor, AuditRecord
from cds_service.auth import VerifiedToken
from cds_service.fhir_client import FetchFailed, FhirFetcher, OutboundRefused, redact_url
from cds_service.hooks import cards as card_builders
from cds_service.hooks.cards import CardPolicy, EcgRef
from cds_service.hooks.prefetch import PrefetchError, read_prefetch, render_template
from cds_service.hooks.qt_drugs import qt_drug_orders
from cds_service.hooks.schemas import FeedbackRequest, HookRequest
from cds_service.hooks.services import ECG_QUERIES, HookService
from cds_service.hooks.sources import (
    EcgCandidate,
    candidates_from,
    canonical_json,
    endpoint_references,
    newest_first,
)
from cds_service.settings import Settings
from cds_service.storage.records import StoredResult

log = logging.getLogger(__name__)

#: At most this many ECGs (newest first) are reviewed per call.
MAX_ECGS_PER_CALL = 5
#: Extra pages of a paged prefetch Bundle that are followed (needs fhirServer).
MAX_PREFETCH_PAGES = 2


class HookProblem(Exception):
    """A call the service cannot answer: 400 (malformed) or 412 (data unavailable)."""

    def __init__(self, status: int, message: str, *, code: str = "invalid") -> None:
        self.status = status
        self.message = message
        self.code = code
        super().__init__(message)


@dataclass
class _Loaded:
    candidate: EcgCandidate
    data: bytes


@dataclass
class _Gathered:
    candidates: list[EcgCandidate] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)  # what was read from the EHR (audit)


def _actor(token: VerifiedToken, call: HookRequest) -> Actor:
    user = call.context.get("userId")
    return Actor(iss=token.iss, sub=token.sub, user=user if isinstance(user, str) else None)


def _patient_id(service: HookService, call: HookRequest) -> str:
    if call.hook != service.hook:
        raise HookProblem(
            400, f"service {service.id!r} answers the {service.hook!r} hook, not {call.hook!r}"
        )
    patient_id = call.context.get("patientId")
    if not isinstance(patient_id, str) or not patient_id:
        raise HookProblem(400, "context.patientId is required (a non-empty string)")
    if service.kind == "qt-drug":
        draft = call.context.get("draftOrders")
        if not isinstance(draft, dict) or draft.get("resourceType") != "Bundle":
            raise HookProblem(400, "context.draftOrders is required (a FHIR Bundle of orders)")
        selections = call.context.get("selections")
        if service.hook == "order-select" and (
            not isinstance(selections, list) or not all(isinstance(s, str) for s in selections)
        ):
            raise HookProblem(400, "context.selections is required (a list of order references)")
    return patient_id


def _open_fetcher(settings: Settings, call: HookRequest) -> tuple[FhirFetcher | None, str | None]:
    """A fetcher for the call's fhirServer, or None and why not (nothing contacted)."""
    if not call.fhirServer:
        return None, "the request has no fhirServer"
    token = call.fhirAuthorization.access_token if call.fhirAuthorization else None
    try:
        return FhirFetcher(settings, call.fhirServer, token), None
    except OutboundRefused as exc:
        log.warning("hook call names fhirServer %s, not allow-listed: refused", exc.url)
        return None, f"fhirServer {exc.url} is not on this service's allow-list"


async def _gather(
    service: HookService, call: HookRequest, fetcher: FhirFetcher | None, why_not: str | None
) -> _Gathered:
    """ECG candidates from prefetch, or searched on fhirServer when not prefetched."""
    out = _Gathered()
    resources: list[dict[str, Any]] = []
    for key in service.prefetch:
        try:
            item = read_prefetch(call.prefetch, key)
        except PrefetchError as exc:
            raise HookProblem(400, str(exc)) from None
        if item.state == "present":
            resources += item.resources
            next_url, pages = item.next_url, 0
            while next_url and fetcher is not None and pages < MAX_PREFETCH_PAGES:
                try:
                    more, next_url = await fetcher.page(next_url)
                except (FetchFailed, OutboundRefused) as exc:
                    out.problems.append(f"prefetch.{key}: next page not read ({exc})")
                    break
                resources += more
                pages += 1
            continue
        if item.state == "null":
            continue
        # missing, or the EHR's own query failed (OperationOutcome): fetch it ourselves
        if fetcher is None:
            state = (
                "missing" if item.state == "missing" else f"an OperationOutcome ({item.problem})"
            )
            raise HookProblem(
                412,
                f"prefetch.{key} is {state} and cannot be fetched: {why_not}. Send it in "
                "prefetch or send fhirServer and fhirAuthorization.",
                code="not-found",
            )
        resource_type, template_params = ECG_QUERIES[key]
        params: dict[str, str] = {}
        for name, template in template_params.items():
            value = render_template(template, call.context)
            if value is None:
                raise HookProblem(400, f"context lacks what prefetch.{key} needs ({template})")
            params[name] = value
        try:
            resources += await fetcher.search(resource_type, params)
        except (FetchFailed, OutboundRefused) as exc:
            raise HookProblem(
                412, f"prefetch.{key} was not sent and fetching it failed: {exc}", code="not-found"
            ) from None
        out.fetched.append(resource_type)

    endpoints = await _endpoints(resources, fetcher, out)
    patient_id = str(call.context.get("patientId"))
    for resource in resources:
        if not _about_patient(resource, patient_id):
            # Never show one patient's ECG in another's chart, whatever the EHR sent.
            out.problems.append(
                f"{resource.get('resourceType')}/{resource.get('id', '?')}: belongs to another "
                "patient; ignored"
            )
            continue
        out.candidates += candidates_from(resource, endpoints)
    out.candidates = newest_first(out.candidates)[:MAX_ECGS_PER_CALL]
    return out


def _about_patient(resource: dict[str, Any], patient_id: str) -> bool:
    """False when the resource names a subject/patient other than the hook's patient."""
    if resource.get("resourceType") == "Endpoint":
        return True
    subject = resource.get("subject") or resource.get("patient")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(reference, str) or not reference:
        return True  # no subject given: nothing to contradict
    return reference == f"Patient/{patient_id}" or reference.endswith(f"/Patient/{patient_id}")


async def _endpoints(
    resources: list[dict[str, Any]], fetcher: FhirFetcher | None, out: _Gathered
) -> dict[str, dict[str, Any]]:
    """Read the DICOMweb Endpoints ImagingStudies refer to (not contained, not prefetched)."""
    known = {f"Endpoint/{r.get('id')}": r for r in resources if r.get("resourceType") == "Endpoint"}
    wanted = [
        ref
        for r in resources
        if r.get("resourceType") == "ImagingStudy"
        for ref in endpoint_references(r)
        if ref not in known
    ]
    if wanted and fetcher is not None:
        for ref in dict.fromkeys(wanted):
            try:
                known[ref] = await fetcher.read(ref)
                out.fetched.append("Endpoint")
            except (FetchFailed, OutboundRefused) as exc:
                out.problems.append(f"{ref}: {exc}")
    return known


async def _load(
    candidates: list[EcgCandidate], fetcher: FhirFetcher | None, gathered: _Gathered
) -> list[_Loaded]:
    """Bytes for each candidate: inline, or fetched concurrently (attachments, WADO-RS)."""

    async def one(candidate: EcgCandidate) -> _Loaded | None:
        if candidate.resource is not None:
            return _Loaded(candidate, canonical_json(candidate.resource))
        if candidate.attachment is not None and candidate.attachment.get("data"):
            fetch = fetcher or _InlineOnly()
            data = await fetch.attachment_bytes(candidate.attachment)
            return _Loaded(candidate, data)
        if fetcher is None:
            gathered.problems.append(f"{candidate.origin}: not fetched (no usable fhirServer)")
            return None
        if candidate.dicomweb is not None:
            parts = await fetcher.wado(candidate.dicomweb)
            gathered.fetched.append("DICOMweb")
            return _Loaded(candidate, parts[0])
        if candidate.attachment is not None:
            data = await fetcher.attachment_bytes(candidate.attachment)
            gathered.fetched.append("attachment")
            return _Loaded(candidate, data)
        return None

    async def guarded(candidate: EcgCandidate) -> _Loaded | None:
        try:
            return await one(candidate)
        except (FetchFailed, OutboundRefused) as exc:
            gathered.problems.append(f"{candidate.origin}: {exc}")
            return None

    results = await asyncio.gather(*(guarded(c) for c in candidates))
    return [r for r in results if r is not None]


class _InlineOnly:
    """Decodes inline attachment data without any server (no fhirServer given)."""

    async def attachment_bytes(self, attachment: dict[str, Any]) -> bytes:
        import base64
        import binascii

        try:
            return base64.b64decode(str(attachment.get("data")), validate=True)
        except (binascii.Error, ValueError):
            raise FetchFailed("attachment", "inline data is not valid base64") from None


@dataclass
class _Classified:
    ref: EcgRef
    result: StoredResult | None
    ecg_id: str
    #: The job failed (the pipeline retries on a later submit): not "pending".
    failed: bool = False


class _KnownEcgs:
    """SHA-256 -> (ECG id, acquisition time) of ECGs this process has already stored.

    Stored ECGs are immutable, so a repeat call skips the store (a database round trip and
    an ingest audit entry) and goes straight to the cached result. Bounded LRU.
    """

    def __init__(self, size: int = 20_000) -> None:
        self._items: OrderedDict[str, tuple[str, datetime | None]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, digest: str) -> tuple[str, datetime | None] | None:
        with self._lock:
            hit = self._items.get(digest)
            if hit is not None:
                self._items.move_to_end(digest)
            return hit

    def put(self, digest: str, value: tuple[str, datetime | None]) -> None:
        with self._lock:
            self._items[digest] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def forget(self, ecg_id: str) -> None:
        with self._lock:
            for digest in [d for d, (i, _) in self._items.items() if i == ecg_id]:
                del self._items[digest]


_KNOWN: weakref.WeakKeyDictionary[Any, _KnownEcgs] = weakref.WeakKeyDictionary()


def _known(pipeline: Any) -> _KnownEcgs:
    known = _KNOWN.get(pipeline)
    if known is None:
        known = _KNOWN.setdefault(pipeline, _KnownEcgs())
    return known


def _store(
    pipeline: Any, item: _Loaded, patient_ref: str, actor: Actor, known: _KnownEcgs
) -> tuple[str, datetime | None]:
    c = item.candidate
    digest = sha256_hex(item.data)
    hit = known.get(digest)
    if hit is not None:
        return hit
    info = pipeline.accept_bytes(
        item.data, source_uri=c.origin, patient_ref=patient_ref, format=c.format, actor=actor
    )
    known.put(digest, (info.id, info.acquired_at))
    return info.id, info.acquired_at


def _accept_and_wait(
    runtime: Any,
    loaded: list[_Loaded],
    patient_ref: str,
    actor: Actor,
    problems: list[str],
    deadline: float,
) -> list[_Classified]:
    """Store (dedupe by hash), submit what has no result, wait until ``deadline``
    (``time.monotonic``). Runs in a thread."""
    pipeline = runtime.pipeline
    known = _known(pipeline)
    refs: dict[str, EcgRef] = {}
    items: dict[str, _Loaded] = {}
    for item in loaded:
        c = item.candidate
        try:
            ecg_id, stored_at = _store(pipeline, item, patient_ref, actor, known)
        except EcgFormatError as exc:
            problems.append(f"{c.origin}: {exc.problem}" + (f" ({exc.hint})" if exc.hint else ""))
            continue
        if ecg_id not in refs:
            acquired: datetime | None = c.acquired or stored_at
            refs[ecg_id] = EcgRef(ecg_id, acquired, reference=c.reference, origin=c.origin)
            items[ecg_id] = item
    if not refs:
        return []
    ids = list(refs)
    found = pipeline.wait(ids, 0)
    missing = [i for i in ids if found.get(i) is None]
    for ecg_id in list(missing):
        try:
            pipeline.submit(ecg_id)
        except KeyError:  # removed from storage since we saw it: store it again
            known.forget(ecg_id)
            new_id, _ = _store(pipeline, items[ecg_id], patient_ref, actor, known)
            refs[new_id] = replace(refs.pop(ecg_id), ecg_id=new_id)
            ids[ids.index(ecg_id)] = new_id
            missing[missing.index(ecg_id)] = new_id
            pipeline.submit(new_id)
    if missing:
        found.update(pipeline.wait(missing, max(0.0, deadline - time.monotonic())))
    out: list[_Classified] = []
    for ecg_id in ids:
        result = found.get(ecg_id)
        failed = False
        if result is None:
            info = pipeline.get_info(ecg_id)
            if info is not None and info.status == "failed":
                failed = True
                problems.append(f"{refs[ecg_id].origin}: analysis failed ({info.error or 'error'})")
        out.append(_Classified(refs[ecg_id], result, ecg_id, failed))
    return out


def _links(settings: Settings, ecg_id: str, card_uuid: str) -> list[dict[str, Any]]:
    try:
        from cds_service.viewer.links import viewer_link

        url = viewer_link(settings, ecg_id, card_uuid=card_uuid)
    except Exception:  # the viewer is optional: a card without a link is still useful
        log.exception("viewer link unavailable")
        return []
    return [{"label": "View the ECG tracing", "url": url, "type": "absolute"}]


def _build_cards(
    service: HookService,
    call: HookRequest,
    runtime: Any,
    classified: list[_Classified],
    problems: list[str],
    patient_ref: str,
) -> list[tuple[dict[str, Any], str | None, str | None]]:
    """Cards with the ECG id and model version each is about."""
    settings: Settings = runtime.settings
    catalog = card_builders.catalog_for(settings)
    policy = CardPolicy()
    model_version = runtime.pipeline.model_version
    out: list[tuple[dict[str, Any], str | None, str | None]] = []
    pending = [c for c in classified if c.result is None and not c.failed]

    if service.kind == "qt-drug":
        drugs = qt_drug_orders(
            call.context.get("draftOrders"),
            call.context.get("selections") if service.hook == "order-select" else None,
        )
        done = [c for c in classified if c.result is not None]
        if pending and (not done or _newer(pending[0], done[0])):
            out.append(
                (card_builders.pending_card(len(pending), settings, model_version), None, None)
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
        card = card_builders.qt_drug_card(
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
            out.append((card, ecg_id, version))
        return out

    for item in classified:
        if item.result is None:
            continue
        card_uuid = str(uuid.uuid4())
        card = card_builders.review_card(
            item.ref,
            item.result.result,
            catalog=catalog,
            settings=settings,
            patient_ref=patient_ref,
            policy=policy,
            links=_links(settings, item.ecg_id, card_uuid),
            card_uuid=card_uuid,
        )
        if card is not None:
            out.append((card, item.ecg_id, item.result.model_version))
    rank = {"critical": 0, "warning": 1, "info": 2}
    out.sort(key=lambda c: rank[c[0]["indicator"]])
    if pending:
        out.append((card_builders.pending_card(len(pending), settings, model_version), None, None))
    if problems:
        out.append((card_builders.unreadable_card(problems, settings, model_version), None, None))
    return out


def _newer(a: _Classified, b: _Classified) -> bool:
    if a.ref.acquired is None or b.ref.acquired is None:
        return False
    return a.ref.acquired > b.ref.acquired


def _record(
    runtime: Any,
    service: HookService,
    call: HookRequest,
    actor: Actor,
    patient_ref: str,
    cards: list[tuple[dict[str, Any], str | None, str | None]],
    gathered: _Gathered,
    server: str | None,
) -> None:
    """Remember the cards (for feedback) and audit the call, before the EHR gets its answer.

    The audit entries of one call go in one transaction (one disk sync). A failure here
    fails the call: cards that carry PHI are never shown unaudited.
    """
    pipeline, audit = runtime.pipeline, runtime.audit
    for card, ecg_id, _version in cards:
        pipeline.save_card(
            card_uuid=card["uuid"],
            service_id=service.id,
            ecg_id=ecg_id,
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
                "hook": call.hook,
                "hookInstance": str(call.hookInstance),
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
            ecg_id=ecg_id,
            model_version=version,
            detail={
                "service": service.id,
                "card": card["uuid"],
                "indicator": card["indicator"],
                "summary": card["summary"],
            },
        )
        for card, ecg_id, version in cards
    )
    audit.record_many(entries)


async def handle_hook(
    service: HookService, call: HookRequest, runtime: Any, token: VerifiedToken
) -> list[dict[str, Any]]:
    """Answer one service call with its cards (already pruned and validated)."""
    settings: Settings = runtime.settings
    # The wait budget counts from the call's arrival, so fetching and storing new ECGs
    # eat into it instead of adding to it: the EHR gets its answer within ~budget.
    deadline = time.monotonic() + settings.jobs.hook_wait_budget_s
    patient_id = _patient_id(service, call)
    patient_ref = f"Patient/{patient_id}"
    actor = _actor(token, call)

    if service.kind == "qt-drug":
        selections = call.context.get("selections") if service.hook == "order-select" else None
        if not qt_drug_orders(call.context.get("draftOrders"), selections):
            await run_in_threadpool(
                _record, runtime, service, call, actor, patient_ref, [], _Gathered(), None
            )
            return []

    fetcher, why_not = _open_fetcher(settings, call)
    try:
        gathered = await _gather(service, call, fetcher, why_not)
        loaded = await _load(gathered.candidates, fetcher, gathered)
    finally:
        if fetcher is not None:
            await fetcher.aclose()
    classified = await run_in_threadpool(
        _accept_and_wait, runtime, loaded, patient_ref, actor, gathered.problems, deadline
    )
    cards = await run_in_threadpool(
        _build_cards, service, call, runtime, classified, gathered.problems, patient_ref
    )
    server = redact_url(fetcher.base_url) if fetcher is not None else None
    await run_in_threadpool(
        _record, runtime, service, call, actor, patient_ref, cards, gathered, server
    )
    return [card for card, _, _ in cards]


def handle_feedback(
    service: HookService, body: FeedbackRequest, runtime: Any, token: VerifiedToken
) -> int:
    """Store each feedback item against its card (and so its ECG); audit it. Sync (thread)."""
    pipeline, audit = runtime.pipeline, runtime.audit
    actor = Actor(iss=token.iss, sub=token.sub)
    for item in body.feedback:
        reason = item.overrideReason
        stored = pipeline.save_feedback(
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
            audit.record(
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
