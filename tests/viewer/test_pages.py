"""The viewer over HTTP against the real service: access rules, content, feedback, list.

Each page is compared with what the pipeline stored for that ECG (its result, its
feedback, its audit trail), so the expectations come from the service's own records of
real ECGs, not from constants.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from pydantic import ValidationError

from cds_service.audit import AuditFilter
from cds_service.settings import Settings
from cds_service.viewer.links import make_token, reviewer_link, viewer_link
from cds_service.viewer.present import OVERRIDE_REASON_SYSTEM, OVERRIDE_REASONS, percent
from tests.viewer.conftest import AUDIT_TOKEN, PATIENT, ViewerService

#: The service fixture loads the model and classifies three real ECGs (tens of seconds).
pytestmark = pytest.mark.slow

STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


class _Collect(HTMLParser):
    """Tags with their attributes, and the page's visible-ish text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Collect:
    parser = _Collect()
    parser.feed(html)
    return parser


@pytest.fixture
def client(viewer_service: ViewerService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=viewer_service.base_url, timeout=60) as http:
        yield http


def _link(service: ViewerService, name: str, **kwargs: str) -> str:
    return viewer_link(service.settings, service.ecgs[name], **kwargs)  # type: ignore[arg-type]


def test_page_shows_leads_findings_and_measurements_from_the_stored_result(
    viewer_service: ViewerService, client: httpx.Client
) -> None:
    ecg_id = viewer_service.ecgs["ptbxl"]
    response = client.get(_link(viewer_service, "ptbxl"))
    assert response.status_code == 200
    page = _parse(response.text)
    leads = [str(a["data-lead"]) for tag, a in page.tags if tag == "g" and a.get("data-lead")]
    # 3x4 (12 + rhythm II) and stacked (12) are both on the page; the CSS shows one.
    assert sorted(set(leads)) == sorted(STANDARD_LEADS)
    assert len(leads) == 13 + 12
    stored = viewer_service.runtime.jobs.result(ecg_id)
    assert stored is not None
    labelled = [str(a["data-label"]) for _, a in page.tags if a.get("data-label")]
    assert sorted(labelled) == sorted(s.label_id for s in stored.result.scores)
    text = " ".join(page.text)
    for score in stored.result.scores:
        assert score.text in text
        assert percent(score.probability) in text
    for measurement in stored.result.measurements.values():
        if measurement.value is not None and measurement.unit == "ms":
            assert f"{measurement.value:.0f}" in text
    assert stored.model_version in text
    assert PATIENT in text


def test_pages_are_self_contained_and_not_cached(
    viewer_service: ViewerService, client: httpx.Client
) -> None:
    """No CDN, no web font, no third-party script: hospitals often have no internet."""
    response = client.get(_link(viewer_service, "muse"))
    assert response.status_code == 200
    for tag, attrs in _parse(response.text).tags:
        for key in ("src", "href", "action"):
            value = attrs.get(key)
            if value and tag != "svg":
                assert not urlsplit(value).netloc, (tag, key, value)
    assert "@import" not in response.text and "@font-face" not in response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert csp.endswith("frame-ancestors 'none'")  # no viewer_frame_ancestors configured
    for name in ("viewer.css", "viewer.js"):
        asset = client.get(f"/viewer/static/{name}")
        assert asset.status_code == 200 and asset.content
        assert "http://" not in asset.text and "https://" not in asset.text
    assert client.get("/viewer/static/..%2Fsvg.py").status_code == 404
    assert client.get("/viewer/static/app.py").status_code == 404


@pytest.mark.parametrize(
    "origin", ["https://ehr.example.org; script-src *", "*", "https://ehr.example.org/app"]
)
def test_frame_ancestors_are_origins_only(origin: str) -> None:
    """They go into the page's Content-Security-Policy header as they are."""
    with pytest.raises(ValidationError, match="viewer_frame_ancestors"):
        Settings(viewer_frame_ancestors=[origin])


