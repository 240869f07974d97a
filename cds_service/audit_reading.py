"""Reading the audit chain: filtered, paged queries and verification of the whole chain.

:class:`cds_service.audit.AuditTrail` delegates its ``query``, ``get`` and ``verify`` here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from cds_service.audit_chain import (
    AUDIT_TABLE,
    GENESIS_HASH,
    AuditEntry,
    AuditEventRow,
    AuditFilter,
    AuditPage,
    VerifyReport,
    as_utc,
    entry_hash,
    entry_of,
    normalise_patient,
)

#: The largest position (seq, offset) a SQL BIGINT holds; larger ones match nothing.
MAX_POSITION = 2**63 - 1


def query(
    sessions: sessionmaker[Session],
    filters: AuditFilter | None = None,
    *,
    limit: int = 50,
    offset: int = 0,
) -> AuditPage:
    """Entries matching ``filters``, newest first, with the total count for paging."""
    if limit < 1 or offset < 0:
        raise ValueError("limit must be >= 1 and offset >= 0")
    limit, offset = min(limit, MAX_POSITION), min(offset, MAX_POSITION)
    conditions = _conditions(filters or AuditFilter())
    with sessions() as session:
        total = session.scalar(select(func.count()).select_from(AuditEventRow).where(*conditions))
        rows = session.scalars(
            select(AuditEventRow)
            .where(*conditions)
            .order_by(AuditEventRow.seq.desc())
            .limit(limit)
            .offset(offset)
        ).all()
    return AuditPage(
        entries=[entry_of(r) for r in rows], total=int(total or 0), limit=limit, offset=offset
    )


def get(sessions: sessionmaker[Session], seq: int) -> AuditEntry | None:
    """The entry at ``seq``, or None."""
    if not 0 < seq <= MAX_POSITION:
        return None
    with sessions() as session:
        row = session.scalars(select(AuditEventRow).where(AuditEventRow.seq == seq)).first()
    return entry_of(row) if row else None


def verify(
    engine: Engine, batch_size: int = 1000, *, witnessed_hash: str | None = None
) -> VerifyReport:
    """Walk the chain from the first entry; report the first entry that does not check out.

    Catches edited entries (hash mismatch), inserted or removed entries (a gap in ``seq`` or
    a ``prev_hash`` that is not the previous entry's hash). Removing the *newest* entries
    leaves a valid shorter chain; to catch that, keep ``last_hash`` somewhere else (a
    ticket, a log shipper) and pass it back as ``witnessed_hash``: it must still be in the
    chain.
    """
    expected_seq, prev_hash, n = 1, GENESIS_HASH, 0
    witnessed_seen = witnessed_hash is None
    for row in _iter_rows(engine, batch_size):
        n += 1
        if row["seq"] != expected_seq:
            return VerifyReport(
                False,
                n,
                expected_seq,
                f"entry seq {expected_seq} is missing (next is {row['seq']})",
                prev_hash,
            )
        if row["prev_hash"] != prev_hash:
            return VerifyReport(
                False,
                n,
                row["seq"],
                "prev_hash does not match the previous entry's hash",
                prev_hash,
            )
        if entry_hash(row, prev_hash) != row["hash"]:
            return VerifyReport(
                False,
                n,
                row["seq"],
                "content does not match its hash (entry was altered)",
                prev_hash,
            )
        prev_hash, expected_seq = row["hash"], expected_seq + 1
        witnessed_seen = witnessed_seen or row["hash"] == witnessed_hash
    if not witnessed_seen:
        return VerifyReport(
            False,
            n,
            expected_seq,
            "the witnessed hash is not in the chain (entries removed from its end?)",
            prev_hash if n else None,
        )
    return VerifyReport(True, n, None, None, prev_hash if n else None)


def _iter_rows(engine: Engine, batch_size: int) -> Iterator[dict[str, Any]]:
    columns = [c for c in AUDIT_TABLE.columns if c.name != "id"]
    last_seq = 0
    with engine.connect() as conn:
        while True:
            rows = (
                conn.execute(
                    select(*columns)
                    .where(AuditEventRow.seq > last_seq)
                    .order_by(AuditEventRow.seq)
                    .limit(batch_size)
                )
                .mappings()
                .all()
            )
            if not rows:
                return
            for r in rows:
                yield dict(r)
            last_seq = rows[-1]["seq"]


def _conditions(f: AuditFilter) -> list[Any]:
    """The WHERE clauses of ``f``."""
    c: list[Any] = []
    if f.patient:
        c.append(AuditEventRow.patient == normalise_patient(f.patient))
    if f.user:
        c.append(
            or_(
                AuditEventRow.actor_user == f.user,
                AuditEventRow.actor_sub == f.user,
                AuditEventRow.actor_client == f.user,
            )
        )
    if f.iss:
        c.append(AuditEventRow.actor_iss == f.iss)
    if f.start:
        c.append(AuditEventRow.ts >= as_utc(f.start))
    if f.end:
        c.append(AuditEventRow.ts <= as_utc(f.end))
    if f.events:
        c.append(AuditEventRow.event.in_(list(f.events)))
    if f.model_version:
        c.append(AuditEventRow.model_version == f.model_version)
    if f.outcome:
        c.append(AuditEventRow.outcome == f.outcome)
    if f.ecg_id:
        c.append(AuditEventRow.ecg_id == f.ecg_id)
    return c
