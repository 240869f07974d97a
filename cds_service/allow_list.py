"""The one outbound allow-list: every URL the service contacts passes :func:`check_url` first.

A URL and every configured base are *normalised* the same way before they are compared
(RFC 3986 section 6): scheme and host lower-cased, the default port made explicit,
percent-encoded unreserved characters decoded, dot segments removed. A URL is then allowed
when scheme, host and port are equal to a base's and its path is the base path or below it by
whole segments (``https://ehr/fhir`` allows ``https://ehr/fhir/Patient/1`` but neither
``https://ehr/fhirevil`` nor ``https://ehr/fhir/../admin``).

Refused outright, whatever the list says: schemes other than http/https (``file:``,
``gopher:``...), user info, backslashes, encoded slashes, control characters, malformed or
out-of-range ports, and host spellings that are not canonical (``127.1``, ``2130706433``,
``0x7f.0.0.1``: resolvers read them as addresses the list never named). The caller contacts
the *normalised* URL :func:`check_url` returns, so what was checked is what is fetched.

:func:`redact_url` is the form of a URL that may go into logs, audit entries and error
messages: no user info, no query; it never raises, whatever the input.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "NormalUrl",
    "OutboundRefused",
    "UrlMalformed",
    "check_url",
    "normalise_url",
    "redact_url",
    "url_allowed",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


class UrlMalformed(ValueError):
    """A URL that cannot be normalised (bad port, odd host, forbidden characters...)."""


class OutboundRefused(Exception):
    """A URL that is not under an allow-listed base (or is malformed): it was not contacted.

    ``url`` is the redacted URL, ``kind`` what it was (``fhirServer``, ``attachment URL``...),
    ``problem`` why: safe to show to the caller and to audit.
    """

    def __init__(self, url: str, kind: str, problem: str = "is not on the allow-list") -> None:
        self.url = redact_url(url)
        self.kind = kind
        self.problem = problem
        super().__init__(f"{kind} {self.url} {problem}; it was not contacted")


@dataclass(frozen=True)
class NormalUrl:
    """A URL in normal form: compare these, contact :attr:`url`."""

    scheme: str
    host: str  # lower case; IPv6 without brackets
    port: int
    path: str  # dot segments removed, unreserved escapes decoded; "" for the root
    query: str

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc = host if _DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{netloc}{self.path}{query}"

    def under(self, base: NormalUrl) -> bool:
        """Same origin, and the path is the base path or below it by whole segments."""
        if self.origin != base.origin:
            return False
        base_path = base.path.rstrip("/")
        path = self.path.rstrip("/")
        return path == base_path or path.startswith(base_path + "/")


def _decode_unreserved(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED_CHARS else "%" + match.group(1).upper()

    return _UNRESERVED.sub(replace, text)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on a path split by ``/``."""
    out: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
            continue
        if segment == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
            continue
        out.append(segment)
    result = "/".join(out)
    if path.startswith("/") and not result.startswith("/"):
        result = "/" + result
    return result