def test_a_token_for_one_ecg_does_not_open_another(
    viewer_service: ViewerService, client: httpx.Client
) -> None:
    token = parse_qs(urlsplit(_link(viewer_service, "ptbxl")).query)["token"][0]
    other = viewer_service.ecgs["muse"]
    response = client.get(f"/viewer/ecg/{other}", params={"token": token})
    assert response.status_code == 403
    _assert_no_phi(viewer_service, response.text)


def test_expired_missing_and_tampered_links_are_refused_without_phi(
    viewer_service: ViewerService, client: httpx.Client
) -> None:
    ecg_id = viewer_service.ecgs["ptbxl"]
    expired = make_token(viewer_service.settings, "ecg", ecg_id, ttl_s=5, now=time.time() - 60)
    for params in ({"token": expired}, {}, {"token": "v1.ecg.99999999999.forged"}):
        response = client.get(f"/viewer/ecg/{ecg_id}", params=params)
        assert response.status_code == 403
        assert response.headers["cache-control"] == "no-store"
        _assert_no_phi(viewer_service, response.text)
    # A card link whose card was edited in the address.
    url = _link(viewer_service, "ptbxl", card_uuid="card-a", service_id="ecg-review")
    response = client.get(url.replace("card=card-a", "card=card-b"))
    assert response.status_code == 403
    # Refusals are audited as authentication failures.
    failures = viewer_service.runtime.audit.query(
        AuditFilter(events=["auth-failure"], outcome="failure"), limit=10
    )
    assert any(e.detail.get("where") == "viewer-ecg" for e in failures.entries)


def test_a_valid_link_to_an_ecg_no_longer_stored_is_404(
    viewer_service: ViewerService, client: httpx.Client
) -> None:
    gone = "00000000-0000-4000-8000-00000000dead"
    response = client.get(viewer_link(viewer_service.settings, gone))
    assert response.status_code == 404
    assert '<svg class="ecg-paper' not in response.text


def _assert_no_phi(service: ViewerService, html: str) -> None:
    assert PATIENT not in html
    for ecg_id in service.ecgs.values():
        assert ecg_id not in html
    assert "<svg" not in html.split("<main", 1)[1]  # no tracing


def test_page_view_is_audited(viewer_service: ViewerService, client: httpx.Client) -> None:
    ecg_id = viewer_service.ecgs["muse"]
    before = viewer_service.runtime.audit.query(AuditFilter(ecg_id=ecg_id), limit=1000).total
    assert client.get(_link(viewer_service, "muse")).status_code == 200
    page = viewer_service.runtime.audit.query(AuditFilter(ecg_id=ecg_id), limit=1000)
    assert page.total == before + 1
    entry = page.entries[0]
    assert entry.event == "viewer-access"
    assert entry.detail.get("access") == "link"
    assert entry.actor.client == "viewer-link"
    assert entry.patient == PATIENT.removeprefix("Patient/")


