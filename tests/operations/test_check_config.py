"""``ecg-cds check-config``: every misconfiguration the issue lists, one line each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.operations.conftest import CliRun, clean_env


def _problems(cli: CliRun, tmp_path: Path, **env: str) -> tuple[int, list[str]]:
    result = cli("check-config", "--no-model", env=clean_env(tmp_path, **env))
    assert "Traceback" not in result.stderr
    return result.returncode, result.stderr.strip().splitlines()


def test_a_clean_default_configuration_passes(cli: CliRun, tmp_path: Path) -> None:
    result = cli("check-config", env=clean_env(tmp_path))  # loads the model too
    assert result.returncode == 0, result.stderr
    assert "Configuration OK" in result.stdout
    assert "auth.trusted_issuers: no EHR is trusted" in result.stdout  # a warning only


def test_each_misconfiguration_is_one_line_naming_the_setting(cli: CliRun, tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]}))
    cases = {
        "ECG_CDS_AUTH__TRUSTED_ISSUERS: not valid JSON": {
            "ECG_CDS_AUTH__TRUSTED_ISSUERS": "[{iss: 1}"
        },
        f"ECG_CDS_SETTINGS_FILE={tmp_path}/none.yaml: no such file": {
            "ECG_CDS_SETTINGS_FILE": str(tmp_path / "none.yaml")
        },
        "jobs.mode: Input should be 'embedded' or 'distributed' (got 'banana')": {
            "ECG_CDS_JOBS__MODE": "banana"
        },
        f"auth.trusted_issuers[0].jwks_file: {tmp_path}/missing.json does not exist": {
            "ECG_CDS_AUTH__TRUSTED_ISSUERS": json.dumps(
                [{"iss": "https://ehr.example", "jwks_file": str(tmp_path / "missing.json")}]
            )
        },
        "auth.trusted_issuers[0].jwks_file: " + f"{jwks} holds no usable signing key": {
            "ECG_CDS_AUTH__TRUSTED_ISSUERS": json.dumps(
                [{"iss": "https://ehr.example", "jwks_file": str(jwks)}]
            )
        },
        "auth.trusted_issuers[0]: has neither jwks_urls nor jwks_file": {
            "ECG_CDS_AUTH__TRUSTED_ISSUERS": json.dumps([{"iss": "https://ehr.example"}])
        },
        "fhir.allowed_servers[0]: 'ftp://fhir.example' is not an absolute http(s) URL": {
            "ECG_CDS_FHIR__ALLOWED_SERVERS": '["ftp://fhir.example"]'
        },
        # httpx refuses to send it: every token naming the issuer was refused at run time.
        "auth.trusted_issuers[0].jwks_urls[0]: 'https://ehr.example/jwks\\x01' holds "
        "control characters": {
            "ECG_CDS_AUTH__TRUSTED_ISSUERS": json.dumps(
                [{"iss": "https://ehr.example", "jwks_urls": ["https://ehr.example/jwks\x01"]}]
            )
        },
        "fhir.writeback_server: https://fhir.example/R4 is not in fhir.allowed_servers": {
            "ECG_CDS_FHIR__WRITEBACK_SERVER": "https://fhir.example/R4"
        },
        "database_url: cannot open the database": {
            "ECG_CDS_DATABASE_URL": "postgresql+psycopg://u:secret@127.0.0.1:1/db"
        },
        "jobs.broker_url: cannot reach the broker redis://127.0.0.1:1/0": {
            "ECG_CDS_JOBS__MODE": "distributed",
            "ECG_CDS_JOBS__BROKER_URL": "redis://127.0.0.1:1/0",
            "ECG_CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        },
    }
    for expected, env in cases.items():
        code, lines = _problems(cli, tmp_path, **env)
        assert code == 1, (expected, lines)
        errors = [line for line in lines if line.startswith("error")]
        assert any(expected in line for line in errors), (expected, lines)
        assert lines[-1].endswith("warning(s).")
        assert all("secret" not in line for line in lines)  # passwords never printed


def test_trusted_ehrs_not_bound_to_their_servers_are_warned_about(
    cli: CliRun, tmp_path: Path
) -> None:
    """With a write-back server (or allowed PACS) and two EHRs, one not bound to its own FHIR
    server (PACS) can name the other's: a warning naming it; bound, none."""
    from tests.service.ehr import EhrKey
    from tests.service.ehr import jwks as key_set

    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(key_set(EhrKey.generate("ES384"))))
    issuers: list[dict[str, Any]] = [
        {"iss": "https://ehr-a.example", "jwks_file": str(jwks)},
        {"iss": "https://ehr-b.example", "jwks_file": str(jwks), "fhir_servers": ["https://b/R4"]},
    ]
    env = {
        "ECG_CDS_AUTH__TRUSTED_ISSUERS": json.dumps(issuers),
        "ECG_CDS_FHIR__ALLOWED_SERVERS": '["https://a/R4", "https://b/R4"]',
        "ECG_CDS_FHIR__WRITEBACK_SERVER": "https://b/R4",
    }
    result = cli("check-config", "--no-model", env=clean_env(tmp_path, **env))
    assert result.returncode == 0, result.stderr  # a warning only
    [warning] = [line for line in result.stdout.splitlines() if "list no fhir_servers" in line]
    assert warning.startswith("warning") and "'https://ehr-a.example'" in warning
    env["ECG_CDS_FHIR__ALLOWED_DICOMWEB"] = '["https://pacs-b/dicom-web"]'
    issuers[0]["fhir_servers"] = ["https://a/R4"]
    issuers[1]["dicomweb_servers"] = ["https://pacs-b/dicom-web"]
    env["ECG_CDS_AUTH__TRUSTED_ISSUERS"] = json.dumps(issuers)
    result = cli("check-config", "--no-model", env=clean_env(tmp_path, **env))
    assert "fhir_servers" not in result.stdout + result.stderr, result.stdout
    [warning] = [line for line in result.stdout.splitlines() if "no dicomweb_servers" in line]
    assert "'https://ehr-a.example'" in warning and "'https://ehr-b.example'" not in warning
    issuers[0]["dicomweb_servers"] = ["https://pacs-a/dicom-web"]  # not allow-listed
    env["ECG_CDS_AUTH__TRUSTED_ISSUERS"] = json.dumps(issuers)
    result = cli("check-config", "--no-model", env=clean_env(tmp_path, **env))
    [warning] = [line for line in result.stdout.splitlines() if "dicomweb_servers" in line]
    assert warning.startswith("warning auth.trusted_issuers[0].dicomweb_servers[0]")
    assert "not in fhir.allowed_dicomweb" in warning


