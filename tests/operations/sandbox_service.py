"""A real service with the sandbox on, on a free loopback port, with two ECGs classified."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port


@dataclass
class SandboxService:
    base_url: str
    settings: Any
    runtime: Any
    #: "qt" (PTB-XL 00320, long QTc), "dicom" (the pydicom sample)
    ecgs: dict[str, str]


@pytest.fixture(scope="module")
def sandbox_service(
    tmp_path_factory: pytest.TempPathFactory, ptbxl_dir: Path, formats_dir: Path
) -> Iterator[SandboxService]:
    import uvicorn

    from cds_service.app import create_app
    from cds_service.settings import SandboxSettings, Settings

    port = free_port()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("sandbox-data"),
        public_base_url=f"http://127.0.0.1:{port}",
        sandbox=SandboxSettings(enabled=True),
    )
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="sandbox-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the sandbox test server did not start")
        time.sleep(0.05)
    runtime = app.state.runtime
    paths = {
        "qt": ptbxl_dir / "records500" / "00000" / "00320_hr.hea",
        "dicom": formats_dir / "dicom" / "pydicom_waveform_ecg.dcm",
    }
    ecgs = {name: runtime.ecgs.accept_path(path).id for name, path in paths.items()}
    for ecg_id in ecgs.values():
        runtime.jobs.submit(ecg_id)
    results = runtime.jobs.wait(list(ecgs.values()), timeout_s=240)
    if any(results.get(i) is None for i in ecgs.values()):
        pytest.fail("the model stored no result within 240 s")
    try:
        yield SandboxService(f"http://127.0.0.1:{port}", app.state.settings, runtime, ecgs)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