def _normal_host(raw: str) -> str:
    host = raw.lower()
    if host.startswith("[") and host.endswith("]"):
        try:
            return ipaddress.IPv6Address(host[1:-1]).compressed
        except ValueError:
            raise UrlMalformed(f"host {raw!r} is not an IPv6 address") from None
    host = host.removesuffix(".")
    if not host:
        raise UrlMalformed("no host")
    labels = host.split(".")
    if all(_NUMERIC_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        # Resolvers read such hosts as IPv4 addresses (127.1, 2130706433, 0x7f.1):
        # only the canonical dotted quad is accepted, so the list means what it says.
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            raise UrlMalformed(f"host {raw!r} is not a canonical IPv4 address") from None
        return str(address)
    if not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise UrlMalformed(f"host {raw!r} is not a valid host name")
    return host


def has_unsafe_characters(url: str) -> bool:
    """Control characters, spaces or backslashes: parsers disagree on such URLs (and httpx
    refuses to send them), so no URL holding one is contacted or accepted as a setting."""
    return any(ord(char) < 0x21 or ord(char) == 0x7F for char in url) or "\\" in url


def normalise_url(url: str) -> NormalUrl:
    """The normal form of an absolute http(s) URL; :class:`UrlMalformed` saying why not."""
    if not isinstance(url, str) or not url:
        raise UrlMalformed("empty URL")
    if len(url) > 8192:
        raise UrlMalformed("URL over 8192 characters")
    if has_unsafe_characters(url):
        raise UrlMalformed("control characters, spaces or backslashes in the URL")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UrlMalformed(f"not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UrlMalformed(f"scheme {parts.scheme or '(none)'!r} is not http or https")
    netloc = parts.netloc
    if "@" in netloc:
        raise UrlMalformed("user info in the URL")
    host_part, port_text = netloc, ""
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise UrlMalformed("unclosed IPv6 bracket")
        host_part, rest = netloc[: end + 1], netloc[end + 1 :]
        if rest and not rest.startswith(":"):
            raise UrlMalformed("text after the IPv6 address")
        port_text = rest[1:]
    elif ":" in netloc:
        host_part, _, port_text = netloc.rpartition(":")
    if netloc.endswith(":"):
        port_text = ""
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
            raise UrlMalformed(f"port {port_text[:20]!r} is not a number")
        port = int(port_text)
        if not 0 < port < 65536:
            raise UrlMalformed(f"port {port} is out of range")
    else:
        port = _DEFAULT_PORTS[scheme]
    host = _normal_host(host_part)
    path = _decode_unreserved(parts.path)
    if re.search(r"%(2[fF]|5[cC]|00|25)", path):
        raise UrlMalformed("encoded slash, backslash, percent or NUL in the path")
    if any(_dot_with_parameters(segment) for segment in path.split("/")):
        # "..;x" is no dot segment by RFC 3986, but Tomcat, Jetty and Spring (HAPI FHIR's
        # usual hosts) strip ";x" and then climb: past the allow-listed base, with the token.
        raise UrlMalformed("a dot segment with ';' parameters in the path")
    path = remove_dot_segments(path)
    return NormalUrl(scheme, host, port, path, parts.query)


def _dot_with_parameters(segment: str) -> bool:
    """A segment that is "." or ".." (or empty) before ";" parameters, ";" encoded or not."""
    parts = re.split(r";|%3[bB]", segment, maxsplit=1)
    return len(parts) == 2 and parts[0] in (".", "..", "")


def _normal_bases(bases: Iterable[str]) -> list[NormalUrl]:
    normal: list[NormalUrl] = []
    for base in bases:
        try:
            normal.append(normalise_url(base))
        except UrlMalformed:
            continue  # a malformed setting allows nothing
    return normal


def check_url(url: str, allowed_bases: Iterable[str], *, kind: str = "URL") -> str:
    """The normalised ``url`` to contact, or :class:`OutboundRefused` (nothing contacted)."""
    try:
        normal = normalise_url(url)
    except UrlMalformed as exc:
        raise OutboundRefused(url, kind, f"is malformed ({exc})") from None
    if not any(normal.under(base) for base in _normal_bases(allowed_bases)):
        raise OutboundRefused(url, kind)
    return normal.url


def url_allowed(url: str, allowed_bases: Iterable[str]) -> bool:
    """True when :func:`check_url` would let ``url`` through."""
    try:
        check_url(url, allowed_bases)
    except OutboundRefused:
        return False
    return True


def redact_url(url: str) -> str:
    """The URL without user info, query or fragment; never raises (shows what it can)."""
    try:
        parts = urlsplit(str(url))
        netloc = parts.netloc.rpartition("@")[2]
        text = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else parts.path
    except ValueError:
        text = str(url).split("?")[0].split("#")[0].rpartition("@")[2]
    # never echo control characters into a log line or a message
    return "".join(char if char.isprintable() else "?" for char in text)[:500]
