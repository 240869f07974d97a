"""Checks of what the service depends on: the database and its schema, the broker, the workers.

Shared by the readiness probe (``/readyz``) and ``ecg-cds check-config``. Each check returns
None when all is well, else one line saying what is wrong; none raises, and each is bounded
in time (the probe must answer while the thing it checks hangs).

``public=True`` gives the line for an unauthenticated caller (the probe answers anyone who
can reach it): what is wrong, without the server's address, port or user, nor the driver's
message, which repeats them; the full line then goes to this module's log (warning), for the
operator. check-config prints the full line.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from cds_service.allow_list import redact_url

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)


def _first_line(exc: BaseException) -> str:
    text_ = str(exc.args[0] if exc.args else exc).strip().splitlines()
    return text_[0] if text_ else type(exc).__name__


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    from cds_service.storage.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _said(full: str, short: str, public: bool) -> str:
    """``full``, or (``public``) ``short`` with ``full`` logged for the operator."""
    if not public:
        return full
    log.warning("readiness: %s", full)
    return short


def _failure(what: str, where: str, exc: BaseException, public: bool) -> str:
    place = f" {where}" if where else ""
    full = f"cannot {what}{place} ({type(exc).__name__}: {_first_line(exc)})"
    return _said(full, f"cannot {what} ({type(exc).__name__})", public)


def database_problem(
    engine: Engine, *, expect_schema: bool = True, public: bool = False
) -> str | None:
    """None when the database answers and (``expect_schema``) is at the current migration."""
    where = redact_url(engine.url.render_as_string(hide_password=False))
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            if not expect_schema:
                return None
            from alembic.runtime.migration import MigrationContext

            current = MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        return _failure("open the database", where, exc, public)
    head = head_revision()
    if current != head:
        state = "has no schema yet" if current is None else f"is at migration {current}"
        advice = f"{state}; the current one is {head} (start the service once)"
        return _said(f"the database {where} {advice}", f"the database {advice}", public)
    return None


def broker_problem(url: str, *, timeout_s: float = 2.0, public: bool = False) -> str | None:
    """None when the broker accepts a connection within ``timeout_s``."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=timeout_s, transport_options={}) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout_s)
    except Exception as exc:  # kombu raises the transport's own errors
        return _failure("reach the broker", redact_url(url), exc, public)
    return None


def worker_problem(app: Celery, *, timeout_s: float = 1.0, public: bool = False) -> str | None:
    """None when at least one worker answers a ping within ``timeout_s``."""
    try:
        replies = app.control.ping(timeout=timeout_s)
    except Exception as exc:
        return _failure("ask the workers", "", exc, public)
    if not replies:
        return f"no worker answered within {timeout_s:g} s (start `ecg-cds worker`)"
    return None
