"""The audit hash chain: appends, tamper detection, the append-only guard, concurrency, queries.

Every test runs on SQLite and on PostgreSQL (``db_url`` fixture).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import multiprocessing
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from cds_service.audit import (
    EVENTS,
    GENESIS_HASH,
    Actor,
    AuditFilter,
    AuditRecord,
    AuditTrail,
    canonical_json,
)
from cds_service.storage.base import make_engine, make_session_factory

EHR = Actor(iss="https://ehr.example.org", sub="clinician-7", user="Practitioner/123")


def _fill(trail: AuditTrail, n: int) -> None:
    for i in range(n):
        trail.record(
            EVENTS[i % len(EVENTS)],
            actor=EHR,
            patient=f"Patient/p{i % 3}",
            ecg_id=f"ecg-{i}",
            model_version="m-1",
            detail={"i": i, "note": "ünïcode ok"},
        )


def _drop_guard(engine: Engine) -> None:
    """What an attacker with database rights would do first."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER audit_events_no_update"))
            conn.execute(text("DROP TRIGGER audit_events_no_delete"))
        else:
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))


def test_chain_links_each_entry_to_the_previous(trail: AuditTrail, engine: Engine) -> None:
    _fill(trail, 12)
    report = trail.verify()
    assert report.ok and report.n_entries == 12 and report.first_bad_seq is None

    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT seq, prev_hash, hash, detail FROM audit_events ORDER BY seq")
        ).all()
    assert [r.seq for r in rows] == list(range(1, 13))
    assert rows[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.hash
    assert len({r.hash for r in rows}) == 12
    assert report.last_hash == rows[-1].hash
    assert json.loads(rows[3].detail) == {"i": 3, "note": "ünïcode ok"}


def test_empty_trail_verifies(trail: AuditTrail) -> None:
    report = trail.verify()
    assert report.ok and report.n_entries == 0


def test_database_refuses_update_and_delete(trail: AuditTrail, engine: Engine) -> None:
    _fill(trail, 3)
    for statement in (
        "UPDATE audit_events SET outcome = 'failure' WHERE seq = 2",
        "DELETE FROM audit_events WHERE seq = 3",
    ):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    assert trail.verify().ok
    assert trail.query().total == 3


def test_edited_entry_is_found_by_seq(trail: AuditTrail, engine: Engine) -> None:
    _fill(trail, 10)
    _drop_guard(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET patient = 'someone-else' WHERE seq = 6"))
    report = trail.verify()
    assert not report.ok
    assert report.first_bad_seq == 6
    assert "altered" in (report.reason or "")


def test_edit_with_recomputed_hash_breaks_the_next_link(trail: AuditTrail, engine: Engine) -> None:
    """Rewriting an entry *and* its own hash still leaves the next entry pointing at the old one."""
    _fill(trail, 8)
    _drop_guard(engine)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM audit_events WHERE seq = 4")).mappings().one()
    forged = dict(row, outcome="failure")
    content = {
        "seq": forged["seq"],
        "ts": trail.get(4).to_dict()["ts"],  # type: ignore[union-attr]
        "event": forged["event"],
        "outcome": forged["outcome"],
        "actor": [
            forged["actor_iss"],
            forged["actor_sub"],
            forged["actor_user"],
            forged["actor_client"],
        ],
        "patient": forged["patient"],
        "ecg_id": forged["ecg_id"],
        "model_version": forged["model_version"],
        "detail": forged["detail"],
    }
    new_hash = hashlib.sha256((row["prev_hash"] + canonical_json(content)).encode()).hexdigest()
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_events SET outcome = 'failure', hash = :h WHERE seq = 4"),
            {"h": new_hash},
        )
    report = trail.verify()
    assert not report.ok
    assert report.first_bad_seq == 5
    assert "prev_hash" in (report.reason or "")


def test_removed_entry_is_found(trail: AuditTrail, engine: Engine) -> None:
    _fill(trail, 7)
    _drop_guard(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq = 3"))
    report = trail.verify()
    assert not report.ok
    assert report.first_bad_seq == 3
    assert "missing" in (report.reason or "")


def test_removed_tail_is_found_against_a_witnessed_head(trail: AuditTrail, engine: Engine) -> None:
    _fill(trail, 6)
    witnessed = trail.verify().last_hash
    trail.record("card", actor=EHR)
    assert trail.verify(witnessed_hash=witnessed).ok  # the chain grew past the witness: fine
    _drop_guard(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq >= 6"))
    assert trail.verify().ok  # a shorter chain is self-consistent...
    report = trail.verify(witnessed_hash=witnessed)
    assert not report.ok  # ...but no longer holds the witnessed head
    assert report.first_bad_seq == 6
    assert "witnessed" in (report.reason or "")


def test_credentials_never_reach_the_database(trail: AuditTrail, engine: Engine) -> None:
    secret = "eyJhbGciOiJSUzM4NCJ9.secret-token-value"
    trail.record(
        "hook-call",
        actor=EHR,
        patient="123",
        detail={
            "fhirAuthorization": {"access_token": secret, "scope": "patient/*.read"},
            "headers": {"Authorization": f"Bearer {secret}"},
            "nested": [{"Access-Token": secret}, f"bearer {secret}"],
            "hook": "patient-view",
        },
    )
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT detail FROM audit_events")).scalar_one()
    assert secret not in stored
    detail = trail.query().entries[0].detail
    assert detail["hook"] == "patient-view"
    assert detail["fhirAuthorization"] == "[redacted]"
    assert detail["headers"]["Authorization"] == "[redacted]"
    assert trail.verify().ok


def test_unknown_event_or_outcome_is_refused(trail: AuditTrail) -> None:
    with pytest.raises(ValueError, match="unknown audit event"):
        trail.record("hookcall")
    with pytest.raises(ValueError, match="unknown audit outcome"):
        trail.record("fetch", outcome="ok")
    assert trail.query().total == 0


def test_record_many_is_consecutive_and_all_or_nothing(trail: AuditTrail) -> None:
    trail.record("ingest", ecg_id="e0")
    trail.record_many(
        [
            AuditRecord("fetch", actor=EHR, patient="p1"),
            AuditRecord("hook-call", actor=EHR, patient="p1"),
            AuditRecord("card", actor=EHR, patient="p1", ecg_id="e0", model_version="m-1"),
        ]
    )
    assert [e.event for e in trail.query().entries] == ["card", "hook-call", "fetch", "ingest"]
    with pytest.raises(ValueError, match="unknown audit event"):
        trail.record_many([AuditRecord("fetch"), AuditRecord("typo")])
    assert trail.query().total == 4
    report = trail.verify()
    assert report.ok and report.n_entries == 4


def test_threads_share_one_chain(trail: AuditTrail) -> None:
    n_threads, per_thread = 6, 15
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(per_thread):
                trail.record("classification", ecg_id=f"t{k}-{i}", model_version="m-1")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    report = trail.verify()
    assert report.ok, report
    assert report.n_entries == n_threads * per_thread


def _queued_behind_a_held_write(trail: AuditTrail, calls: list[tuple[str, Any]]) -> dict[str, str]:
    """Run ``calls`` (name, with_rows) as concurrent ``record_many`` callers while a first
    caller's transaction is held open, so they all queue for the next group commit; the
    outcome of each caller by name."""
    release = threading.Event()
    outcomes: dict[str, str] = {}

    def call(name: str, rows: Any) -> None:
        try:
            trail.record_many(
                [AuditRecord("hook-call", ecg_id=f"{name}-{i}") for i in range(3)],
                with_rows=rows,
            )
            outcomes[name] = "stored"
        except Exception as exc:  # collected and asserted by the caller
            outcomes[name] = type(exc).__name__

    def _wait_for(condition: Any) -> None:
        for _ in range(1000):
            if condition():
                return
            threading.Event().wait(0.01)
        raise AssertionError("the callers did not queue")

    first = threading.Thread(target=call, args=("held", lambda _conn: release.wait(10)))
    first.start()
    _wait_for(lambda: trail._writing)
    others = [threading.Thread(target=call, args=call_args) for call_args in calls]
    for thread in others:
        thread.start()
    _wait_for(lambda: len(trail._queued) == len(calls))
    release.set()
    for thread in [first, *others]:
        thread.join()
    return outcomes


def test_concurrent_appends_share_one_commit_each_caller_consecutive(trail: AuditTrail) -> None:
    outcomes = _queued_behind_a_held_write(trail, [(f"c{k}", None) for k in range(5)])
    assert set(outcomes.values()) == {"stored"}
    entries = sorted(trail.query(limit=100).entries, key=lambda e: e.seq)
    callers = [e.ecg_id.split("-")[0] for e in entries if e.ecg_id]
    # each caller's three entries are consecutive in the chain, as they were alone
    assert callers == [name for name in dict.fromkeys(callers) for _ in range(3)]
    grouped = [e for e in entries if e.ecg_id and not e.ecg_id.startswith("held")]
    assert len({e.ts for e in grouped}) == 1  # the five queued callers: one transaction
    report = trail.verify()
    assert report.ok and report.n_entries == 18


def test_a_caller_whose_rows_fail_fails_alone_in_a_group(trail: AuditTrail) -> None:
    def refused(_conn: Any) -> None:
        raise RuntimeError("this caller's own rows are refused")

    calls = [("c0", None), ("bad", refused), ("c2", None)]
    outcomes = _queued_behind_a_held_write(trail, calls)
    assert outcomes == {"held": "stored", "c0": "stored", "bad": "RuntimeError", "c2": "stored"}
    stored = {e.ecg_id for e in trail.query(limit=100).entries}
    assert stored == {f"{name}-{i}" for name in ("held", "c0", "c2") for i in range(3)}
    assert trail.verify().ok


def test_awaited_appends_share_the_chain_with_threads_each_stored_before_it_returns(
    trail: AuditTrail,
) -> None:
    """Coroutines (hook calls answered on the event loop) and threads append to one chain;
    each awaited append has its entries committed, consecutive, once it returns."""
    seen_after_return: list[bool] = []

    async def awaited(k: int) -> None:
        await trail.arecord_many([AuditRecord("hook-call", ecg_id=f"a{k}-{i}") for i in range(3)])
        stored = {e.ecg_id for e in trail.query(AuditFilter(ecg_id=f"a{k}-2")).entries}
        seen_after_return.append(stored == {f"a{k}-2"})

    def threaded(k: int) -> None:
        trail.record_many([AuditRecord("ingest", ecg_id=f"t{k}-{i}") for i in range(3)])

    async def main() -> None:
        threads = [threading.Thread(target=threaded, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        await asyncio.gather(*(awaited(k) for k in range(12)))
        for thread in threads:
            thread.join()

    asyncio.run(main())
    assert seen_after_return == [True] * 12
    entries = sorted(trail.query(limit=200).entries, key=lambda e: e.seq)
    callers = [e.ecg_id.split("-")[0] for e in entries if e.ecg_id]
    assert callers == [name for name in dict.fromkeys(callers) for _ in range(3)]
    report = trail.verify()
    assert report.ok and report.n_entries == 16 * 3


def test_an_awaited_append_whose_rows_fail_raises_and_stores_nothing(trail: AuditTrail) -> None:
    def refused(_conn: Any) -> None:
        raise RuntimeError("this caller's own rows are refused")

    async def main() -> list[BaseException | None]:
        outcomes = await asyncio.gather(
            trail.arecord_many([AuditRecord("hook-call", ecg_id="ok-0")]),
            trail.arecord_many([AuditRecord("hook-call", ecg_id="bad-0")], with_rows=refused),
            return_exceptions=True,
        )
        return list(outcomes)

    ok, bad = asyncio.run(main())
    assert ok is None and isinstance(bad, RuntimeError)
    assert {e.ecg_id for e in trail.query().entries} == {"ok-0"}
    assert trail.verify().ok


def _append_from_process(url: str, k: int, n: int) -> None:
    engine = make_engine(url)
    trail = AuditTrail(make_session_factory(engine))
    for i in range(n):
        trail.record("ingest", actor=Actor(client=f"proc-{k}"), ecg_id=f"p{k}-{i}")
    engine.dispose()


@pytest.mark.slow
def test_processes_share_one_chain(trail: AuditTrail, db_url: str) -> None:
    # fork starts fast; spawn (re-importing everything) where fork does not exist.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context: Any = multiprocessing.get_context(method)
    n_procs, per_proc = 3, 20
    procs = [
        context.Process(target=_append_from_process, args=(db_url, k, per_proc))
        for k in range(n_procs)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * n_procs
    report = trail.verify()
    assert report.ok, report
    assert report.n_entries == n_procs * per_proc
    by_client = {
        f"proc-{k}": trail.query(AuditFilter(user=f"proc-{k}")).total for k in range(n_procs)
    }
    assert by_client == {f"proc-{k}": per_proc for k in range(n_procs)}


def test_query_filters_and_pages(trail: AuditTrail) -> None:
    trail.record("hook-call", actor=EHR, patient="Patient/p1", model_version="m-1")
    trail.record("fetch", actor=EHR, patient="p1", outcome="failure", detail={"reason": "404"})
    trail.record("classification", patient="p2", ecg_id="e2", model_version="m-2")
    trail.record("auth-failure", outcome="failure", actor=Actor(client="host:10.0.0.9"))
    trail.record(
        "card", actor=Actor(iss="https://other.example", sub="u2"), patient="p1", ecg_id="e1"
    )

    def seqs(f: AuditFilter, **kw: int) -> list[int]:
        return [e.seq for e in trail.query(f, **kw).entries]

    assert seqs(AuditFilter()) == [5, 4, 3, 2, 1]  # newest first
    assert seqs(AuditFilter(patient="p1")) == [5, 2, 1]
    assert seqs(AuditFilter(patient="Patient/p1")) == [5, 2, 1]
    assert seqs(AuditFilter(user="Practitioner/123")) == [2, 1]
    assert seqs(AuditFilter(user="clinician-7")) == [2, 1]  # JWT sub
    assert seqs(AuditFilter(user="host:10.0.0.9")) == [4]  # client name
    assert seqs(AuditFilter(iss="https://other.example")) == [5]
    assert seqs(AuditFilter(events=("fetch", "card"))) == [5, 2]
    assert seqs(AuditFilter(outcome="failure")) == [4, 2]
    assert seqs(AuditFilter(model_version="m-2")) == [3]
    assert seqs(AuditFilter(ecg_id="e1")) == [5]
    assert seqs(AuditFilter(patient="p1", outcome="success")) == [5, 1]

    third = trail.get(3)
    assert third is not None and third.patient == "p2" and third.ecg_id == "e2"
    assert seqs(AuditFilter(start=third.ts)) == [5, 4, 3]
    assert seqs(AuditFilter(end=third.ts)) == [3, 2, 1]
    assert seqs(AuditFilter(start=third.ts, end=third.ts)) == [3]
    assert seqs(AuditFilter(start=third.ts + timedelta(days=1))) == []

    page = trail.query(AuditFilter(), limit=2, offset=0)
    assert page.total == 5 and [e.seq for e in page.entries] == [5, 4] and page.next_offset == 2
    last = trail.query(AuditFilter(), limit=2, offset=4)
    assert [e.seq for e in last.entries] == [1] and last.next_offset is None
    assert trail.get(99) is None
