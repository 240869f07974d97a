"""A hook JWT is accepted once: not again by another web process, nor after a restart.

``serve --workers N`` runs N web processes on one database; each used to keep the token ids
it had seen in its own memory, so a captured token could be replayed once per worker, and
again after any restart within its lifetime. Two apps on one data folder stand for two
workers, a third started after both stopped for the restart.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import BASE
from tests.service.ehr import EhrKey, jwks, sandbox_claims

ISS = "https://replay-ehr.test"
DISCOVERY = "/cds-services"


def _app(tmp_path: Path, jwks_file: Path) -> TestClient:
    from cds_service.app import create_app
    from cds_service.settings import Settings

    settings = Settings(
        data_dir=tmp_path / "var",
        public_base_url=BASE,
        preload_model=False,
        auth={
            "trusted_issuers": [{"iss": ISS, "jwks_file": str(jwks_file)}],
            "failure_window_s": 0,
        },
    )
    return TestClient(create_app(settings), base_url=BASE)


def test_a_token_is_refused_by_another_worker_and_after_a_restart(tmp_path: Path) -> None:
    key = EhrKey.generate("ES384")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks(key)), encoding="utf-8")
    token = key.sign(sandbox_claims(ISS, BASE + DISCOVERY))
    headers = {"Authorization": f"Bearer {token}"}

    with _app(tmp_path, jwks_file) as first, _app(tmp_path, jwks_file) as second:
        assert first.get(DISCOVERY, headers=headers).status_code == 200
        assert first.get(DISCOVERY, headers=headers).status_code == 401
        assert second.get(DISCOVERY, headers=headers).status_code == 401  # another worker

    with _app(tmp_path, jwks_file) as restarted:
        assert restarted.get(DISCOVERY, headers=headers).status_code == 401
        fresh = key.sign(sandbox_claims(ISS, BASE + DISCOVERY))
        fresh_headers = {"Authorization": f"Bearer {fresh}"}
        assert restarted.get(DISCOVERY, headers=fresh_headers).status_code == 200


def test_expired_ids_are_purged_and_a_lone_surrogate_jti_is_stored(tmp_path: Path) -> None:
    """The table holds only tokens that could still pass; any JSON string is a jti."""
    import asyncio
    import time

    from cds_service.auth.replay import SqlReplayCache
    from cds_service.storage.base import make_engine, make_session_factory
    from cds_service.storage.migrate import upgrade
    from cds_service.storage.tables import SeenTokenRow

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    sessions = make_session_factory(engine)
    cache = SqlReplayCache(sessions)

    async def run() -> None:
        now = time.time()
        assert await cache.first_use("iss\x00old", now - 1)  # stored, already expired
        assert await cache.first_use("iss\x00\ud800", now + 60)
        assert not await cache.first_use("iss\x00\ud800", now + 60)
        assert await cache.first_use("iss\x00old", now + 60)  # expired: may be used again
        assert await cache.first_use("iss\x00gone", now - 1)
        cache._purged_at = 0.0  # the purge interval has passed
        assert await cache.first_use("iss\x00new", now + 60)

    asyncio.run(run())
    with sessions() as session:
        assert session.query(SeenTokenRow).count() == 3  # old, the surrogate one, new
    engine.dispose()


@pytest.mark.parametrize(
    "kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def test_concurrent_checks_share_a_transaction_and_one_replay_is_refused(
    tmp_path: Path, kind: str
) -> None:
    """64 checks at once (one token sent 8 times among 56 others) are written as a group
    commit: every distinct token passes once, the repeated one exactly once, and a token
    seen before is refused (on PostgreSQL too, whose driver reports no rowcount there)."""
    import asyncio
    import time

    from cds_service.auth.replay import SqlReplayCache
    from cds_service.storage.base import make_engine, make_session_factory
    from cds_service.storage.migrate import upgrade
    from cds_service.storage.tables import SeenTokenRow
    from tests.jobs.conftest import create_pg_database, drop_pg_database

    url = create_pg_database() if kind == "postgresql" else f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        sessions = make_session_factory(engine)
        cache = SqlReplayCache(sessions)
        keys = [f"iss\x00{i}" for i in range(56)] + ["iss\x00again"] * 8

        async def run() -> tuple[list[bool], bool]:
            expires = time.time() + 60
            answers = list(await asyncio.gather(*(cache.first_use(k, expires) for k in keys)))
            return answers, await cache.first_use("iss\x007", expires)

        answers, seventh_again = asyncio.run(run())
        assert all(answers[:56]) and not seventh_again
        assert sum(answers[56:]) == 1
        with sessions() as session:
            assert session.query(SeenTokenRow).count() == 57
    finally:
        engine.dispose()
        if kind == "postgresql":
            drop_pg_database(url)


def test_the_writer_thread_stays_for_a_run_of_checks_and_ends_when_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One writer thread answers a run of checks (none started per check), ends once none
    came for WRITER_IDLE_S, and a check after that starts another one and is answered."""
    import asyncio
    import threading
    import time

    from cds_service.auth.replay import SqlReplayCache
    from cds_service.storage.base import make_engine, make_session_factory
    from cds_service.storage.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    cache = SqlReplayCache(make_session_factory(engine))
    cache.WRITER_IDLE_S = 0.3

    def writers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "seen-tokens"]

    async def run(first: int, count: int) -> list[bool]:
        expires = time.time() + 60
        answers = []
        for i in range(first, first + count):  # one after the other: a group each
            answers.append(await cache.first_use(f"iss\x00{i}", expires))
        return answers

    try:
        started = threading.Thread.start
        starts = []

        def counting_start(thread: threading.Thread) -> None:
            starts.append(thread.name)
            started(thread)

        monkeypatch.setattr(threading.Thread, "start", counting_start)
        assert asyncio.run(run(0, 20)) == [True] * 20
        monkeypatch.undo()
        assert starts.count("seen-tokens") == 1
        deadline = time.monotonic() + 5
        while writers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not writers() and cache._writer is None
        assert asyncio.run(run(20, 2)) == [True, True]  # another loop, another writer
        assert asyncio.run(run(0, 1)) == [False]  # stored by the first writer: a replay
    finally:
        engine.dispose()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_process_starts_its_own_writer(tmp_path: Path) -> None:
    """A process forked after the writer ran (a prefork server, a worker pool) inherits the
    cache but not its thread: its first check starts a writer of its own, never waits."""
    import asyncio
    import os
    import time

    from cds_service.auth.replay import SqlReplayCache
    from cds_service.storage.base import make_engine, make_session_factory
    from cds_service.storage.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    cache = SqlReplayCache(make_session_factory(engine))
    assert asyncio.run(cache.first_use("iss\x00parent", time.time() + 60))
    assert cache._writer is not None  # still waiting for the next check
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if its check was answered in time
        engine.dispose(close=False)
        try:
            check = cache.first_use("iss\x00child", time.time() + 60)
            answered = asyncio.run(asyncio.wait_for(check, 10))
        except BaseException:
            os._exit(2)
        os._exit(0 if answered else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    engine.dispose()
