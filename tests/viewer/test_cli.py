"""`ecg-cds viewer-link` prints links the service accepts (same secret, same binding)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cds_service.settings import Settings
from cds_service.viewer.links import verify_link_token, verify_list_token


def _run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ECG_CDS_DATA_DIR": str(data_dir),
        "ECG_CDS_PUBLIC_BASE_URL": "https://cds.example.org",
    }
    env.pop("ECG_CDS_LINK_SECRET", None)
    return subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "viewer-link", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _store_one(data_dir: Path, ecg_file: Path) -> str:
    from cds_service.runtime import Runtime

    runtime = Runtime.start(Settings(data_dir=data_dir), resume=False)
    try:
        return runtime.ecgs.accept_path(ecg_file).id
    finally:
        runtime.stop()


def test_printed_links_open_with_the_services_secret(tmp_path: Path, formats_dir: Path) -> None:
    ecg_id = _store_one(tmp_path, formats_dir / "dicom" / "pydicom_waveform_ecg.dcm")
    ecg = _run(tmp_path, ecg_id, "--ttl", "120")
    assert ecg.returncode == 0, ecg.stderr
    url = urlsplit(ecg.stdout.strip())
    assert (url.scheme, url.netloc) == ("https", "cds.example.org")
    token = parse_qs(url.query)["token"][0]
    # The service, started later on the same data_dir, reads the secret the CLI generated.
    service = Settings(data_dir=tmp_path)
    assert verify_link_token(service, ecg_id, token)
    reviewer = _run(tmp_path, "--reviewer")
    assert reviewer.returncode == 0, reviewer.stderr
    assert verify_list_token(service, parse_qs(urlsplit(reviewer.stdout.strip()).query)["token"][0])


def test_bad_arguments_exit_2_with_a_message(tmp_path: Path) -> None:
    for args in ((), ("some-id", "--reviewer"), ("some-id", "--ttl", "0")):
        done = _run(tmp_path, *args)
        assert done.returncode == 2 and done.stderr.strip(), args


def test_an_id_that_is_not_stored_gets_no_link(tmp_path: Path) -> None:
    done = _run(tmp_path, "not-an-id")  # issue 12: this used to print a signed link, exit 0
    assert done.returncode == 2 and done.stdout == ""
    assert "no stored ECG has id 'not-an-id'" in done.stderr
