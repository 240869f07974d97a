"""Cached hook calls: answered from memory on the event loop, yet audited, current, verified.

A call about ECGs the process has already classified skips the full path
(:func:`~cds_service.hooks.accept.accept_and_wait` in a worker thread); these tests pin what
it must still do: write its cards and audit entries before answering, show the result every
full call would show, refuse a replayed token, and fall back when storage changed under it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from cds_service.audit import AuditFilter
from cds_service.hooks import handlers
from cds_service.hooks.cache import caches_for
from cds_service.hooks.sources import candidates_from, canonical_json
from tests.service.cards import cards_of, ecg_cards, prefetch_with
from tests.service.conftest import BASE, SANDBOX_ISS, Ehr
from tests.service.ehr import EhrKey, hook_body, sandbox_claims, searchset

PATH = "/cds-services/ecg-review"


def _observation(ptbxl_dir: Path, record: str, when: str) -> dict[str, Any]:
    from adapters import load_ecg, to_fhir_observation

    ecg = load_ecg(ptbxl_dir / "records500" / "00000" / f"{record}_hr.hea")
    observation = to_fhir_observation(
        ecg, patient_ref="Patient/test-patient", observation_id=f"ptbxl-{record}"
    )
    observation["effectiveDateTime"] = when
    return observation


def _no_full_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("a cached call took the full path")

    monkeypatch.setattr(handlers, "accept_and_wait", refuse)


def _audited(ehr: Ehr, hook_instance: str, card_uuids: list[str]) -> None:
    """The call's hook-call entry and one card entry per card are in the chain."""
    calls = ehr.runtime.audit.query(AuditFilter(events=("hook-call",)), limit=50).entries
    assert any(e.detail.get("hookInstance") == hook_instance for e in calls)
    cards = ehr.runtime.audit.query(AuditFilter(events=("card",)), limit=100).entries
    for card_uuid in card_uuids:
        assert any(e.detail.get("card") == card_uuid for e in cards)
        assert ehr.runtime.cards.get_card(card_uuid) is not None  # remembered for feedback


