"""End to end in a real headless Chromium: the page a card opens, on a desktop and a phone.

Opens the viewer for real ECGs through signed links, checks that the 12 leads and the
stored findings are visible, switches layouts, gives feedback by clicking, checks that the
service stored it, and saves screenshots under ``test-artifacts/viewer/``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cds_service.api.viewer_access import REVIEWER_COOKIE
from cds_service.viewer.links import make_token, viewer_link
from cds_service.viewer.present import OVERRIDE_REASONS, percent
from tests.viewer.conftest import AUDIT_TOKEN, ViewerService

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def shots(artifacts_dir: Path) -> Path:
    folder = artifacts_dir / "viewer"
    folder.mkdir(exist_ok=True)
    return folder


def _page(
    browser: Any,
    viewport: dict[str, int],
    *,
    mobile: bool = False,
    requests: list[str] | None = None,
) -> Any:
    """A page in a fresh context (no cookies); every URL it requests goes into ``requests``."""
    context = browser.new_context(
        viewport=viewport, is_mobile=mobile, has_touch=mobile, device_scale_factor=1
    )
    page = context.new_page()
    if requests is not None:
        page.on("request", lambda request: requests.append(request.url))
    return page


def _visible_leads(page: Any, layout: str) -> list[str]:
    """Lead labels drawn and visible in the given layout's figure."""
    figure = page.locator(f"figure.view-{layout}")
    names = []
    for group in figure.locator("g.lead").all():
        label = group.locator("text").first
        if label.is_visible():
            names.append(group.get_attribute("data-lead"))
    return names


def _no_horizontal_page_scroll(page: Any) -> bool:
    return bool(
        page.evaluate(
            "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
    )


def test_card_link_shows_the_ecg_and_findings_and_records_feedback(
    browser: Any, viewer_service: ViewerService, shots: Path
) -> None:
    ecg_id = viewer_service.ecgs["ptbxl"]
    stored = viewer_service.runtime.jobs.result(ecg_id)
    assert stored is not None
    requests: list[str] = []
    page = _page(browser, DESKTOP, requests=requests)
    page.goto(viewer_link(viewer_service.settings, ecg_id))
    page.screenshot(path=str(shots / "ecg-1280x800.png"))  # what a clinician sees first

    # The 12 leads on standard paper (3x4 + rhythm strip by default).
    assert sorted(set(_visible_leads(page, "3x4"))) == sorted(STANDARD_LEADS)
    assert page.locator("figure.view-stacked").is_hidden()
    # The findings and the label text they were scored with.
    findings = page.locator("#findings")
    assert findings.is_visible()
    others = page.locator("details.others summary")
    if others.count():
        others.click()
    for score in stored.result.scores:
        item = findings.locator(f"[data-label='{score.label_id}']")
        assert item.is_visible(), score.label_id
        assert percent(score.probability) in item.inner_text()
        # The measurements the score rests on are shown beside it.
        for line in score.measured_evidence:
            assert line in item.inner_text(), (score.label_id, line)
    assert any(s.measured_evidence for s in stored.result.scores)
    assert page.get_by_text(stored.model_version).first.is_visible()
    assert _no_horizontal_page_scroll(page)
    page.screenshot(path=str(shots / "ecg-1280-full.png"), full_page=True)

    # 12 stacked leads at the click of the toggle.
    page.get_by_text("12 stacked").click()
    assert page.locator("figure.view-3x4").is_hidden()
    assert _visible_leads(page, "stacked") == list(STANDARD_LEADS)
    page.screenshot(path=str(shots / "ecg-stacked-1280.png"), full_page=True)

    # Feedback: agree, then override with a reason; both stored by the service.
    before = len(viewer_service.runtime.cards.feedback_for(ecg_id))
    page.get_by_test_id("agree").click()
    feedback_list = page.get_by_test_id("feedback-list")
    feedback_list.get_by_text("Agreed").wait_for()
    reason_code = OVERRIDE_REASONS[-1][0]
    page.select_option("#override-reason", reason_code)
    page.fill("#override-comment", "Baseline too noisy in the limb leads")
    page.get_by_test_id("override").click()
    feedback_list.get_by_text("Overridden").wait_for()
    assert "Baseline too noisy" in feedback_list.inner_text()
    stored_feedback = viewer_service.runtime.cards.feedback_for(ecg_id)[before:]
    assert [f.outcome for f in stored_feedback] == ["accepted", "overridden"]
    assert stored_feedback[1].override_reason["code"] == reason_code
    assert all(f.source == "viewer" for f in stored_feedback)
    page.locator("#feedback").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "ecg-feedback-1280x800.png"))

    # Everything the page loaded came from the service itself.
    assert requests and all(url.startswith(viewer_service.base_url) for url in requests)
    page.context.close()


