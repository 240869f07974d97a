"""Structured logs as an option: one JSON object per line, the same records as text."""

from __future__ import annotations

import json
import logging

import pytest

from cds_service.logs import make_formatter
from cds_service.settings import Settings


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("cds_service.test", logging.WARNING, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_format_is_one_object_per_record_with_extra_fields() -> None:
    line = make_formatter("json").format(_record("model %s loaded", ecg_id="e1"))
    data = json.loads(line)
    assert data["level"] == "WARNING" and data["logger"] == "cds_service.test"
    assert data["message"] == "model %s loaded" and data["ecg_id"] == "e1"
    assert "time" in data and "\n" not in line


def test_text_format_is_one_readable_line() -> None:
    line = make_formatter("text").format(_record("hello"))
    assert line.endswith("WARNING cds_service.test: hello")


def test_log_settings_are_validated() -> None:
    assert Settings(log_level="debug").log_level == "DEBUG"
    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format="xml")  # type: ignore[arg-type]
