"""Outbound FHIR and DICOMweb reads for hook calls, limited to allow-listed base URLs.

Every URL is checked against ``fhir.allowed_servers`` / ``fhir.allowed_dicomweb`` *before*
any connection is made; a ``fhirServer`` that is not on the list is refused, never
contacted. Redirects are not followed (a redirect could leave the allow-list). The EHR's
access token travels only in the ``Authorization`` header of requests to those servers: it
is never logged, never stored, and never part of an exception message.

Everything goes through one pooled ``httpx`` client per event loop, streamed into a
:class:`~cds_service.capped_body.CappedBody` (refused as soon as it passes its bound, its
decompression bounded too): FHIR searches and reads (JSON, bounded by ``max_request_bytes``,
what a prefetch carrying the same Bundle may be) and attachment bytes (Binary resources,
DICOMweb WADO-RS instances, bounded by ``max_ecg_bytes``), the latter parsed by
:mod:`cds_service.dicomweb` (the same code ``ecg-cds ingest`` reads a PACS with). (fhirpy,
used before, read whole answers into memory, gzip-inflated, and opened a new connection
for every request.)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import ssl
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

# Re-exported: callers import the allow-list names from here too.
from cds_service.allow_list import OutboundRefused, check_url, redact_url, url_allowed
from cds_service.capped_body import ACCEPT_ENCODING, FetchFailed, aread_body
from cds_service.dicomweb import (
    WADO_ACCEPT,
    NoCookies,
    check_status,
    split_multipart,
    wado_parts,
)
from cds_service.fhir_result_elements import FHIR_ID
from cds_service.hooks.prefetch import PrefetchError, bundle_resources
from cds_service.settings import Settings, TrustedIssuer

__all__ = [
    "DicomwebRef",
    "FetchFailed",
    "FhirFetcher",
    "OutboundRefused",
    "redact_url",
    "split_multipart",
    "url_allowed",
]

log = logging.getLogger(__name__)
# httpx logs every request URL at INFO; search URLs carry patient ids. Keep them out of the
# service log unless an operator turns httpx logging on deliberately.
if logging.getLogger("httpx").level == logging.NOTSET:
    logging.getLogger("httpx").setLevel(logging.WARNING)

#: At most this many search pages are followed per query (a hook has ~500 ms).
MAX_PAGES = 3
FHIR_JSON = "application/fhir+json, application/json;q=0.9"
#: What a FHIR server's error statuses say on a card (the rest: "answered an error").
_REFUSED = {
    401: "the FHIR server refused the access token (401)",
    403: "the access token does not grant this read (403)",
    404: "not found (404)",
}


@dataclass(frozen=True)
class DicomwebRef:
    """Where a DICOM ECG lives: a DICOMweb base and the UIDs below it."""

    base_url: str
    study_uid: str
    series_uid: str | None = None
    instance_uid: str | None = None

    @property
    def url(self) -> str:
        url = f"{self.base_url.rstrip('/')}/studies/{self.study_uid}"
        if self.series_uid:
            url += f"/series/{self.series_uid}"
            if self.instance_uid:
                url += f"/instances/{self.instance_uid}"
        return url


class FhirFetcher:
    """Reads from one EHR's FHIR server (and its allow-listed DICOMweb) for one hook call."""

    def __init__(
        self,
        settings: Settings,
        server: str,
        access_token: str | None,
        *,
        max_bytes: int | None = None,
        issuer: TrustedIssuer | None = None,
    ) -> None:
        self.settings = settings
        #: The calling EHR's own servers, when its trusted_issuers entry lists them: other
        #: allow-listed servers are not read for it.
        self._own_fhir = list(issuer.fhir_servers) if issuer else []
        self._own_dicomweb = list(issuer.dicomweb_servers) if issuer else []
        self._iss = issuer.iss if issuer else None
        self.base_url = check_url(server, settings.fhir.allowed_servers, kind="fhirServer").rstrip(
            "/"
        )
        self.max_bytes = max_bytes or settings.max_ecg_bytes
        #: A search page or read: as large as a hook request (which may carry the same
        #: Bundle as prefetch) may be.
        self.max_json_bytes = settings.max_request_bytes
        authorization = f"Bearer {access_token}" if access_token else None
        self._headers = {"Authorization": authorization} if authorization else {}
        self._timeout = settings.fhir.timeout_s

    def __repr__(self) -> str:  # never show the token
        return f"FhirFetcher({self.base_url!r})"

    async def aclose(self) -> None:
        """Nothing to release: connections belong to the shared per-loop client."""

    async def __aenter__(self) -> FhirFetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ FHIR REST

    async def search(self, resource_type: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Search and follow up to :data:`MAX_PAGES` pages; the matched resources."""
        bundle = await self._execute(resource_type, params, what=f"{resource_type} search")
        resources, next_url = _matches(bundle, f"{resource_type} search")
        pages = 1
        while next_url and pages < MAX_PAGES:
            more, next_url = await self.page(next_url)
            resources.extend(more)
            pages += 1
        return resources

    async def page(self, url: str) -> tuple[list[dict[str, Any]], str | None]:
        """One more page of a searchset (a ``next`` link, which must be on our server)."""
        url = check_url(url, [self.base_url], kind="search page")
        bundle = await self._execute(url, None, what="search page")
        return _matches(bundle, "search page")

    async def read(self, reference: str) -> dict[str, Any]:
        """Read ``Type/id`` (relative to fhirServer) or an absolute URL on fhirServer."""
        if reference.startswith(("http://", "https://")):
            reference = check_url(reference, [self.base_url], kind="reference")
        elif not re.fullmatch(rf"[A-Za-z]+/{FHIR_ID}", reference):
            raise FetchFailed(reference, "not a relative reference Type/id")
        return await self._execute(reference, None, what=reference.split("?")[0])

    async def _execute(
        self, path: str, params: dict[str, str] | None, *, what: str
    ) -> dict[str, Any]:
        """GET ``path`` (relative to fhirServer, or an absolute URL already checked to be on
        it) as FHIR JSON, with the EHR's access token."""
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path}"
        headers = {**self._headers, "Accept": FHIR_JSON}
        try:
            async with _shared_http().stream(
                "GET", url, params=params, headers=headers, timeout=self._timeout
            ) as response:
                raw = await aread_body(response, what, self.max_json_bytes)
                status = response.status_code
        except (httpx.HTTPError, UnicodeEncodeError) as exc:  # a header httpx cannot send
            raise FetchFailed(what, f"FHIR server unreachable ({type(exc).__name__})") from None
        if status in _REFUSED:
            raise FetchFailed(what, _REFUSED[status])
        if not 200 <= status < 300:
            said = _diagnostics(raw) or f"HTTP {status}"
            raise FetchFailed(what, f"the FHIR server answered an error: {said[:200]}")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            # an HTML login page of a proxy, a truncated body, JSON nested past the stack
            raise FetchFailed(what, "the FHIR server answered something that is not JSON") from None
        if not isinstance(data, dict):
            raise FetchFailed(what, "the FHIR server answered something that is not JSON")
        return data

    # ------------------------------------------------------------------ attachments

    def _resolve(self, url: str) -> tuple[str, str]:
        """Absolute URL for an attachment and which allow-list it is on ("fhir"/"dicomweb")."""
        if not url.startswith(("http://", "https://")):
            url = f"{self.base_url}/{url.lstrip('/')}"
        try:
            fhir_bases = [self.base_url, *self.settings.fhir.allowed_servers]
            checked = check_url(url, fhir_bases, kind="attachment URL")
        except OutboundRefused:
            pass
        else:
            if self._own_fhir:  # the call's own fhirServer is one of them (open_fetcher)
                own = [self.base_url, *self._own_fhir]
                self._own(checked, own, "fhir_servers", "attachment URL")
            return checked, "fhir"
        checked = check_url(url, self.settings.fhir.allowed_dicomweb, kind="attachment URL")
        return self._own(checked, self._own_dicomweb, "dicomweb_servers", "attachment URL"), (
            "dicomweb"
        )

    def _own(self, url: str, own: list[str], setting: str, kind: str) -> str:
        """``url`` (allow-listed) when it is on the calling EHR's own servers, or the EHR
        lists none for ``setting``; else :class:`OutboundRefused`: another EHR's server or
        PACS, never read for this one."""
        if own and not url_allowed(url, own):
            raise OutboundRefused(
                url,
                kind,
                f"is not on a server of issuer {self._iss!r} (auth.trusted_issuers[].{setting})",
            )
        return url

    async def attachment_bytes(self, attachment: dict[str, Any]) -> bytes:
        """The bytes of a FHIR Attachment: inline ``data``, a Binary, or a WADO-RS URL."""
        data = attachment.get("data")
        if isinstance(data, str) and data:
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise FetchFailed("attachment", "inline data is not valid base64") from None
            if len(raw) > self.max_bytes:
                raise FetchFailed("attachment", f"inline data is over {self.max_bytes} bytes")
            return raw
        url = attachment.get("url")
        if not isinstance(url, str) or not url:
            raise FetchFailed("attachment", "has neither data nor url")
        absolute, kind = self._resolve(url)
        if kind == "dicomweb" or "/studies/" in urlsplit(absolute).path:
            parts = await self._wado(absolute)
            return parts[0]
        return await self._binary(absolute)

    async def _binary(self, url: str) -> bytes:
        """A Binary: raw bytes when the server serves them, else the JSON form's ``data``."""
        body, content_type = await self._get(url, accept="application/octet-stream, */*;q=0.5")
        if "json" in content_type:
            try:
                import json

                resource = json.loads(body)
            except ValueError:
                return body
            except RecursionError:  # nested past the parser's stack: no Binary, no ECG
                raise FetchFailed(
                    redact_url(url), "the server answered JSON nested too deep to read"
                ) from None
            if isinstance(resource, dict) and resource.get("resourceType") == "Binary":
                encoded = resource.get("data")
                if not isinstance(encoded, str):
                    raise FetchFailed(redact_url(url), "Binary has no data")
                try:
                    return base64.b64decode(encoded, validate=True)
                except (binascii.Error, ValueError):
                    raise FetchFailed(redact_url(url), "Binary.data is not base64") from None
        return body

    async def wado(self, ref: DicomwebRef) -> list[bytes]:
        """WADO-RS retrieve: the DICOM instances at ``ref`` (study, series or instance)."""
        url = check_url(ref.url, self.settings.fhir.allowed_dicomweb, kind="DICOMweb URL")
        return await self._wado(
            self._own(url, self._own_dicomweb, "dicomweb_servers", "DICOMweb URL")
        )

    async def _wado(self, url: str) -> list[bytes]:
        body, content_type = await self._get(url, accept=WADO_ACCEPT)
        return wado_parts(url, body, content_type)

    async def _get(self, url: str, *, accept: str) -> tuple[bytes, str]:
        what = redact_url(url)
        # The EHR's access token is for its fhirServer: another allow-listed server (a
        # second EHR, the PACS) an attachment points to gets the request, never the token.
        own = url_allowed(url, [self.base_url])
        headers = {**(self._headers if own else {}), "Accept": accept}
        try:
            async with _shared_http().stream(
                "GET", url, headers=headers, timeout=self._timeout
            ) as response:
                check_status(url, response.status_code)
                body = await aread_body(response, what, self.max_bytes)
                return body, response.headers.get("content-type", "").lower()
        except (httpx.HTTPError, UnicodeEncodeError) as exc:
            raise FetchFailed(what, f"unreachable ({type(exc).__name__})") from None


