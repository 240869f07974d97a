"""DICOMweb reads (QIDO-RS search, WADO-RS retrieve) for the hooks and for ``ecg-cds ingest``.

One outbound layer for one protocol, whichever caller: every URL passes the one allow-list
check (:func:`cds_service.allow_list.check_url` against ``fhir.allowed_dicomweb``) before
any connection; redirects are not followed; no cookie is kept; URLs in errors are redacted;
a body over ``max_ecg_bytes`` is refused while it streams (:mod:`cds_service.capped_body`,
which bounds its decompression too). Instances are returned exactly
as the server sent them (the part bodies of the ``multipart/related`` answer), never
decoded and re-encoded: the same instance has the same SHA-256 through a hook call and
through a PACS poll, so deduplication between the two holds.

No retries here: a failed read is a :class:`FetchFailed`, and the caller's own policy
decides (a hook answers without that ECG; a poll keeps its mark and asks again next time).
The hooks use :class:`cds_service.fhir_client.FhirFetcher` (async, the same parsing);
ingest uses :class:`DicomwebClient` (blocking).
"""

from __future__ import annotations

import http.cookiejar
import json
import re
from typing import Any

import httpx

from cds_service.allow_list import check_url, redact_url
from cds_service.capped_body import ACCEPT_ENCODING, FetchFailed, read_body
from cds_service.settings import Settings

DICOM_MEDIA_TYPE = "application/dicom"
WADO_ACCEPT = f'multipart/related; type="{DICOM_MEDIA_TYPE}"; transfer-syntax=*'
QIDO_ACCEPT = "application/dicom+json, application/json;q=0.9"
#: Results per QIDO-RS page (``limit``/``offset`` paging).
QIDO_PAGE = 500


class NoCookies(http.cookiejar.CookieJar):
    """A jar that keeps nothing: one call's cookies must never ride along on another's."""

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None


def split_multipart(body: bytes, content_type: str) -> list[bytes]:
    """The part bodies of a ``multipart/related`` message (RFC 2046), headers dropped."""
    match = re.search(r'boundary="?([^";]+)"?', content_type, flags=re.IGNORECASE)
    if not match:
        raise FetchFailed("multipart", "no boundary in the content type")
    delimiter = b"--" + match.group(1).encode("ascii")
    parts: list[bytes] = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break  # the close delimiter
        header_end = chunk.find(b"\r\n\r\n")
        if header_end < 0:
            continue
        content = chunk[header_end + 4 :]
        if content.endswith(b"\r\n"):
            content = content[:-2]
        parts.append(content)
    return parts


def wado_parts(url: str, body: bytes, content_type: str) -> list[bytes]:
    """The DICOM instances of a WADO-RS answer, byte for byte as sent."""
    if content_type.startswith("multipart/"):
        parts = split_multipart(body, content_type)
    elif content_type.startswith(DICOM_MEDIA_TYPE):
        parts = [body]
    else:
        raise FetchFailed(redact_url(url), f"unexpected content type {content_type!r}")
    if not parts:
        raise FetchFailed(redact_url(url), "the DICOMweb answer holds no instance")
    return parts


def check_status(url: str, status: int) -> None:
    if status in (401, 403):
        raise FetchFailed(redact_url(url), f"access refused (HTTP {status})")
    if status != 200:
        raise FetchFailed(redact_url(url), f"HTTP {status}")


class DicomwebClient:
    """Blocking QIDO-RS/WADO-RS on one allow-listed DICOMweb base (``ecg-cds ingest``)."""

    def __init__(self, settings: Settings, base_url: str) -> None:
        self.base_url = check_url(
            base_url, settings.fhir.allowed_dicomweb, kind="DICOMweb URL"
        ).rstrip("/")
        self._allowed = settings.fhir.allowed_dicomweb
        self.max_bytes = settings.max_ecg_bytes
        self._http = httpx.Client(
            timeout=settings.fhir.timeout_s,
            follow_redirects=False,
            cookies=NoCookies(),
            headers={"Accept-Encoding": ACCEPT_ENCODING},
        )

    def __enter__(self) -> DicomwebClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def search_series(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        """QIDO-RS ``/series`` with ``filters``, every page."""
        return self._search(f"{self.base_url}/series", filters)

    def search_instances(self, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        """QIDO-RS instances of one series, every page."""
        url = f"{self.base_url}/studies/{study_uid}/series/{series_uid}/instances"
        return self._search(url, {})

    def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """WADO-RS one instance: its bytes exactly as the server stores and sends them."""
        url = self.instance_url(study_uid, series_uid, sop_uid)
        body, content_type = self._get(url, WADO_ACCEPT)
        return wado_parts(url, body, content_type)[0]

    def instance_url(self, study_uid: str, series_uid: str, sop_uid: str) -> str:
        return f"{self.base_url}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"

    def _search(self, url: str, filters: dict[str, str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        offset = 0
        while True:
            params = {**filters, "limit": str(QIDO_PAGE), "offset": str(offset)}
            page_url = str(httpx.URL(url, params=params))
            body, _ = self._get(page_url, QIDO_ACCEPT, allow_empty=True)
            try:
                page = json.loads(body) if body.strip() else []
            except (ValueError, RecursionError):
                raise FetchFailed(redact_url(url), "QIDO-RS answer is not JSON") from None
            if not isinstance(page, list):
                raise FetchFailed(redact_url(url), "QIDO-RS answer is not a JSON array")
            found += [item for item in page if isinstance(item, dict)]
            if len(page) < QIDO_PAGE:
                return found
            offset += len(page)

    def _get(self, url: str, accept: str, *, allow_empty: bool = False) -> tuple[bytes, str]:
        url = check_url(url, self._allowed, kind="DICOMweb URL")
        what = redact_url(url)
        try:
            with self._http.stream("GET", url, headers={"Accept": accept}) as response:
                if allow_empty and response.status_code == 204:  # QIDO-RS: no match
                    return b"", ""
                check_status(url, response.status_code)
                body = read_body(response, what, self.max_bytes)
                return body, response.headers.get("content-type", "").lower()
        except httpx.HTTPError as exc:
            raise FetchFailed(what, f"unreachable ({type(exc).__name__})") from None
