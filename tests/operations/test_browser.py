"""In a real headless Chromium with the network blocked: the sandbox page and the API docs.

Every request the page makes to anything but the service under test is aborted and
recorded; the tests assert there were none, so the pages work with no internet at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.operations.sandbox_service import SandboxService, sandbox_service  # noqa: F401
from tests.viewer.conftest import browser, chromium  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def offline_page(
    browser: Any,  # noqa: F811
    sandbox_service: SandboxService,  # noqa: F811
) -> Iterator[tuple[Any, list[str]]]:
    """A page whose every request off the service's own origin is blocked and recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    blocked: list[str] = []
    origin = sandbox_service.base_url

    def route(route: Any) -> None:
        if route.request.url.startswith(origin + "/"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", route)
    page = context.new_page()
    try:
        yield page, blocked
    finally:
        context.close()


def test_api_docs_render_without_the_network(
    offline_page: tuple[Any, list[str]],
    sandbox_service: SandboxService,  # noqa: F811
    artifacts_dir: Path,
) -> None:
    page, blocked = offline_page
    page.goto(f"{sandbox_service.base_url}/docs")
    page.wait_for_selector(".opblock", timeout=30_000)  # Swagger UI drew the operations
    assert page.locator(".opblock").count() > 10
    assert "ECG CDS" in page.locator(".title").first.inner_text()
    page.screenshot(path=str(artifacts_dir / "api-docs.png"))
    assert blocked == []


def test_sandbox_sends_a_call_renders_the_cards_and_sends_feedback(
    offline_page: tuple[Any, list[str]],
    sandbox_service: SandboxService,  # noqa: F811
    artifacts_dir: Path,
) -> None:
    page, blocked = offline_page
    page.goto(f"{sandbox_service.base_url}/sandbox/")
    ecg_id = sandbox_service.ecgs["qt"]
    page.select_option("#ecg_id", ecg_id)
    page.select_option("#hook", "order-select")
    page.click("#send")
    card = page.locator("article.card").first
    card.wait_for(timeout=120_000)
    assert card.get_attribute("data-indicator") in ("warning", "critical")
    assert "sotalol" in card.locator(".card-summary").inner_text()
    assert card.locator(".card-detail strong").count() >= 1  # Markdown rendered, as HTML
    assert "**" not in card.locator(".card-detail").inner_text()
    assert card.locator(".card-source a").count() == 1
    assert "HTTP 200" in page.locator("#status").inner_text()
    page.screenshot(path=str(artifacts_dir / "sandbox-order-select.png"), full_page=True)

    card_uuid = card.get_attribute("data-card")
    card.locator("button.suggestion").first.click()
    result = card.locator(".feedback-result")
    result.filter(has_text="Feedback sent (accepted)").wait_for(timeout=30_000)
    reasons = card.locator(".card-dismiss select option")
    assert reasons.count() >= 2  # "without a reason" + the card's overrideReasons
    card.locator(".card-dismiss select").select_option(index=1)
    card.locator("button.dismiss").click()
    result.filter(has_text="Feedback sent (overridden)").wait_for(timeout=30_000)
    assert _stored_outcomes(sandbox_service, card_uuid) == ["accepted", "overridden"]
    assert blocked == []


def _stored_outcomes(service: SandboxService, card_uuid: str | None) -> list[str]:
    from sqlalchemy import select

    from cds_service.storage.tables import FeedbackRow

    with service.runtime.session_factory() as session:
        rows = session.scalars(
            select(FeedbackRow).where(FeedbackRow.card_uuid == card_uuid).order_by(FeedbackRow.id)
        ).all()
        return [row.outcome for row in rows]


def test_sandbox_fhir_server_mode_and_an_uploaded_file(
    offline_page: tuple[Any, list[str]],
    sandbox_service: SandboxService,  # noqa: F811
    formats_dir: Path,
) -> None:
    page, blocked = offline_page
    page.goto(f"{sandbox_service.base_url}/sandbox/")
    page.set_input_files("#upload", str(formats_dir / "hl7_aecg" / "Example_aECG_HL7_2003-12.xml"))
    page.check("input[name=mode][value=fhir-server]")
    page.click("#send")
    page.locator("article.card").first.wait_for(timeout=120_000)
    request = page.locator("#request-json").text_content() or ""
    assert '"fhirServer"' in request and '"prefetch"' not in request
    assert blocked == []