def test_phone_screen_keeps_the_page_usable(
    browser: Any, viewer_service: ViewerService, shots: Path
) -> None:
    ecg_id = viewer_service.ecgs["muse"]
    page = _page(browser, PHONE, mobile=True)
    page.goto(viewer_link(viewer_service.settings, ecg_id))
    # The page itself never scrolls sideways; the ECG paper does, inside its frame.
    assert _no_horizontal_page_scroll(page)
    scroller = page.locator(".ecg-scroll")
    widths = scroller.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert widths[0] > widths[1]
    scroller.evaluate("el => { el.scrollLeft = el.scrollWidth; }")
    # The leads at the far right (V4-V6) come into view when the paper is scrolled.
    v6 = page.locator("figure.view-3x4 g.lead[data-lead='V6'] text").first
    assert v6.is_visible()
    box = v6.bounding_box()
    assert box is not None and 0 <= box["x"] <= PHONE["width"]
    scroller.evaluate("el => { el.scrollLeft = 0; }")
    page.screenshot(path=str(shots / "ecg-390x844.png"))
    # Findings and the feedback buttons are reachable and big enough to tap.
    agree = page.get_by_test_id("agree")
    agree.scroll_into_view_if_needed()
    button = agree.bounding_box()
    assert button is not None and button["height"] >= 40 and button["width"] <= PHONE["width"]
    assert page.locator("#findings").is_visible()
    page.screenshot(path=str(shots / "ecg-390-full.png"), full_page=True)
    page.context.close()


def test_reviewer_list_on_desktop_and_phone(
    browser: Any, viewer_service: ViewerService, shots: Path
) -> None:
    for name, viewport in (("1280x800", DESKTOP), ("390x844", PHONE)):
        page = _page(browser, viewport, mobile=viewport is PHONE)
        page.goto(f"{viewer_service.base_url}/viewer/")
        # Not signed in: the sign-in form.
        page.fill("#audit-token", AUDIT_TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_test_id("ecg-table").wait_for()
        rows = page.locator("[data-testid=ecg-table] tbody tr")
        assert rows.count() >= len(viewer_service.ecgs)
        assert _no_horizontal_page_scroll(page)
        page.screenshot(path=str(shots / f"list-{name}.png"), full_page=True)
        # Open an ECG from the list: the reviewer session opens it.
        rows.first.locator("a").first.click()
        page.locator("figure.view-3x4").wait_for()
        assert sorted(set(_visible_leads(page, "3x4"))) == sorted(STANDARD_LEADS)
        page.context.close()


def test_expired_link_page_in_the_browser(
    browser: Any, viewer_service: ViewerService, shots: Path
) -> None:
    ecg_id = viewer_service.ecgs["ptbxl"]
    page = _page(browser, PHONE, mobile=True)
    response = page.goto(f"{viewer_service.base_url}/viewer/ecg/{ecg_id}?token=v1.ecg.1.x")
    assert response is not None and response.status == 403
    assert page.get_by_role("heading", name="This link has expired or is not valid").is_visible()
    assert page.locator("svg.ecg-paper").count() == 0
    page.screenshot(path=str(shots / "denied-390x844.png"))
    page.context.close()


@contextmanager
def _framing_site(target: str) -> Iterator[tuple[str, str]]:
    """Another origin (another port of the same host: the same *site*, so the reviewer's
    ``SameSite=Strict`` cookie goes along) whose page shows ``target`` in a frame."""
    body = f'<!doctype html><title>elsewhere</title><iframe src="{target}"></iframe>'.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield origin, origin + "/"
    finally:
        server.shutdown()
        server.server_close()


def _framed_agree_buttons(browser: Any, viewer_service: ViewerService, page_url: str) -> int:
    page = _page(browser, DESKTOP)
    session = make_token(viewer_service.settings, "list", "*", ttl_s=600)
    page.context.add_cookies(
        [{"name": REVIEWER_COOKIE, "value": session, "url": viewer_service.base_url + "/viewer/"}]
    )
    page.goto(page_url)
    page.wait_for_load_state("load")
    (frame,) = page.main_frame.child_frames
    try:
        return int(frame.locator("[data-testid=agree]").count())
    finally:
        page.context.close()


def test_another_site_cannot_frame_the_ecg_page(
    browser: Any, viewer_service: ViewerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clickjacking: a page elsewhere showing the ECG page in a frame could lay its own bait
    over "Agree with the AI read" and have a signed-in reviewer record feedback unknowingly.
    Only the EHR origins in ``viewer_frame_ancestors`` may frame it."""
    target = f"{viewer_service.base_url}/viewer/ecg/{viewer_service.ecgs['muse']}"
    with _framing_site(target) as (origin, page_url):
        assert _framed_agree_buttons(browser, viewer_service, page_url) == 0
        monkeypatch.setattr(viewer_service.settings, "viewer_frame_ancestors", [origin])
        assert _framed_agree_buttons(browser, viewer_service, page_url) == 1
