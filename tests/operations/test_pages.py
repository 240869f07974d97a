"""The start page, the model card as HTML, local API docs and Prometheus metrics."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cds_service.app import create_app
from cds_service.settings import SandboxSettings, Settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(data_dir=tmp_path, preload_model=False))) as client:
        yield client


def test_start_page_links_every_entry_point(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    for href in ("/docs", "/cds-services", "/model-card", "/viewer/", "/readyz", "/metrics"):
        assert f'href="{href}"' in response.text
    assert "/sandbox/" not in response.text  # off by default
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_start_page_links_the_sandbox_when_on(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, preload_model=False, sandbox=SandboxSettings(enabled=True)
    )
    with TestClient(create_app(settings)) as client:
        assert 'href="/sandbox/"' in client.get("/").text


def test_model_card_is_html_with_its_tables_and_the_markdown_stays_available(
    client: TestClient,
) -> None:
    page = client.get("/model-card")
    assert page.headers["content-type"].startswith("text/html")
    assert "<table>" in page.text and "<h1>Model card" in page.text
    assert "| Part |" not in page.text  # rendered, not raw Markdown
    source = client.get("/model-card.md")
    assert source.headers["content-type"].startswith("text/markdown")
    assert source.text.startswith("# Model card")


def test_model_card_markdown_cannot_inject_html(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cds_service.api import pages

    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# Card\n\n<script>alert(1)</script>\n\n[x](javascript:alert(2))\n")
    monkeypatch.setattr(pages, "MODEL_CARD", card)
    with TestClient(create_app(Settings(data_dir=tmp_path, preload_model=False))) as client:
        html = client.get("/model-card").text
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert 'href="javascript:' not in html  # left as text, never a link


def test_api_docs_load_only_local_assets(client: TestClient) -> None:
    assert client.get("/redoc").status_code == 404  # ReDoc would load its logo from a CDN
    for path in ("/docs",):
        html = client.get(path).text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert urls, path
        assert all(not u.startswith(("http:", "https:", "//")) for u in urls), (path, urls)
        for url in urls:
            assert client.get(url).status_code == 200, url
    assert client.get("/docs-assets/../settings.py").status_code == 404


def _families(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_scrape_as_prometheus_text(client: TestClient) -> None:
    client.get("/healthz")
    client.get("/ecgs/not-an-id")  # 401 without a token: counted by route template, status
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    families = _families(response.text)  # the parser raises on anything malformed
    for name in (
        "http_requests",
        "http_request_duration_seconds",
        "ecg_cds_jobs",
        "ecg_cds_classification_seconds",
        "ecg_cds_audit_append_seconds",
        "ecg_cds_model_info",
    ):
        assert name in families, name
    requests = [s for s in families["http_requests"].samples if s.name == "http_requests_total"]  # type: ignore[attr-defined]
    handlers = {(s.labels["handler"], s.labels["status"]) for s in requests}
    assert ("/healthz", "200") in handlers
    assert any(h == "/ecgs/{ecg_id}" for h, _ in handlers)  # never the id itself
    jobs = {(s.labels["kind"], s.labels["state"]) for s in families["ecg_cds_jobs"].samples}  # type: ignore[attr-defined]
    assert ("classify", "queued") in jobs and ("annotate", "failed") in jobs
