"""Step 3 of a hook call: store the loaded ECGs, submit what has no result, wait for it.

ECGs already seen are found by content hash and their cached result is used as is; new
ECGs are stored and submitted, and the call waits until the context's deadline for them.
The model never runs twice for the same ECG and model version. Runs in a thread;
:func:`accept_known` is the same step for a call about ECGs already classified, answered from
memory on the event loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime

from adapters import EcgFormatError, sha256_hex
from cds_service.allow_list import UrlMalformed, normalise_url
from cds_service.audit import Actor
from cds_service.hooks.assess import EcgRef
from cds_service.hooks.cache import HookCaches, caches_for
from cds_service.hooks.context import HookContext
from cds_service.hooks.load import Loaded
from cds_service.storage.ecgs import EcgStore
from cds_service.storage.jobs import JobLedger
from cds_service.storage.records import StoredResult
from cds_service.viewer.smart import same_patient

log = logging.getLogger(__name__)


@dataclass
class Classified:
    ref: EcgRef
    result: StoredResult | None
    ecg_id: str
    #: The job failed (the ledger retries on a later submit): not "pending".
    failed: bool = False


class OtherPatientsEcg(Exception):
    """The bytes are an ECG already stored for another patient: never shown in this call."""


def _digest(item: Loaded, caches: HookCaches) -> str:
    """SHA-256 of the candidate's bytes; for an Observation seen before, without making them."""
    quick = item.quick_key()
    if quick is not None:
        hit = caches.digests.get(quick)
        if hit is not None:
            return hit
    digest = sha256_hex(item.data)
    if quick is not None:
        caches.digests.put(quick, digest)
    return digest


def source_uri(origin: str, fhir_server: str | None) -> str:
    """Where a hook's ECG came from, as stored: its origin (``Observation/7``, or
    ``Observation (prefetched, no id)`` for a resource without an id) under the call's
    fhirServer (prefetch is read from that server too), so a later write-back can tell
    whether the call's ``Patient/<id>`` names a patient on the server it writes to. The
    server in its normal form (the allow-list's): one without user info, query or odd
    characters is what is stored, never the caller's text as sent. Without a usable
    fhirServer, the origin as the call gave it (write-back then knows of no server: such
    an ECG is not written back)."""
    if not fhir_server:
        return origin
    try:
        server = normalise_url(fhir_server)
    except UrlMalformed:
        return origin
    if server.query:
        return origin
    return f"{server.url.rstrip('/')}/{origin}"


def _store(
    ecgs: EcgStore, item: Loaded, patient_ref: str, actor: Actor, caches: HookCaches,
    fhir_server: str | None,
) -> tuple[str, datetime | None, bool]:  # fmt: skip
    """(ECG id, acquisition time, whether this call stored it first)."""
    c = item.candidate
    digest = _digest(item, caches)
    hit = caches.known.get(digest)
    created = False
    if hit is None:
        info = ecgs.accept_bytes(
            item.data,
            source_uri=source_uri(c.origin, fhir_server),
            patient_ref=patient_ref,
            format=c.format,
            actor=actor,
            sha256=digest,
        )
        hit = (info.id, info.acquired_at, info.patient_ref)
        created = info.created
        caches.known.put(digest, hit)
    ecg_id, acquired, owner = hit
    # Content-hash deduplication saves work, but a record (its viewer page, its feedback)
    # belongs to one patient: the same file in another patient's chart is not shown there.
    if not same_patient(owner, patient_ref):
        raise OtherPatientsEcg(ecg_id)
    return ecg_id, acquired, created


