"""``INSERT ... ON CONFLICT DO NOTHING`` (SQLite, PostgreSQL): the basis of idempotent writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.orm import Session


def insert_ignore(
    session: Session | Connection,
    table: Table,
    values: dict[str, Any],
    conflict_columns: Sequence[str],
) -> bool:
    """Insert one row unless one with the same ``conflict_columns`` exists; True if inserted.

    A race between two workers is settled by the database: the loser's insert is a no-op,
    not an error, so a redelivered task cannot store a second result. ``session`` may be a
    Core connection, for writes that share another writer's transaction.
    """
    bind = session.get_bind() if isinstance(session, Session) else session
    dialect = bind.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table).values(**values)
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).values(**values)
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"insert_ignore does not support {dialect}")
    # RETURNING tells inserted from skipped on both databases (rowcount is -1 on some drivers).
    stmt = stmt.on_conflict_do_nothing(index_elements=list(conflict_columns)).returning(
        table.c[conflict_columns[0]]
    )
    return session.execute(stmt).first() is not None


def insert_ignore_many(
    session: Session | Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    conflict_columns: Sequence[str],
    *,
    returning: str,
) -> set[Any]:
    """:func:`insert_ignore` for many rows (all with the same keys); the ``returning``
    column's values of the rows inserted (those that conflicted are skipped, as one by one).

    The statement is built once per table and executed with the list of rows: SQLAlchemy's
    "insertmanyvalues" sends them as multi-row ``VALUES`` batches with RETURNING on SQLite
    and PostgreSQL alike. A statement with the rows in it (``values(rows)``) was compiled
    afresh on every call (its row count is part of it): ~3 ms per ECG of a bulk ingest.
    """
    if not rows:
        return set()
    statement = ignoring_insert(session, table, conflict_columns, returning=returning)
    return set(session.execute(statement, list(rows)).scalars().all())


_IGNORING: dict[tuple[str, str, tuple[str, ...], str | None], Any] = {}


def ignoring_insert(
    session: Session | Connection,
    table: Table,
    conflict_columns: Sequence[str],
    *,
    returning: str | None = None,
) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for ``table`` (RETURNING the ``returning``
    column when given), to execute with a list of rows (executemany). Built once per
    dialect and table, so the database layer compiles it once, not on every call like a
    statement with the rows in it."""
    bind = session.get_bind() if isinstance(session, Session) else session
    key = (bind.dialect.name, table.name, tuple(conflict_columns), returning)
    statement = _IGNORING.get(key)
    if statement is None:
        if key[0] == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            statement = pg_insert(table)
        elif key[0] == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            statement = sqlite_insert(table)
        else:  # pragma: no cover - only SQLite and PostgreSQL are supported
            raise NotImplementedError(f"ignoring_insert does not support {key[0]}")
        statement = statement.on_conflict_do_nothing(index_elements=list(conflict_columns))
        if returning is not None:
            statement = statement.returning(table.c[returning])
        _IGNORING[key] = statement
    return statement
