"""What a hook call may not exceed, and the error a call the service cannot answer raises."""

from __future__ import annotations

#: At most this many ECGs (newest first) are reviewed per call.
MAX_ECGS_PER_CALL = 5
#: Extra pages of a paged prefetch Bundle that are followed (needs fhirServer).
MAX_PREFETCH_PAGES = 2
#: Endpoints (of ImagingStudies, neither prefetched nor contained) read from fhirServer.
MAX_ENDPOINT_READS = 10


class HookProblem(Exception):
    """A call the service cannot answer: 400 (malformed) or 412 (data unavailable)."""

    def __init__(self, status: int, message: str, *, code: str = "invalid") -> None:
        self.status = status
        self.message = message
        self.code = code
        super().__init__(message)
