"""The one exception every reader raises for input it cannot turn into an ECG."""

from __future__ import annotations


class EcgFormatError(ValueError):
    """Input that is not a readable ECG.

    The message always names the input (``source``), says what is wrong and, where it
    helps, what to do about it. Readers catch their parser's own exceptions and re-raise
    them as this, so callers only ever handle one type.
    """

    def __init__(self, source: str, problem: str, hint: str | None = None) -> None:
        self.source = source
        self.problem = problem
        self.hint = hint
        message = f"{source}: {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)
