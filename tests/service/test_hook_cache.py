"""What a hook call keeps between calls: keys that only the same content has."""

from __future__ import annotations

from cds_service.hooks.cache import quick_key
from cds_service.hooks.sources import canonical_json
from cds_service.lru import BoundedLru


def test_quick_key_ignores_meta_and_key_order_like_the_canonical_form() -> None:
    a = {"resourceType": "Observation", "id": "1", "valueQuantity": {"value": 1, "unit": "mV"}}
    b = {"valueQuantity": {"unit": "mV", "value": 1}, "id": "1", "resourceType": "Observation"}
    assert quick_key(a) == quick_key(b) == quick_key({**a, "meta": {"versionId": "7"}})
    assert canonical_json(a) == canonical_json(b)


def test_quick_key_tells_apart_what_the_canonical_form_tells_apart() -> None:
    assert quick_key({"a": 1}) != quick_key({"a": 1.0})
    assert quick_key({"a": "x"}) != quick_key({"a": ["x"]})
    assert quick_key({"a": -0.0}) != quick_key({"a": 0.0})


def test_no_quick_key_where_orjson_would_write_two_values_alike() -> None:
    # orjson writes NaN and infinities as null; Python's JSON parser accepts all three
    assert quick_key({"a": float("nan")}) is None
    assert quick_key({"a": float("inf")}) is None
    assert quick_key({"a": None}) is None
    assert quick_key({"a": 2**70}) is None  # beyond what orjson writes
    # anywhere in the resource, not only at the top
    assert quick_key({"a": [{"b": [1.0, float("-inf")]}]}) is None
    assert quick_key({"a": {"b": None}}) is None
    # a string that reads "null" is no null
    assert quick_key({"a": "null"}) is not None


def test_bounded_lru_keeps_the_most_recently_used() -> None:
    lru: BoundedLru[str, int] = BoundedLru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # a is now the most recent
    lru.put("c", 3)
    assert lru.get("b") is None and lru.get("a") == 1 and lru.get("c") == 3
    lru.discard_where(lambda key, _: key == "a")
    assert lru.get("a") is None and len(lru) == 1
