"""What a hook call may keep from the calls before it, and nothing it may not.

A cached hook call (an ECG the service has already classified) should cost little more than
reading its request: everything it needs is derived from immutable data, so it is derived
once per process and kept in bounded LRUs, one set per :class:`EcgStore` (one per process):

* ``known``: the ECG's SHA-256 -> its id, acquisition time and patient (stored ECGs never
  change), so a repeat call skips the store;
* ``digests``: a quick key of a prefetched Observation -> the SHA-256 of its canonical
  bytes, so a repeat call does not serialise the resource the slow, canonical way again;
* ``templates``: a result (ECG id, model version, stored time) shown in one chart context
  -> its card without ids and links, as orjson bytes
  (:func:`~cds_service.hooks.cards.review_card_template`); one result per (ECG, model
  version) is stored, never changed;
* ``current``: an ECG id -> its stored result of the model version this process runs. That
  is the result every later call shows (a result of the current version is preferred to any
  other, one is stored per ECG and version, and stored results are never updated), so a
  call whose ECGs all have one is answered without a database read
  (:func:`~cds_service.hooks.accept.accept_known`). It holds only results read back from the
  database, i.e. committed.

Nothing here is about who may see what: the token is verified, the patient checked and the
stored result looked up on every call; only what follows from them is reused.
"""

from __future__ import annotations

import hashlib
import math
import threading
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from cds_service.lru import BoundedLru
from cds_service.storage.ecgs import EcgStore
from cds_service.storage.records import StoredResult

#: ECG id, acquisition time, patient reference of a stored ECG.
KnownEcg = tuple[str, datetime | None, str | None]
#: (ECG id, model version, stored at, patient, EcgRef) -> (card template,), or (None,)
#: when the result gets no card (a normal ECG while normal ECGs are not shown).
CardTemplates = BoundedLru[tuple[Any, ...], tuple[bytes | None]]


@dataclass
class HookCaches:
    known: BoundedLru[str, KnownEcg] = field(default_factory=lambda: BoundedLru(20_000))
    digests: BoundedLru[str, str] = field(default_factory=lambda: BoundedLru(20_000))
    templates: CardTemplates = field(default_factory=lambda: BoundedLru(4_096))
    current: BoundedLru[str, StoredResult] = field(default_factory=lambda: BoundedLru(20_000))

    def forget_ecg(self, ecg_id: str) -> None:
        """An ECG removed from storage: its id must not be reused from here."""
        self.known.discard_where(lambda _, known: known[0] == ecg_id)
        self.templates.discard_where(lambda key, _: key[0] == ecg_id)
        self.current.pop(ecg_id)


_CACHES: weakref.WeakKeyDictionary[EcgStore, HookCaches] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def caches_for(ecgs: EcgStore) -> HookCaches:
    """The caches of the process's ECG store (made on first use)."""
    caches = _CACHES.get(ecgs)
    if caches is None:
        with _CACHES_LOCK:
            caches = _CACHES.setdefault(ecgs, HookCaches())
    return caches


def quick_key(resource: dict[str, Any]) -> str | None:
    """A key for a parsed JSON resource that only the same content has: SHA-256 of its
    orjson serialisation with sorted keys (without ``meta``, as the canonical form), about
    25 times faster to make than the canonical bytes themselves.

    None when orjson cannot tell values apart: it writes None, NaN and infinities alike as
    ``null`` (a Python JSON parser accepts all three), so a resource holding any of them,
    or a number orjson refuses, leaves the caller on the canonical path.
    """
    content = {k: v for k, v in resource.items() if k != "meta"}
    if _holds_null_alike(content):
        return None
    try:
        raw = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return None
    return hashlib.sha256(raw).hexdigest()


def _holds_null_alike(value: Any) -> bool:
    """Whether a parsed JSON value holds None, NaN or an infinity anywhere. A walk of the
    values: an ECG's bulk is a few long strings, so this is several times quicker than
    looking for ``null`` in the serialised bytes."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif item is None or (kind is float and not math.isfinite(item)):
            return True
    return False
