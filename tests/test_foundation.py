"""The installable project: CLI entry point and configuration."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cds_service.settings import Settings

SUBCOMMANDS = ["serve", "worker", "classify", "train", "evaluate", "audit", "convert", "inspect"]


def test_cli_help_lists_every_subcommand() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "--help"],
        capture_output=True, text=True, check=True, env={"COLUMNS": "200", "PATH": ""},
    ).stdout  # fmt: skip
    for name in SUBCOMMANDS:
        assert f" {name} " in out, f"{name} missing from --help"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECG_CDS_JOBS__MODE", "distributed")
    monkeypatch.setenv("ECG_CDS_AUTH__CLOCK_SKEW_S", "5")
    settings = Settings()
    assert settings.jobs.mode == "distributed"
    assert settings.auth.clock_skew_s == 5


def test_settings_from_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(
        "auth:\n  trusted_issuers:\n    - iss: https://ehr.example.org\n"
        "      jwks_urls: [https://ehr.example.org/jwks]\n"
    )
    monkeypatch.setenv("ECG_CDS_SETTINGS_FILE", str(config))
    settings = Settings()
    assert settings.auth.trusted_issuers[0].iss == "https://ehr.example.org"
    # the environment overrides the file
    monkeypatch.setenv("ECG_CDS_AUTH__MAX_TOKEN_LIFETIME_S", "900")
    assert Settings().auth.max_token_lifetime_s == 900


def test_data_fixture_points_at_real_data(data_dir) -> None:
    assert (data_dir / "ptbxl" / "ptbxl_database.csv").is_file()


def test_service_answers_at_once_and_preloads_the_model(tmp_path) -> None:
    import time

    from fastapi.testclient import TestClient

    from cds_service.app import create_app

    app = create_app(Settings(data_dir=tmp_path, preload_model=True))
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        runtime = app.state.runtime
        deadline = time.monotonic() + 120  # a bound against hanging, not a speed check
        while runtime._classifier is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runtime._classifier is not None
        assert runtime.model_version.startswith("ecg-clip")


def test_model_card_is_served(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from cds_service.app import create_app

    with TestClient(create_app(Settings(data_dir=tmp_path))) as client:
        response = client.get("/model-card")
    assert response.status_code == 200
    assert "PTB-XL" in response.text
