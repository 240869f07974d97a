"""Viewer fixtures: a real service on loopback with real ECGs classified, and a real Chromium.

The service runs the app as deployed (uvicorn, the real runtime, SQLite, embedded jobs) with
the shipped model, with a few catalog labels to keep text encoding quick. The viewer shows
whatever the model stored: the tests compare the page with the stored result, never with
fixed numbers.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import service_unavailable

if TYPE_CHECKING:
    from cds_service.runtime import Runtime
    from cds_service.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
AUDIT_TOKEN = "viewer-test-audit-token-5d1c"
PATIENT = "Patient/viewer-test-7"


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, installed with apt-get when missing (a fresh CI machine)."""
    if not CHROMIUM.is_file():
        apt = shutil.which("apt-get") or ""
        if not apt or os.geteuid() != 0:
            service_unavailable("chromium is not installed and apt-get (as root) is unavailable")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in ([apt, "update"], [apt, "install", "-y", "chromium"]):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                service_unavailable(
                    f"could not install chromium ({' '.join(command[1:])}): {done.stderr[-500:]}"
                )
    if not CHROMIUM.is_file():
        service_unavailable("chromium is still missing after apt-get install")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Any]:
    """A headless Chromium driven by Playwright (never ``playwright install``).

    Module scope: Playwright's sync API keeps an event loop running in the main thread
    while it is open, which would break later tests that call ``asyncio.run``.
    """
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        try:
            instance = playwright.chromium.launch(
                executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
            )
        except PlaywrightError as exc:
            service_unavailable(f"chromium does not start: {exc}")
        yield instance
        instance.close()


@pytest.fixture(scope="session")
def classifier() -> Any:
    """The shipped model (a few of its labels)."""
    from models import LabelCatalog, ZeroShotClassifier, load_catalog

    shipped = load_catalog()
    catalog = LabelCatalog(
        [
            shipped.get(i)
            for i in ("sinus_rhythm", "normal_ecg", "atrial_fibrillation", "myocardial_infarction")
        ]
    )
    return ZeroShotClassifier.from_pretrained(catalog=catalog)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ViewerService:
    base_url: str
    settings: Settings
    runtime: Runtime
    #: name -> stored ECG id: "ptbxl" (PTB-XL 00001, 500 Hz), "muse" (GE MUSE XML),
    #: "ptb" (PTB diagnostic s0010, 1 kHz, 38 s, 15 leads)
    ecgs: dict[str, str]


@pytest.fixture(scope="session")
def viewer_service(
    tmp_path_factory: pytest.TempPathFactory,
    classifier: Any,
    ptbxl_dir: Path,
    formats_dir: Path,
) -> Iterator[ViewerService]:
    import uvicorn

    from cds_service.app import create_app
    from cds_service.runtime import Runtime
    from cds_service.settings import AuthSettings, Settings

    port = _free_port()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("viewer-data"),
        public_base_url=f"http://127.0.0.1:{port}",
        auth=AuthSettings(audit_tokens=[AUDIT_TOKEN]),
    )
    app = create_app(settings)
    # The runtime is started here rather than by the app's lifespan so that it can share the
    # session's already-loaded model.
    runtime = Runtime.start(settings, classifier=classifier, resume=False)
    app.state.runtime = runtime
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="viewer-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the viewer test server did not start")
        time.sleep(0.05)

    paths = {
        "ptbxl": ptbxl_dir / "records500" / "00000" / "00001_hr.hea",
        "muse": formats_dir / "ge_muse_xml" / "muse-sinus.xml",
        "ptb": formats_dir / "wfdb" / "s0010_re.hea",
    }
    ecgs = {
        name: runtime.ecgs.accept_path(path, patient_ref=PATIENT).id for name, path in paths.items()
    }
    for ecg_id in ecgs.values():
        runtime.jobs.submit(ecg_id)
    results = runtime.jobs.wait(list(ecgs.values()), timeout_s=240)
    missing = [name for name, ecg_id in ecgs.items() if results.get(ecg_id) is None]
    if missing:
        pytest.fail(f"the model stored no result for {missing} within 240 s")
    try:
        yield ViewerService(
            base_url=settings.public_base_url, settings=settings, runtime=runtime, ecgs=ecgs
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        runtime.stop()