def test_model_folder_that_does_not_load(cli: CliRun, tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    result = cli("check-config", env=clean_env(tmp_path, ECG_CDS_MODEL_DIR=str(tmp_path / "model")))
    assert result.returncode == 1
    assert f"model_dir: cannot load the model from {tmp_path / 'model'}" in result.stderr


def test_json_output(cli: CliRun, tmp_path: Path) -> None:
    result = cli("check-config", "--no-model", "--json", env=clean_env(tmp_path))
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert {p["setting"] for p in report["problems"]} == {"auth.trusted_issuers"}


def test_serve_refuses_to_start_on_a_trust_problem(cli: CliRun, tmp_path: Path) -> None:
    issuers = json.dumps([{"iss": "https://ehr.example", "jwks_file": str(tmp_path / "no.json")}])
    result = cli(
        "serve", "--port", "1", env=clean_env(tmp_path, ECG_CDS_AUTH__TRUSTED_ISSUERS=issuers)
    )
    assert result.returncode == 2
    assert "auth.trusted_issuers[0].jwks_file" in result.stderr and "Not starting" in result.stderr


def test_serve_refuses_a_database_it_cannot_open(cli: CliRun, tmp_path: Path) -> None:
    url = "postgresql+psycopg://u:secret@127.0.0.1:1/db"  # nothing listens on port 1
    result = cli("serve", "--port", "1", env=clean_env(tmp_path, ECG_CDS_DATABASE_URL=url))
    assert result.returncode == 2
    assert "database_url: cannot open the database" in result.stderr
    assert "secret" not in result.stderr and "Traceback" not in result.stderr