def _diagnostics(raw: bytes) -> str | None:
    """What an error answer's OperationOutcome says (its issues' diagnostics or text)."""
    try:
        outcome = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return None
    issues = outcome.get("issue")
    said = [
        str(issue.get("diagnostics") or (issue.get("details") or {}).get("text") or "")
        for issue in (issues if isinstance(issues, list) else [])
        if isinstance(issue, dict)
    ]
    return "; ".join(s for s in said if s) or None


def _matches(bundle: dict[str, Any], what: str) -> tuple[list[dict[str, Any]], str | None]:
    """:func:`bundle_resources` of a server's answer: a malformed one is a failed read."""
    try:
        return bundle_resources(bundle, what)
    except PrefetchError as exc:
        problem = str(exc).removeprefix(f"{what}: ")
        raise FetchFailed(what, f"the server answered a malformed Bundle ({problem})") from None


_SSL_CONTEXT: ssl.SSLContext | None = None
_HTTP_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def _shared_http() -> httpx.AsyncClient:
    """One pooled client per event loop: building a client (its TLS context) costs tens of
    milliseconds, more than a whole cached hook call."""
    global _SSL_CONTEXT
    loop = asyncio.get_running_loop()
    client = _HTTP_CLIENTS.get(loop)
    if client is None:
        if _SSL_CONTEXT is None:
            _SSL_CONTEXT = ssl.create_default_context()
        client = httpx.AsyncClient(
            verify=_SSL_CONTEXT,
            follow_redirects=False,
            cookies=NoCookies(),
            headers={"Accept-Encoding": ACCEPT_ENCODING},
        )
        _HTTP_CLIENTS[loop] = client
    return client
