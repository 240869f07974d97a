"""Finding 9, the audit side: a burst of refusals is one full entry plus one counted entry
per source and window, nothing is lost at shutdown, and memory stays bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from cds_service.auth.throttle import MAX_SOURCES, FailureGate


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _gate(clock: _Clock, written: list[tuple[str | None, dict[str, Any]]]) -> FailureGate:
    return FailureGate(
        window_s=60,
        max_failures=20,
        max_login_failures=5,
        record=lambda source, detail: written.append((source, detail)),
        clock=clock,
    )


def test_a_burst_is_one_full_entry_then_one_count_per_window() -> None:
    clock, full = _Clock(), []
    written: list[tuple[str | None, dict[str, Any]]] = []
    gate = _gate(clock, written)
    for i in range(500):
        gate.refused(
            "10.0.0.9",
            family="bearer",
            reason="bad signature" if i % 2 else "no bearer token",
            endpoint="/cds-services",
            audit_in_full=lambda: full.append(1),
        )
        clock.now += 0.01
    assert len(full) == 1 and written == []
    assert gate.retry_after("10.0.0.9") is not None  # over 20 in the window: throttled
    assert gate.retry_after("10.0.0.9", family="login") is None  # its own window
    assert gate.retry_after("10.0.0.10") is None
    clock.now += 61
    assert gate.retry_after("10.0.0.9") is None  # the window is over
    gate.refused("10.0.0.11", family="bearer", reason="x", endpoint="/audit",
                 audit_in_full=lambda: full.append(1))  # fmt: skip
    [(source, detail)] = written  # the closed window, written by the next event
    assert source == "10.0.0.9"
    assert detail["aggregated"] is True and detail["refused"] == 499
    assert detail["throttled"] == 1
    assert detail["reasons"] == {"bad signature": 250, "no bearer token": 249}
    assert detail["endpoints"] == {"/cds-services": 499}


def test_tracked_sources_are_bounded() -> None:
    clock = _Clock()
    written: list[tuple[str | None, dict[str, Any]]] = []
    gate = _gate(clock, written)
    for i in range(MAX_SOURCES + 50):
        for _ in range(2):
            gate.refused(f"s{i}", family="bearer", reason="r", endpoint="/e",
                         audit_in_full=lambda: None)  # fmt: skip
    assert len(written) == 50  # the oldest windows were closed (and audited) early


def test_counts_still_open_at_shutdown_are_audited(tmp_path: Path) -> None:
    from cds_service.app import create_app
    from cds_service.audit import AuditFilter
    from cds_service.runtime import Runtime
    from cds_service.settings import Settings

    settings = Settings(data_dir=tmp_path, preload_model=False)
    with TestClient(create_app(settings)) as client:
        for i in range(30):
            client.get("/cds-services", headers={"Authorization": f"Bearer junk{i}"})
    runtime = Runtime.start(settings, resume=False)
    try:
        page = runtime.audit.query(AuditFilter(events=("auth-failure",)), limit=10)
    finally:
        runtime.stop()
    assert page.total == 2
    aggregated = [e for e in page.entries if e.detail.get("aggregated")]
    assert len(aggregated) == 1
    assert aggregated[0].detail["refused"] + aggregated[0].detail["throttled"] == 29


def test_one_ipv6_network_is_one_source(tmp_path: Path) -> None:
    """Behind a trusted proxy, an IPv6 client holds a whole /64 (its ISP's assignment): a
    new address per request opened a new window each time, so every refused token was an
    audit row of its own (rows are never removed) and none was ever answered 429. Windows
    are now per /64; served by uvicorn with the proxy headers ``ecg-cds serve`` configures
    for ``trusted_proxies``."""
    import threading
    import time

    import httpx
    import uvicorn

    from cds_service.app import create_app
    from cds_service.audit import AuditFilter
    from cds_service.settings import Settings
    from tests.servers import free_port

    port = free_port()
    settings = Settings(data_dir=tmp_path, preload_model=False, trusted_proxies=["127.0.0.1"])
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            proxy_headers=True, forwarded_allow_ips=["127.0.0.1"])  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        statuses = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for i in range(60):
                headers = {"Authorization": f"Bearer junk{i}",
                           "X-Forwarded-For": f"2001:db8:7:9::{i + 1:x}"}  # fmt: skip
                statuses.append(client.get("/cds-services", headers=headers).status_code)
        trail = app.state.runtime.audit
        page = trail.query(AuditFilter(events=("auth-failure",)), limit=100)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}
    assert page.total == 1  # the first, in full; the rest are counted when the window closes