def test_cached_calls_skip_the_full_path_and_each_is_audited_before_its_answer(
    ehr: Ehr, ptbxl_observation: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    prefetch = prefetch_with(ecgObservations=searchset(ptbxl_observation))
    first = ecg_cards(cards_of(ehr.call("ecg-review", hook_body(prefetch=prefetch))))
    assert len(first) == 1
    _no_full_path(monkeypatch)
    for _ in range(3):
        body = hook_body(prefetch=prefetch)
        cards = ecg_cards(cards_of(ehr.call("ecg-review", body)))
        assert [c["summary"] for c in cards] == [first[0]["summary"]]
        assert cards[0]["uuid"] != first[0]["uuid"]
        _audited(ehr, body["hookInstance"], [c["uuid"] for c in cards])
    assert ehr.runtime.audit.verify().ok


def test_a_call_without_ecgs_is_answered_and_audited_without_the_full_path(
    ehr: Ehr, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_full_path(monkeypatch)
    body = hook_body(prefetch=prefetch_with())
    assert cards_of(ehr.call("ecg-review", body)) == []
    _audited(ehr, body["hookInstance"], [])


def test_a_replayed_token_is_refused_on_a_cached_call(
    ehr: Ehr, sandbox_key: EhrKey, ptbxl_observation: dict[str, Any]
) -> None:
    prefetch = prefetch_with(ecgObservations=searchset(ptbxl_observation))
    ehr.call("ecg-review", hook_body(prefetch=prefetch))  # cached from here on
    token = sandbox_key.sign(sandbox_claims(SANDBOX_ISS, BASE + PATH), jku=ehr.jku)
    headers = {"Authorization": f"Bearer {token}"}
    first = ehr.client.post(PATH, json=hook_body(prefetch=prefetch), headers=headers)
    assert first.status_code == 200 and ecg_cards(first.json()["cards"])
    replayed = ehr.client.post(PATH, json=hook_body(prefetch=prefetch), headers=headers)
    assert replayed.status_code == 401 and replayed.content == b""
    failures = ehr.runtime.audit.query(AuditFilter(events=("auth-failure",)), limit=20).entries
    assert any("replay" in str(e.detail.get("reason")) for e in failures)


def test_a_result_of_the_current_model_replaces_an_older_versions_in_later_calls(
    ehr: Ehr, ptbxl_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ECG with only an older model version's result shows that one (the full path, every
    call); once the current version's result is stored, calls show it, then from memory."""
    from adapters import load_ecg

    runtime = ehr.runtime
    current = runtime.jobs.model_version
    observation = _observation(ptbxl_dir, "00011", "2019-11-11T11:00:00Z")
    [candidate] = candidates_from(observation, {})
    info = runtime.ecgs.accept_bytes(
        canonical_json(observation),
        source_uri=candidate.origin,
        patient_ref="Patient/test-patient",
        format=candidate.format,
    )
    [result] = runtime.classifier.classify(
        [load_ecg(ptbxl_dir / "records500" / "00000" / "00011_hr.hea")]
    )
    older = dataclasses.replace(result, model_version=f"{current}-older")
    runtime.jobs.store_results([(info.id, older)])
    prefetch = prefetch_with(ecgObservations=searchset(observation))

    def shown_version() -> str:
        [card] = ecg_cards(cards_of(ehr.call("ecg-review", hook_body(prefetch=prefetch))))
        return str(card["source"]["label"]).rsplit(" ", 1)[-1]

    assert shown_version() == older.model_version
    assert shown_version() == older.model_version  # known ECG, but not a final result
    assert caches_for(runtime.ecgs).current.get(info.id) is None
    runtime.jobs.store_results([(info.id, result)])
    runtime.jobs.notify([info.id])
    assert shown_version() == current
    _no_full_path(monkeypatch)
    assert shown_version() == current  # from memory now


def _card_ecg(ehr: Ehr, card_uuid: str) -> str | None:
    with ehr.runtime.engine.connect() as conn:
        found = conn.execute(text("SELECT ecg_id FROM cards WHERE uuid = :u"), {"u": card_uuid})
        return found.scalar_one()


def test_an_ecg_removed_behind_the_process_is_stored_again_not_a_failed_call(
    ehr: Ehr, ptbxl_dir: Path
) -> None:
    observation = _observation(ptbxl_dir, "00012", "2018-12-12T12:00:00Z")
    prefetch = prefetch_with(ecgObservations=searchset(observation))
    [before] = ecg_cards(cards_of(ehr.call("ecg-review", hook_body(prefetch=prefetch))))
    ecg_id = _card_ecg(ehr, before["uuid"])
    with ehr.runtime.engine.begin() as conn:  # an operator's clean-up, behind our back
        conn.execute(text("DELETE FROM ecgs WHERE id = :id"), {"id": ecg_id})
    [after] = ecg_cards(cards_of(ehr.call("ecg-review", hook_body(prefetch=prefetch))))
    assert after["summary"] == before["summary"]
    stored_again = _card_ecg(ehr, after["uuid"])
    assert stored_again is not None and stored_again != ecg_id
    assert ehr.runtime.ecgs.get_info(stored_again) is not None


def test_a_new_ecgs_call_makes_its_quick_key_once(
    ehr: Ehr, ptbxl_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cached path asks for the quick key, misses, and the full path needs it again (to
    remember the digest): it is made once per call, not once per path."""
    from cds_service.hooks import load

    made: list[str | None] = []
    real = load.quick_key

    def counted(resource: dict[str, Any]) -> str | None:
        made.append(real(resource))
        return made[-1]

    monkeypatch.setattr(load, "quick_key", counted)
    observation = _observation(ptbxl_dir, "00004", "2021-05-06T07:08:09Z")
    observation["id"] = "quick-key-once"  # bytes no other test sends: a never-seen ECG
    prefetch = prefetch_with(ecgObservations=searchset(observation))
    cards = cards_of(ehr.call("ecg-review", hook_body(prefetch=prefetch)))
    assert cards  # a result card or the pending notice: either way the full path ran
    assert len(made) == 1 and made[0] is not None
    digest = caches_for(ehr.runtime.ecgs).digests.get(made[0])
    assert digest is not None  # the full path remembered it under that key