def accept_and_wait(
    ctx: HookContext, ecgs: EcgStore, jobs: JobLedger, loaded: list[Loaded], problems: list[str]
) -> list[Classified]:
    """Store (dedupe by hash), submit what has no result, wait until ``ctx.deadline``."""
    patient_ref, actor, server = ctx.patient_ref, ctx.actor, ctx.call.fhirServer
    caches = caches_for(ecgs)
    refs: dict[str, EcgRef] = {}
    items: dict[str, Loaded] = {}
    new: set[str] = set()  # stored by this call: no result to look for yet
    for item in loaded:
        c = item.candidate
        try:
            ecg_id, stored_at, created = _store(ecgs, item, patient_ref, actor, caches, server)
        except EcgFormatError as exc:
            problems.append(f"{c.origin}: {exc.problem}" + (f" ({exc.hint})" if exc.hint else ""))
            continue
        except OtherPatientsEcg as exc:
            log.warning("a hook call carried ECG %s, stored for another patient: not shown", exc)
            problems.append(
                f"{c.origin}: this exact ECG file is on file for another patient, so it is not "
                "shown here; check whether it was filed in the wrong chart"
            )
            continue
        if ecg_id not in refs:
            acquired: datetime | None = c.acquired or stored_at
            refs[ecg_id] = EcgRef(ecg_id, acquired, reference=c.reference, origin=c.origin)
            items[ecg_id] = item
            if created:
                new.add(ecg_id)
    if not refs:
        return []
    ids = list(refs)
    found = jobs.wait([i for i in ids if i not in new], 0)
    missing = [i for i in ids if found.get(i) is None]
    for ecg_id in list(missing):
        if ecg_id in new:  # just stored: no result or job can exist but a racing submit's
            jobs.submit_new(ecg_id)
            continue
        try:
            jobs.submit(ecg_id)
        except KeyError:  # removed from storage since we saw it: store it again
            caches.forget_ecg(ecg_id)
            new_id, _, _ = _store(
                ecgs, items[ecg_id], patient_ref, actor, caches, server
            )  # same patient
            refs[new_id] = replace(refs.pop(ecg_id), ecg_id=new_id)
            ids[ids.index(ecg_id)] = new_id
            missing[missing.index(ecg_id)] = new_id
            jobs.submit(new_id)
    if missing:
        found.update(jobs.wait(missing, max(0.0, ctx.deadline - time.monotonic())))
    version = jobs.model_version if found else None  # loaded already (results read it)
    out: list[Classified] = []
    for ecg_id in ids:
        result = found.get(ecg_id)
        if result is not None and result.model_version == version:
            caches.current.put(ecg_id, result)  # final: see hooks.cache
        failed = False
        if result is None:
            info = ecgs.get_info(ecg_id)
            if info is not None and info.status == "failed":
                failed = True
                problems.append(f"{refs[ecg_id].origin}: analysis failed ({info.error or 'error'})")
        out.append(Classified(refs[ecg_id], result, ecg_id, failed))
    return out


def accept_known(ctx: HookContext, ecgs: EcgStore, loaded: list[Loaded]) -> list[Classified] | None:
    """:func:`accept_and_wait`'s answer for a call whose every ECG this process has already
    seen (an Observation whose quick key is known), in this patient's chart, with a result
    of the current model version: from memory, no database read, no thread. None when any
    ECG is not such a one: the caller takes the full path, which says why (unreadable,
    another patient's, still pending) and fills these caches for the next call."""
    caches = caches_for(ecgs)
    refs: dict[str, EcgRef] = {}
    for item in loaded:
        c = item.candidate
        quick = item.quick_key()
        digest = caches.digests.get(quick) if quick is not None else None
        hit = caches.known.get(digest) if digest is not None else None
        if hit is None:
            return None
        ecg_id, stored_at, owner = hit
        if not same_patient(owner, ctx.patient_ref):
            return None
        if ecg_id not in refs:
            acquired = c.acquired or stored_at
            refs[ecg_id] = EcgRef(ecg_id, acquired, reference=c.reference, origin=c.origin)
    out: list[Classified] = []
    for ecg_id, ref in refs.items():
        result = caches.current.get(ecg_id)
        if result is None:
            return None
        out.append(Classified(ref, result, ecg_id))
    return out
