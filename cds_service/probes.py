"""Checks of what the service depends on: the database and its schema, the broker, the workers.

Shared by the readiness probe (``/readyz``) and ``ecg-cds check-config``. Each check returns
None when all is well, else one line saying what is wrong; none raises, and each is bounded
in time (the probe must answer while the thing it checks hangs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from cds_service.allow_list import redact_url

if TYPE_CHECKING:
    from celery import Celery


def _first_line(exc: BaseException) -> str:
    text_ = str(exc.args[0] if exc.args else exc).strip().splitlines()
    return text_[0] if text_ else type(exc).__name__


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    from cds_service.storage.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def database_problem(engine: Engine, *, expect_schema: bool = True) -> str | None:
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
        return f"cannot open the database {where} ({type(exc).__name__}: {_first_line(exc)})"
    head = head_revision()
    if current != head:
        state = "has no schema yet" if current is None else f"is at migration {current}"
        return f"the database {where} {state}; the current one is {head} (start the service once)"
    return None


def broker_problem(url: str, *, timeout_s: float = 2.0) -> str | None:
    """None when the broker accepts a connection within ``timeout_s``."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=timeout_s, transport_options={}) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout_s)
    except Exception as exc:  # kombu raises the transport's own errors
        return (
            f"cannot reach the broker {redact_url(url)} ({type(exc).__name__}: {_first_line(exc)})"
        )
    return None


def worker_problem(app: Celery, *, timeout_s: float = 1.0) -> str | None:
    """None when at least one worker answers a ping within ``timeout_s``."""
    try:
        replies = app.control.ping(timeout=timeout_s)
    except Exception as exc:
        return f"cannot ask the workers ({type(exc).__name__}: {_first_line(exc)})"
    if not replies:
        return f"no worker answered within {timeout_s:g} s (start `ecg-cds worker`)"
    return None
