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


def test_printed_links_open_with_the_services_secret(tmp_path: Path) -> None:
    ecg = _run(tmp_path, "0b7e1c9a-0000-4000-8000-000000000001", "--ttl", "120")
    assert ecg.returncode == 0, ecg.stderr
    url = urlsplit(ecg.stdout.strip())
    assert (url.scheme, url.netloc) == ("https", "cds.example.org")
    token = parse_qs(url.query)["token"][0]
    # The service, started later on the same data_dir, reads the secret the CLI generated.
    service = Settings(data_dir=tmp_path)
    assert verify_link_token(service, "0b7e1c9a-0000-4000-8000-000000000001", token)
    reviewer = _run(tmp_path, "--reviewer")
    assert reviewer.returncode == 0, reviewer.stderr
    assert verify_list_token(service, parse_qs(urlsplit(reviewer.stdout.strip()).query)["token"][0])


def test_bad_arguments_exit_2_with_a_message(tmp_path: Path) -> None:
    for args in ((), ("some-id", "--reviewer"), ("some-id", "--ttl", "0")):
        done = _run(tmp_path, *args)
        assert done.returncode == 2 and done.stderr.strip(), args
