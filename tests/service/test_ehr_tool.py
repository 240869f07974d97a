"""`ecg-cds ehr` against a real HTTP server, trusted the way the README says."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cds_service.cli import app as cli
from tests.conftest import service_unavailable
from tests.servers import free_port

ISS = "urn:ecg-cds:test-dev-ehr"


def _trusted_from_print_settings(key_dir: Path) -> list[dict[str, Any]]:
    result = CliRunner().invoke(
        cli, ["ehr", "--print-settings", "--key-dir", str(key_dir), "--iss", ISS]
    )
    assert result.exit_code == 0, result.output
    [line] = [ln for ln in result.output.splitlines() if ln.startswith("export ")]
    value = line.split("=", 1)[1].strip("'")
    return list(json.loads(value))


@pytest.fixture(scope="module")
def live_service(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path
) -> Iterator[tuple[str, Path]]:
    import uvicorn

    from cds_service.app import create_app
    from cds_service.settings import Settings

    key_dir = tmp_path_factory.mktemp("ehr-keys")
    trusted = _trusted_from_print_settings(key_dir)
    port = free_port()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("ehr-service"),
        model_dir=model_dir,
        public_base_url=f"http://127.0.0.1:{port}",
        auth={"trusted_issuers": trusted},
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield base, key_dir
    server.should_exit = True
    thread.join(timeout=30)


@pytest.mark.slow
def test_ehr_tool_sends_patient_view_and_prints_cards(
    live_service: tuple[str, Path], formats_dir: Path
) -> None:
    base, key_dir = live_service
    ecg = formats_dir / "dicom" / "pydicom_waveform_ecg.dcm"
    args = ["ehr", str(ecg), "--url", base, "--key-dir", str(key_dir), "--iss", ISS]
    result = CliRunner().invoke(cli, [*args, "--json", "--wait", "120"])
    assert result.exit_code == 0, result.output
    cards = json.loads(result.output)["cards"]
    assert len(cards) == 1
    assert cards[0]["summary"].startswith("AI ECG")
    # The pretty form prints the same card (now cached).
    pretty = CliRunner().invoke(cli, args)
    assert pretty.exit_code == 0, pretty.output
    assert "AI ECG" in pretty.output and "Suggestion" in pretty.output
    # the link's URL itself, on one line a terminal can follow or copy (issue 12)
    assert f"View the ECG tracing: {base}/viewer/ecg/" in pretty.output


@pytest.mark.slow
def test_ehr_tool_with_an_untrusted_key_is_refused(
    live_service: tuple[str, Path], formats_dir: Path, tmp_path: Path
) -> None:
    base, _ = live_service
    ecg = formats_dir / "dicom" / "pydicom_waveform_ecg.dcm"
    result = CliRunner().invoke(
        cli, ["ehr", str(ecg), "--url", base, "--key-dir", str(tmp_path / "other"), "--iss", ISS]
    )
    assert result.exit_code == 1
    assert "--print-settings" in result.output


def test_ehr_tool_keys_are_private_and_stable(tmp_path: Path) -> None:
    first = _trusted_from_print_settings(tmp_path)
    second = _trusted_from_print_settings(tmp_path)
    assert first == second
    private = next(tmp_path.glob("private_key_*.pem"))
    assert private.stat().st_mode & 0o077 == 0
    jwks = json.loads(Path(first[0]["jwks_file"]).read_text())
    assert [k["kty"] for k in jwks["keys"]] == ["EC"]
    assert all("d" not in k for k in jwks["keys"])  # public keys only


def test_redis_replay_cache_rejects_a_second_use(tmp_path: Path) -> None:
    """Distributed mode shares the jti cache through Redis (SET NX with expiry)."""
    import asyncio

    from cds_service.auth.replay import RedisReplayCache

    binary = shutil.which("redis-server")
    if binary is None:
        service_unavailable("redis-server is not installed")
    assert binary is not None
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)

        async def run() -> list[bool]:
            cache = RedisReplayCache(f"redis://127.0.0.1:{port}/0")
            expiry = time.time() + 60
            return [
                await cache.first_use("iss\x00jti-1", expiry),
                await cache.first_use("iss\x00jti-1", expiry),
                await cache.first_use("iss\x00jti-2", expiry),
            ]

        assert asyncio.run(run()) == [True, False, True]
    finally:
        process.terminate()
        process.wait(timeout=10)
