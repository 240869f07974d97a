"""Replay protection: each ``(iss, jti)`` is accepted once for the token's lifetime.

The in-memory cache suits one web process (embedded mode). With several web workers a
token replayed against another worker would pass, so distributed mode uses Redis
(``SET NX`` with an expiry), shared by every worker.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Protocol


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
