"""A response body read chunk by chunk and refused as soon as it passes a size bound, counted
after decoding, with the decoding itself bounded.

Every outbound read (FHIR searches and reads, Binary attachments, DICOMweb, JWKS) streams its
answer through :class:`CappedBody`. Counting decoded chunks is not enough on its own: an
HTTP client's decoder turns one received chunk into as much as it inflates to (a 64 KiB gzip
chunk of zeros is 64 MiB), so the bound would be checked only after that was in memory. The
body is therefore read raw (``iter_raw``/``aiter_raw``) and inflated here at most
:data:`PIECE` bytes at a time, each piece counted before the next is made. Requests offer
only the codings decoded here (:data:`ACCEPT_ENCODING`); an answer in another coding (br,
zstd, several stacked) is refused by name rather than read undecoded.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

#: The content codings a request offers (``Accept-Encoding``): those decoded here. Set on each
#: client whose answers are read with :func:`read_body` / :func:`aread_body`.
ACCEPT_ENCODING = "gzip, deflate"
#: At most this many decoded bytes are made from the input at a time.
PIECE = 64 * 1024
_IDENTITY = {"", "identity"}
#: gzip and zlib ("deflate" in HTTP is the zlib format, RFC 9110 8.4.1.2); 32 + 15 lets
#: zlib tell the two apart by their headers.
_GZIP_OR_ZLIB = {"gzip", "x-gzip", "deflate"}


class FetchFailed(Exception):
    """An allow-listed server answered with an error or could not be reached."""

    def __init__(self, what: str, problem: str) -> None:
        self.what = what
        self.problem = problem
        super().__init__(f"{what}: {problem}")


class CappedBody:
    """A response body refused as soon as it passes ``max_bytes`` (decoded), before the rest
    is downloaded or inflated. ``content_encoding``: the answer's ``Content-Encoding``; give
    raw chunks to :meth:`add_raw`, or already decoded ones to :meth:`add`."""

    def __init__(self, what: str, max_bytes: int, content_encoding: str | None = None) -> None:
        self._what = what
        self._max_bytes = max_bytes
        self._chunks: list[bytes] = []
        self._size = 0
        coding = (content_encoding or "").strip().lower()
        if coding in _IDENTITY:
            self._inflate: zlib._Decompress | None = None
        elif coding in _GZIP_OR_ZLIB:
            self._inflate = zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)
        else:
            raise FetchFailed(
                what, f"answered in content coding {coding!r}; only gzip and deflate are read"
            )

    def add(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._max_bytes:
            raise FetchFailed(self._what, f"larger than {self._max_bytes} bytes")
        self._chunks.append(chunk)

    def add_raw(self, chunk: bytes) -> None:
        """A chunk as received: inflated piece by piece where the answer is compressed."""
        if self._inflate is None:
            self.add(chunk)
            return
        data = chunk
        try:
            while True:
                piece = self._inflate.decompress(data, PIECE)
                self.add(piece)
                data = self._inflate.unconsumed_tail
                if not data and len(piece) < PIECE:
                    return  # all input taken and no output held back
        except zlib.error:
            raise FetchFailed(self._what, "the compressed answer is corrupt") from None

    def data(self) -> bytes:
        if self._inflate is not None:
            try:
                self.add(self._inflate.flush())
            except zlib.error:
                raise FetchFailed(self._what, "the compressed answer is corrupt") from None
        return b"".join(self._chunks)


def read_body(response: httpx.Response, what: str, max_bytes: int) -> bytes:
    """A streamed answer's body, decoded and bounded (blocking client): its raw chunks,
    inflated here, never httpx's decoded ones (each of those inflated whole)."""
    body = CappedBody(what, max_bytes, response.headers.get("content-encoding"))
    for chunk in response.iter_raw():
        body.add_raw(chunk)
    return body.data()


async def aread_body(response: httpx.Response, what: str, max_bytes: int) -> bytes:
    """:func:`read_body` for an async client."""
    body = CappedBody(what, max_bytes, response.headers.get("content-encoding"))
    async for chunk in response.aiter_raw():
        body.add_raw(chunk)
    return body.data()
