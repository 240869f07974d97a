"""The README's "Try it" on another port: `serve --port` (what `PORT=... make run` runs), the
dev EHR's call, and the card's viewer and model-card links, all through the real CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.operations.conftest import clean_env
from tests.servers import free_port

pytestmark = [pytest.mark.slow]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cds_service.cli", *args],
        env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_try_it_on_another_port_prints_a_card_with_working_links(
    tmp_path: Path, formats_dir: Path, ptbxl_dir: Path
) -> None:
    env = clean_env(tmp_path)
    printed = _cli("ehr", "--print-settings", env=env).stdout
    trust = re.search(r"ECG_CDS_AUTH__TRUSTED_ISSUERS='(.+)'", printed)
    assert trust is not None, printed
    env["ECG_CDS_AUTH__TRUSTED_ISSUERS"] = trust.group(1)
    port = free_port()  # not 8080: the links must follow the port
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "cds_service.cli", "serve", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert server.poll() is None, (tmp_path / "serve.log").read_text()
        view = _cli(
            "ehr", "--url", base, str(formats_dir / "dicom/pydicom_waveform_ecg.dcm"), env=env
        )
        assert view.returncode == 0, view.stderr
        link = re.search(rf"View the ECG tracing: ({re.escape(base)}/viewer/ecg/\S+)", view.stdout)
        assert link is not None, view.stdout
        page = httpx.get(link.group(1), timeout=30)
        assert page.status_code == 200 and "<svg" in page.text
        assert f"{base}/model-card" in view.stdout
        assert httpx.get(f"{base}/model-card", timeout=30).status_code == 200

        order = _cli(
            "ehr", "--url", base, str(ptbxl_dir / "records500/00000/00320_hr.hea"),
            "--drug", "sotalol 80 mg", "--json", env=env,
        )  # fmt: skip
        assert order.returncode == 0, order.stderr
        cards = json.loads(order.stdout)["cards"]
        assert cards and "sotalol" in cards[0]["summary"]  # the README's order-select card
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
