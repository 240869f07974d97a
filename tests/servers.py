"""Real servers on loopback for integration tests: a FHIR R4 server and an Orthanc PACS.

Both are session-scoped and started by the fixture itself, so ``make test`` on a fresh
machine needs nothing running beforehand:

* ``fhir_server`` — ``sekmet-fhir`` (R4, SQLite) from the test extras, on a free port.
* ``orthanc`` — Debian's ``orthanc`` + ``orthanc-dicomweb``; installed with apt by the
  fixture when ``/usr/sbin/Orthanc`` is missing, run with a private config (no remote
  access, no DICOM port, temp storage) and stopped by its PID.

When a server cannot start, the fixture calls :func:`tests.conftest.service_unavailable`
(skip locally, fail in CI). Registered for every test through ``pytest_plugins`` in
``tests/conftest.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import service_unavailable

ORTHANC_BINARY = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> str | None:
    """Poll ``url`` until it answers 200; return an error text, or None when ready."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"exited with code {process.returncode}"
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return None
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    return f"not ready after {timeout_s:.0f} s ({last})"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-n:]
    except OSError:
        return ""


@dataclass(frozen=True)
class FhirServer:
    """A running FHIR R4 server: ``base_url`` ends in ``/fhir`` (no trailing slash)."""

    base_url: str
    port: int


@dataclass(frozen=True)
class OrthancServer:
    """A running Orthanc: REST at ``base_url``, DICOMweb at ``dicomweb_url``."""

    base_url: str
    dicomweb_url: str
    port: int


def _sekmet_binary() -> Path | None:
    candidate = Path(sys.executable).parent / "sekmet"
    if candidate.is_file():
        return candidate
    found = shutil.which("sekmet")
    return Path(found) if found else None


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    """A fresh sekmet-fhir R4 server on loopback, empty, for the whole test session."""
    binary = _sekmet_binary()
    if binary is None:
        service_unavailable("sekmet-fhir is not installed (pip install -e '.[test]')")
    assert binary is not None
    workdir = tmp_path_factory.mktemp("sekmet")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/fhir"
    env = {
        **os.environ,
        "SEKMET_DB": str(workdir / "fhir.db"),
        "SEKMET_BASE_URL": base_url,
    }
    log_path = workdir / "sekmet.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            # Always pass --host: sekmet defaults to 0.0.0.0.
            [str(binary), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,  # it looks for ./settings.yaml; keep it out of the repo
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        problem = _wait_http(f"{base_url}/metadata", process, START_TIMEOUT_S)
        if problem:
            service_unavailable(f"sekmet-fhir did not start: {problem}\n{_tail(log_path)}")
        yield FhirServer(base_url=base_url, port=port)
    finally:
        _stop(process)


def _install_orthanc() -> str | None:
    """apt-get install orthanc + orthanc-dicomweb; return an error text or None."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "Orthanc is missing and cannot be installed here (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "orthanc", "orthanc-dicomweb"],
    ):
        result = subprocess.run(command, env=env, capture_output=True, timeout=600, check=False)
        if result.returncode != 0:
            return f"{' '.join(command)} failed: {result.stderr.decode(errors='replace')[-800:]}"
    # Debian's package starts a system-wide Orthanc when policy-rc.d allows it; ours is
    # private, so that one is not needed (left alone: we did not start it ourselves).
    return None


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A private Orthanc with the DICOMweb plugin on a free loopback port."""
    if not ORTHANC_BINARY.is_file() or not DICOMWEB_PLUGIN.is_file():
        problem = _install_orthanc()
        if problem:
            service_unavailable(problem)
    if not ORTHANC_BINARY.is_file() or not DICOMWEB_PLUGIN.is_file():
        service_unavailable("Orthanc or its DICOMweb plugin is still missing after install")
    workdir = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {
        "Name": "ecg-cds-test",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "storage"),
        "HttpPort": port,
        # Orthanc has no bind option and listens on all interfaces: refuse remote clients.
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "HttpServerEnabled": True,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        "StableAge": 1,
    }
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    log_path = workdir / "orthanc.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(ORTHANC_BINARY), str(config_path)],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        problem = _wait_http(f"{base_url}/system", process, START_TIMEOUT_S)
        if problem:
            service_unavailable(f"Orthanc did not start: {problem}\n{_tail(log_path)}")
        yield OrthancServer(base_url=base_url, dicomweb_url=f"{base_url}/dicom-web", port=port)
    finally:
        _stop(process)
