"""Signed viewer links: bound to one ECG and one scope, expiring, secret kept with 0600."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from cds_service.settings import Settings
from cds_service.viewer import links
from cds_service.viewer.links import (
    feedback_token,
    make_token,
    verify_feedback_token,
    verify_link_token,
    verify_list_token,
    verify_token,
    viewer_link,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, public_base_url="https://cds.example.org/ecg/")


def _token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


def test_link_is_absolute_under_public_base_and_opens_its_ecg(settings: Settings) -> None:
    url = viewer_link(settings, "ecg-123")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "cds.example.org",
        "/ecg/viewer/ecg/ecg-123",
    )
    assert verify_link_token(settings, "ecg-123", _token_of(url))


def test_card_and_service_are_bound_into_the_token(settings: Settings) -> None:
    url = viewer_link(settings, "ecg-123", card_uuid="c-1", service_id="ecg-review")
    query = parse_qs(urlsplit(url).query)
    assert (query["card"], query["service"]) == (["c-1"], ["ecg-review"])
    token = _token_of(url)
    assert verify_link_token(settings, "ecg-123", token, card_uuid="c-1", service_id="ecg-review")
    # Editing the card or service in the URL, or dropping them, breaks the link.
    assert not verify_link_token(
        settings, "ecg-123", token, card_uuid="c-2", service_id="ecg-review"
    )
    assert not verify_link_token(settings, "ecg-123", token, card_uuid="c-1", service_id="other")
    assert not verify_link_token(settings, "ecg-123", token)


def test_token_for_one_ecg_does_not_open_another(settings: Settings) -> None:
    token = _token_of(viewer_link(settings, "ecg-123"))
    assert not verify_link_token(settings, "ecg-124", token)
    assert not verify_link_token(settings, "ecg-1234", token)


def test_ecg_token_is_not_a_reviewer_token(settings: Settings) -> None:
    token = _token_of(viewer_link(settings, "*"))
    assert not verify_list_token(settings, token)
    assert verify_list_token(settings, make_token(settings, "list", "*"))


def test_expired_and_tampered_tokens_are_refused(settings: Settings) -> None:
    past = time.time() - 3600
    expired = make_token(settings, "ecg", "e1", ttl_s=60, now=past)
    assert not verify_link_token(settings, "e1", expired)
    # Stretching the expiry breaks the signature.
    version, scope, expiry, signature = make_token(settings, "ecg", "e1", ttl_s=60).split(".")
    stretched = ".".join([version, scope, str(int(expiry) + 86_400), signature])
    assert not verify_link_token(settings, "e1", stretched)
    assert verify_token(settings, f"{version}.{scope}.{expiry}.{signature}", "ecg", "e1")
    for garbage in ("", "v1", "v1.ecg.x.y", "v2.ecg.99999999999.abc", "a" * 500, None):
        assert not verify_link_token(settings, "e1", garbage)


def test_other_secret_does_not_verify(tmp_path: Path) -> None:
    one = Settings(data_dir=tmp_path / "a")
    two = Settings(data_dir=tmp_path / "b")
    token = make_token(one, "ecg", "e1")
    assert verify_link_token(one, "e1", token)
    assert not verify_link_token(two, "e1", token)
    configured = Settings(data_dir=tmp_path / "c", link_secret="x" * 40)
    assert not verify_link_token(configured, "e1", token)


def test_generated_secret_is_private_and_stable(settings: Settings) -> None:
    token = make_token(settings, "ecg", "e1")
    path = Path(settings.data_dir) / "viewer-link-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # A new Settings object (a restart) reads the same secret back.
    again = Settings(data_dir=settings.data_dir)
    assert verify_link_token(again, "e1", token)


def test_feedback_tokens_only_record_feedback(settings: Settings) -> None:
    token = feedback_token(settings, "e1", card_uuid="c-1", service_id="ecg-review")
    assert verify_feedback_token(settings, "e1", token, card_uuid="c-1", service_id="ecg-review")
    assert not verify_feedback_token(
        settings, "e2", token, card_uuid="c-1", service_id="ecg-review"
    )
    assert not verify_feedback_token(settings, "e1", token)
    # It opens neither the page nor the list, and lasts longer than the link.
    assert not verify_link_token(settings, "e1", token, card_uuid="c-1", service_id="ecg-review")
    assert not verify_list_token(settings, token)
    assert int(token.split(".")[2]) > time.time() + settings.link_ttl_s
    # A link token for the ECG is also good for feedback (the page's own link).
    link = make_token(settings, "ecg", "e1")
    assert verify_feedback_token(settings, "e1", link)


def test_lifetime_bounds(settings: Settings) -> None:
    with pytest.raises(ValueError):
        make_token(settings, "ecg", "e1", ttl_s=0)
    token = make_token(settings, "ecg", "e1", ttl_s=30)
    expiry = int(token.split(".")[2])
    assert abs(expiry - (time.time() + 30)) < 5


def _rotate_secret(settings: Settings, value: str) -> None:
    """Replace the secret file the way an operator would: a new file renamed over it."""
    path = Path(settings.data_dir) / "viewer-link-secret"
    fresh = path.with_suffix(".new")
    fresh.write_text(value, encoding="ascii")
    fresh.chmod(0o600)
    fresh.replace(path)


def test_a_rotated_secret_file_is_picked_up(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The secret is kept in memory between looks at the file, but a rotated file is seen:
    links are signed with the new secret and the old secret's links stop verifying."""
    old = make_token(settings, "ecg", "e1")
    assert verify_link_token(settings, "e1", old)
    _rotate_secret(settings, "r" * 48)
    monkeypatch.setattr(links, "SECRET_RECHECK_S", 0.0)  # the recheck time has passed
    assert not verify_link_token(settings, "e1", old)
    new = make_token(settings, "ecg", "e1")
    assert new != old and verify_link_token(settings, "e1", new)
    # A restart reads the same rotated secret.
    assert verify_link_token(Settings(data_dir=settings.data_dir), "e1", new)


def test_a_token_of_the_rotated_secret_verifies_at_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token that does not verify with the kept secret makes the file be looked at now, so
    a link signed after a rotation (e.g. by another process) never fails for the recheck time."""
    make_token(settings, "ecg", "e1")  # the old secret is now kept, just checked
    _rotate_secret(settings, "n" * 48)
    kept = links._secrets
    monkeypatch.setattr(links, "_secrets", {})  # another process: reads the rotated file
    new = make_token(settings, "ecg", "e1")
    monkeypatch.setattr(links, "_secrets", kept)
    assert verify_link_token(settings, "e1", new)
    assert not verify_link_token(settings, "e1", new[:-2] + "xx")


def test_a_deleted_secret_file_is_generated_again(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make_token(settings, "ecg", "e1")
    path = Path(settings.data_dir) / "viewer-link-secret"
    path.unlink()
    monkeypatch.setattr(links, "SECRET_RECHECK_S", 0.0)
    assert not verify_link_token(settings, "e1", old)
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