def test_feedback_needs_the_page_token_and_is_stored_like_cds_feedback(
    viewer_service: ViewerService, client: httpx.Client
) -> None:
    ecg_id = viewer_service.ecgs["muse"]
    before = len(viewer_service.runtime.cards.feedback_for(ecg_id))
    action = f"/viewer/ecg/{ecg_id}/feedback"
    json = {"Accept": "application/json"}

    # No token (e.g. a forged cross-site form): refused, nothing stored.
    refused = client.post(action, data={"outcome": "accepted"}, headers=json)
    assert refused.status_code == 403
    # A token for another ECG: refused.
    other = parse_qs(urlsplit(_link(viewer_service, "ptbxl")).query)["token"][0]
    assert client.post(action, data={"token": other, "outcome": "accepted"}).status_code == 403
    assert len(viewer_service.runtime.cards.feedback_for(ecg_id)) == before

    token = parse_qs(urlsplit(_link(viewer_service, "muse")).query)["token"][0]
    # An override needs a reason; a bad outcome is refused.
    no_reason = client.post(action, data={"token": token, "outcome": "overridden"}, headers=json)
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["detail"]
    bad = client.post(action, data={"token": token, "outcome": "maybe"}, headers=json)
    assert bad.status_code == 422

    agreed = client.post(action, data={"token": token, "outcome": "accepted"}, headers=json)
    assert agreed.status_code == 200 and agreed.json()["stored"] is True
    # The override form as the page serves it, posted without JavaScript: the service
    # records it and sends the browser back to the page through the page's own link.
    page = client.get(_link(viewer_service, "muse"))
    hidden = _override_form_fields(page.text)
    assert hidden["token"] != token  # the forms carry a feedback-only token
    overridden = client.post(
        action,
        data={
            **hidden,
            "reason": OVERRIDE_REASONS[0][0],
            "comment": "Lateral T-wave inversion not reported",
        },
    )
    assert overridden.status_code == 303
    back = urljoin(str(overridden.url), overridden.headers["location"])
    assert urlsplit(back).path == f"/viewer/ecg/{ecg_id}"
    assert client.get(back).status_code == 200
    # The feedback-only token records feedback but never opens the page.
    opened = client.get(f"/viewer/ecg/{ecg_id}", params={"token": hidden["token"]})
    assert opened.status_code == 403

    stored = viewer_service.runtime.cards.feedback_for(ecg_id)[before:]
    assert [f.outcome for f in stored] == ["accepted", "overridden"]
    assert all(f.source == "viewer" and f.ecg_id == ecg_id for f in stored)
    assert stored[1].override_reason is not None
    assert stored[1].override_reason == {
        "system": OVERRIDE_REASON_SYSTEM,
        "code": OVERRIDE_REASONS[0][0],
        "display": OVERRIDE_REASONS[0][1],
    }
    assert stored[1].user_comment == "Lateral T-wave inversion not reported"
    # Both land on one viewer card for this ECG and model version.
    assert stored[0].card_uuid == stored[1].card_uuid and stored[0].card_known


def _override_form_fields(html: str) -> dict[str, str]:
    """The hidden fields of the page's override form (the second feedback form)."""
    forms = html.split("data-feedback>")
    assert len(forms) == 3, "two feedback forms expected"
    fields = {
        str(a.get("name")): str(a.get("value"))
        for tag, a in _parse(forms[2].split("</form>")[0]).tags
        if tag == "input" and a.get("type") == "hidden"
    }
    assert fields["outcome"] == "overridden"
    return fields


