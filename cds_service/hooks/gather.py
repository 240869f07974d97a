"""Step 1 of a hook call: the ECG candidates, from prefetch or searched on the EHR's server.

Prefetched resources are used as sent (following at most :data:`MAX_PREFETCH_PAGES` extra
pages); a prefetch key that is missing, or that the EHR answered with an OperationOutcome,
is fetched from ``fhirServer`` when the call names one on the allow-list. Resources about
another patient are dropped, never shown.
"""

from __future__ import annotations

import logging
from typing import Any

from cds_service.fhir_client import (
    FetchFailed,
    FhirFetcher,
    OutboundRefused,
    redact_url,
    url_allowed,
)
from cds_service.hooks.context import Gathered, HookContext
from cds_service.hooks.prefetch import PrefetchError, read_prefetch, render_template
from cds_service.hooks.problems import (
    MAX_ECGS_PER_CALL,
    MAX_ENDPOINT_READS,
    MAX_PREFETCH_PAGES,
    HookProblem,
)
from cds_service.hooks.schemas import HookRequest
from cds_service.hooks.services import ECG_QUERIES
from cds_service.hooks.sources import candidates_from, endpoint_references, newest_first
from cds_service.settings import Settings

log = logging.getLogger(__name__)


def open_fetcher(
    settings: Settings, call: HookRequest, iss: str
) -> tuple[FhirFetcher | None, str | None]:
    """A fetcher for the call's fhirServer, or None and why not (nothing contacted).
    :class:`HookProblem` (403) when the calling EHR (``iss``) names a FHIR server that its
    ``auth.trusted_issuers`` entry does not list as its own."""
    if not call.fhirServer:
        return None, "the request has no fhirServer"
    issuer = next((i for i in settings.auth.trusted_issuers if i.iss == iss), None)
    bound = issuer.fhir_servers if issuer is not None else []
    if bound and not url_allowed(call.fhirServer, bound):
        shown = redact_url(call.fhirServer)
        log.warning("hook call of %r names fhirServer %s, not its own; refused", iss, shown)
        raise HookProblem(
            403,
            f"fhirServer {shown} is not one of the FHIR servers of issuer {iss!r} "
            "(auth.trusted_issuers[].fhir_servers); a call names its EHR's own FHIR server",
            code="forbidden",
        )
    token = call.fhirAuthorization.access_token if call.fhirAuthorization else None
    try:
        return FhirFetcher(settings, call.fhirServer, token, issuer=issuer), None
    except OutboundRefused as exc:
        log.warning("hook call names fhirServer %s: %s; refused", exc.url, exc.problem)
        if exc.problem.startswith("is malformed"):
            return None, f"fhirServer {exc.url} {exc.problem}; it was not contacted"
        return None, f"fhirServer {exc.url} is not on this service's allow-list"


async def gather(ctx: HookContext, fetcher: FhirFetcher | None, why_not: str | None) -> Gathered:
    """ECG candidates from prefetch, or searched on fhirServer when not prefetched."""
    service, call = ctx.service, ctx.call
    out = Gathered()
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

    mine = []
    for resource in resources:
        if not _about_patient(resource, ctx.patient_id):
            # Never show one patient's ECG in another's chart, whatever the EHR sent.
            out.problems.append(
                f"{resource.get('resourceType')}/{resource.get('id', '?')}: belongs to another "
                "patient; ignored"
            )
            continue
        mine.append(resource)
    endpoints = await _endpoints(mine, fetcher, out)  # none read for another patient's studies
    for resource in mine:
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
    resources: list[dict[str, Any]], fetcher: FhirFetcher | None, out: Gathered
) -> dict[str, dict[str, Any]]:
    """Read the DICOMweb Endpoints ImagingStudies refer to (not contained, not prefetched),
    at most :data:`MAX_ENDPOINT_READS` of them: a call is answered in about 500 ms, and a
    Bundle of studies naming thousands of Endpoints must not make thousands of requests."""
    known = {f"Endpoint/{r.get('id')}": r for r in resources if r.get("resourceType") == "Endpoint"}
    wanted = list(
        dict.fromkeys(
            ref
            for r in resources
            if r.get("resourceType") == "ImagingStudy"
            for ref in endpoint_references(r)
            if ref not in known
        )
    )
    if wanted and fetcher is not None:
        for ref in wanted[:MAX_ENDPOINT_READS]:
            try:
                known[ref] = await fetcher.read(ref)
                out.fetched.append("Endpoint")
            except (FetchFailed, OutboundRefused) as exc:
                out.problems.append(f"{ref}: {exc}")
        if len(wanted) > MAX_ENDPOINT_READS:
            out.problems.append(
                f"{len(wanted) - MAX_ENDPOINT_READS} more Endpoint references not read (at "
                f"most {MAX_ENDPOINT_READS} a call; send the Endpoints in prefetch or contained)"
            )
    return known
