"""The service as an attacker meets it: a real ``uvicorn`` process on loopback.

The process is the web process whose memory the bomb tests measure (``VmHWM`` from
``/proc``, its peak reset before each attack), configured as an operator would: one trusted
EHR (a JWKS file), a hashed audit token (``sha256:``, as ``deploy/ecg-cds.example.yaml``
recommends), an ingest token, nothing else trusted. The in-process ``ehr`` fixtures of
``tests/service`` are reused for attacks that need the full hook pipeline.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import free_port
from tests.service import conftest as _service
from tests.service.ehr import EhrKey, jwks, sandbox_claims

AUDIT_SECRET = "audit-secret-for-the-security-tests-0123456789"
AUDIT_HASH = "sha256:" + hashlib.sha256(AUDIT_SECRET.encode()).hexdigest()
INGEST_TOKEN = "ingest-token-for-the-security-tests-0123456789"
ISS = "https://ehr.security.test"
MB = 1024 * 1024

# The in-process service fixtures of tests/service, for attacks on the whole hook pipeline.
BASE, SANDBOX_ISS, Ehr = _service.BASE, _service.SANDBOX_ISS, _service.Ehr
model_dir = _service.model_dir
sandbox_key = _service.sandbox_key
epic_key = _service.epic_key
jwks_server = _service.jwks_server
jwks_url = _service.jwks_url
epic_jwks_file = _service.epic_jwks_file
service_client = _service.service_client
ehr = _service.ehr
dicom_bytes = _service.dicom_bytes
ptbxl_observation = _service.ptbxl_observation


@dataclass
class LiveService:
    """The running service process and how to call it."""

    base_url: str
    process: subprocess.Popen[bytes]
    key: EhrKey
    data_dir: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def token(self, path: str, **claims: Any) -> str:
        return self.key.sign(sandbox_claims(ISS, self.base_url + path, **claims))

    def hook(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token(path)}", **kwargs.pop("headers", {})}
        return httpx.post(self.base_url + path, json=body, headers=headers, timeout=120, **kwargs)

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        """A client connecting from ``source`` (any 127.x address is loopback): each
        throttling test is its own source, so tests never throttle each other."""
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=self.base_url, transport=transport, timeout=60)

    def upload(self, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {INGEST_TOKEN}", **kwargs.pop("headers", {})}
        return httpx.post(f"{self.base_url}/ecgs", headers=headers, timeout=120, **kwargs)


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing from /proc/{pid}/status")


def peak_growth_mb(pid: int, attack: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``attack``; how far the process's peak resident memory rose above where it was
    (MB), and what the attack returned. The kernel's peak (``VmHWM``) is reset first
    (``clear_refs`` 5); where that is not allowed, ``VmRSS`` is sampled every 2 ms instead."""
    before = rss_kb(pid, "VmRSS")
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return _sampled_growth_mb(pid, before, attack)
    result = attack()
    peak = rss_kb(pid, "VmHWM")
    return max(0, peak - before) / 1024, result


def _sampled_growth_mb(pid: int, before: int, attack: Callable[[], Any]) -> tuple[float, Any]:
    import threading

    peak, done = before, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kb(pid, "VmRSS"))
            done.wait(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = attack()
    finally:
        done.set()
        sampler.join()
    return max(0, peak - before) / 1024, result


def start_service(
    folder: Path, model_dir: Path, **settings: str
) -> tuple[str, subprocess.Popen[bytes], EhrKey, Any]:
    """Start ``uvicorn`` on a free loopback port with the operator-style settings above
    (plus ``settings``, as ``ECG_CDS_*`` variables); wait until it answers."""
    key = EhrKey.generate("ES384")
    jwks_file = folder / "ehr-jwks.json"
    jwks_file.write_text(json.dumps(jwks(key)), encoding="utf-8")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "ECG_CDS_DATA_DIR": str(folder / "var"),
        "ECG_CDS_MODEL_DIR": str(model_dir),
        "ECG_CDS_PUBLIC_BASE_URL": base,
        "ECG_CDS_PRELOAD_MODEL": "false",
        "ECG_CDS_AUTH__TRUSTED_ISSUERS": json.dumps([{"iss": ISS, "jwks_file": str(jwks_file)}]),
        "ECG_CDS_AUTH__AUDIT_TOKENS": json.dumps([AUDIT_HASH]),
        "ECG_CDS_AUTH__INGEST_TOKENS": json.dumps([INGEST_TOKEN]),
        "ECG_CDS_JOBS__HOOK_WAIT_BUDGET_S": "0.2",
        **{f"ECG_CDS_{name.upper()}": value for name, value in settings.items()},
    }
    env.pop("ECG_CDS_SETTINGS_FILE", None)
    log = (folder / "service.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "cds_service.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-proxy-headers",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code < 500:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            log.close()
            output = (folder / "service.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"the service did not start:\n{output}")
        time.sleep(0.2)
    return base, process, key, log


def stop_service(process: subprocess.Popen[bytes], log: Any) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[LiveService]:
    folder = tmp_path_factory.mktemp("security")
    base, process, key, log = start_service(folder, model_dir)
    try:
        yield LiveService(base, process, key, folder / "var")
    finally:
        stop_service(process, log)
