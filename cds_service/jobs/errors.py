"""Errors that decide what a job does next."""

from __future__ import annotations


class RetryableError(Exception):
    """A passing outage (FHIR server, PACS, database): the job is retried with backoff.

    Anything else a job raises is final: the ECG or job is marked failed with the message,
    and stays recorded so that it can be retried by hand once the cause is fixed.
    """


def backoff_s(attempt: int, *, base_s: float = 2.0, cap_s: float = 300.0) -> float:
    """Exponential backoff: 2, 4, 8 ... seconds, capped (the same curve in both modes)."""
    return float(min(cap_s, base_s * (2 ** max(0, attempt))))