def test_feedback_through_a_card_link_is_recorded_against_that_card(
    viewer_service: ViewerService, client: httpx.Client
) -> None:
    ecg_id = viewer_service.ecgs["ptb"]
    card_uuid = "0d5f3f7e-viewer-test-card"
    viewer_service.runtime.cards.save_card(
        card_uuid=card_uuid,
        service_id="ecg-review",
        ecg_id=ecg_id,
        patient_ref=PATIENT,
        summary="ECG: findings for review",
        indicator="info",
        card={"uuid": card_uuid, "summary": "ECG: findings for review"},
    )
    url = _link(viewer_service, "ptb", card_uuid=card_uuid, service_id="ecg-review")
    page = client.get(url)
    assert page.status_code == 200
    hidden = {
        a.get("name"): a.get("value")
        for tag, a in _parse(page.text).tags
        if tag == "input" and a.get("type") == "hidden"
    }
    assert hidden["card"] == card_uuid and hidden["service"] == "ecg-review"
    response = client.post(
        f"/viewer/ecg/{ecg_id}/feedback",
        data={**hidden, "outcome": "accepted"},  # type: ignore[dict-item]
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200
    latest = viewer_service.runtime.cards.feedback_for(ecg_id)[-1]
    assert (latest.card_uuid, latest.service_id, latest.card_known) == (
        card_uuid,
        "ecg-review",
        True,
    )


def test_list_requires_a_reviewer_session(
    viewer_service: ViewerService, client: httpx.Client
) -> None:
    response = client.get("/viewer/")
    assert response.status_code == 303 and response.headers["location"] == "login"
    # An ECG link token does not open the list.
    token = parse_qs(urlsplit(_link(viewer_service, "ptbxl")).query)["token"][0]
    assert client.get("/viewer/", params={"token": token}).status_code == 403
    wrong = client.post("/viewer/login", data={"audit_token": "not-it"})
    assert wrong.status_code == 401
    assert "ecg_viewer_reviewer" not in wrong.headers.get("set-cookie", "")


def test_sign_in_sets_a_strict_http_only_cookie_and_lists_ecgs(
    viewer_service: ViewerService, client: httpx.Client
) -> None:
    response = client.post("/viewer/login", data={"audit_token": AUDIT_TOKEN})
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/viewer" in cookie
    listing = client.get("/viewer/")
    assert listing.status_code == 200
    hrefs = [a.get("href") for tag, a in _parse(listing.text).tags if tag == "a"]
    for ecg_id in viewer_service.ecgs.values():
        assert f"ecg/{ecg_id}" in hrefs
    # A reviewer opens any ECG from the list without a link token, and the page carries an
    # ECG token for its feedback forms (the cookie alone records nothing).
    page = client.get(f"/viewer/ecg/{viewer_service.ecgs['ptbxl']}")
    assert page.status_code == 200
    tokens = [a.get("value") for tag, a in _parse(page.text).tags if a.get("name") == "token"]
    assert tokens and all(tokens)


def test_reviewer_link_becomes_a_session_and_leaves_the_address(
    viewer_service: ViewerService,
) -> None:
    url = reviewer_link(viewer_service.settings, ttl_s=60)
    with httpx.Client(timeout=60) as http:
        response = http.get(url)
        assert response.status_code == 303
        assert "token" not in response.headers["location"]
        assert http.get(urljoin(url, response.headers["location"])).status_code == 200


def _rows(html: str) -> list[str]:
    """ECG ids linked from the list's rows."""
    return re.findall(r'href="ecg/([0-9a-f-]{36})"', html)


def test_list_filters(viewer_service: ViewerService, client: httpx.Client) -> None:
    assert client.post("/viewer/login", data={"audit_token": AUDIT_TOKEN}).status_code == 303
    ids = set(viewer_service.ecgs.values())

    with_feedback = {i for i in ids if viewer_service.runtime.cards.feedback_for(i)}
    shown = set(_rows(client.get("/viewer/", params={"feedback": "yes"}).text))
    assert shown & ids == with_feedback
    shown = set(_rows(client.get("/viewer/", params={"feedback": "no"}).text))
    assert shown & ids == ids - with_feedback

    # By finding and probability: compare with each stored result.
    stored = {i: viewer_service.runtime.jobs.result(i) for i in ids}
    label = next(iter(stored.values())).result.scores[0].label_id
    for threshold in (0, 50, 100):
        expected = {
            i
            for i, r in stored.items()
            if r is not None
            and any(
                s.label_id == label and s.probability * 100 >= threshold for s in r.result.scores
            )
        }
        params = {"finding": label, "min_prob": str(threshold)}
        shown = set(_rows(client.get("/viewer/", params=params).text))
        assert shown & ids == expected, threshold

    # By date received: all were received today (UTC).
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert set(_rows(client.get("/viewer/", params={"date_from": today}).text)) >= ids
    assert not set(_rows(client.get("/viewer/", params={"date_to": "2000-01-01"}).text))
    bad = client.get("/viewer/", params={"date_from": "yesterday"})
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.text
    end = client.get("/viewer/", params={"date_to": "9999-12-31"})  # "to" + 1 day: was a 500
    assert end.status_code == 400 and "before 9999-12-31" in end.text


def test_list_reads_feedback_in_one_query_not_one_per_row(
    viewer_service: ViewerService, client: httpx.Client
) -> None:
    from typing import Any

    from sqlalchemy import event

    assert client.post("/viewer/login", data={"audit_token": AUDIT_TOKEN}).status_code == 303
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = viewer_service.runtime.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        for params in ({}, {"feedback": "yes"}, {"feedback": "no"}):
            statements.clear()
            page = client.get("/viewer/", params=params)
            assert page.status_code == 200
            rows = _rows(page.text)
            # The page's feedback in one query (the filter itself is a subquery of the list's).
            from_feedback = [s for s in statements if s.lstrip().startswith("SELECT feedback.")]
            assert len(from_feedback) <= 1, (params, len(rows), from_feedback)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(viewer_service.ecgs) > 1
