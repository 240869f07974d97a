"""Replay protection: each ``(iss, jti)`` is accepted once for the token's lifetime.

A running service keeps the token ids it accepted in its database
(:class:`SqlReplayCache`): every web process of ``serve --workers N`` shares it, and a
restart forgets nothing, so a token replayed to another worker or after a restart is
refused. Distributed mode with a Redis broker uses Redis (``SET NX`` with an expiry)
instead. The in-memory cache is for an app without a runtime (tests, tools).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from cds_service.storage.tables import SeenTokenRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker


class ReplayCache(Protocol):
    async def first_use(self, key: str, expires_at: float) -> bool:
        """Record ``key`` until ``expires_at`` (epoch s); False when it was already there."""
        ...


class InMemoryReplayCache:
    """A bounded LRU of seen token ids, each kept until its token expires.

    When full, the oldest entries are evicted: an attacker flooding the cache with valid
    tokens could then replay an evicted one, but valid tokens need the EHR's private key,
    and ``max_entries`` is sized far above any real call rate times token lifetime.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    async def first_use(self, key: str, expires_at: float) -> bool:
        now = time.time()
        with self._lock:
            self._purge(now)
            seen = self._entries.get(key)
            if seen is not None and seen > now:
                return False
            self._entries[key] = expires_at
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
            return True

    def _purge(self, now: float) -> None:
        # Entries are roughly in insertion order; drop expired ones from the front.
        while self._entries:
            key, expiry = next(iter(self._entries.items()))
            if expiry > now:
                break
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


class RedisReplayCache:
    """Replay cache shared by all web workers through Redis."""

    def __init__(self, url: str, prefix: str = "ecg-cds:jti:") -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(url)
        self._prefix = prefix

    async def first_use(self, key: str, expires_at: float) -> bool:
        ttl_ms = max(1, int((expires_at - time.time()) * 1000))
        stored = await self._redis.set(self._prefix + key, b"1", nx=True, px=ttl_ms)
        return bool(stored)


class SqlReplayCache:
    """Replay cache in the service database (SQLite or PostgreSQL), by SHA-256 of the key.

    One row per accepted token, kept until the token expires; expired rows are deleted at
    most once per :attr:`PURGE_EVERY_S` per process. Two processes accepting the same token
    at once: the second insert fails on the primary key, and that one is the replay.
    """

    PURGE_EVERY_S = 60.0

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory
        self._purged_at = 0.0

    async def first_use(self, key: str, expires_at: float) -> bool:
        return await run_in_threadpool(self._first_use, key, expires_at)

    def _first_use(self, key: str, expires_at: float) -> bool:
        # surrogatepass: a jti is any JSON string, lone surrogates included
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        now = time.time()
        try:
            with self._sessions.begin() as session:
                if now - self._purged_at >= self.PURGE_EVERY_S:
                    self._purged_at = now
                    session.execute(delete(SeenTokenRow).where(SeenTokenRow.expires_at <= now))
                row = session.get(SeenTokenRow, digest)
                if row is not None and row.expires_at > now:
                    return False
                if row is not None:
                    row.expires_at = expires_at
                else:
                    session.add(SeenTokenRow(key=digest, expires_at=expires_at))
        except IntegrityError:
            return False  # another process stored it first
        return True
