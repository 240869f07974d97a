"""Logging for the service processes: readable lines, or JSON lines for a log collector.

``log_format: json`` writes one object per record (``time``, ``level``, ``logger``,
``message`` and any ``extra=`` fields) with python-json-logger. Either way the records are the
service's own: uvicorn's access log stays off (its lines carry query strings, i.e. patient
ids), and nothing here adds request headers or bodies.
"""

from __future__ import annotations

import logging
import sys

from cds_service.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: uvicorn's loggers propagate to the root handler so they share the format.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(settings: Settings) -> None:
    """Root logger to stderr at ``settings.log_level`` in ``settings.log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(settings.log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # Alembic announces each plugin and migration step at INFO: routine start-up noise.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
