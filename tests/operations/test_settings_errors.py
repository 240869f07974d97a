"""Settings that do not load: one line naming what to fix, exit 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.operations.conftest import CliRun, clean_env


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"ECG_CDS_AUTH__TRUSTED_ISSUERS": '[{"iss": "x", jwks_file: 1}]'},
            "ECG_CDS_AUTH__TRUSTED_ISSUERS: not valid JSON",
        ),
        ({"ECG_CDS_SETTINGS_FILE": "/nonexistent/settings.yaml"}, "no such file"),
        ({"ECG_CDS_JOBS__MODE": "banana"}, "jobs.mode: Input should be 'embedded' or"),
        ({"ECG_CDS_PORT": "eighty"}, "port: Input should be a valid integer"),
    ],
)
def test_bad_settings_are_one_line_naming_the_setting(
    cli: CliRun, tmp_path: Path, extra: dict[str, str], expected: str
) -> None:
    commands = [["audit", "verify"], ["viewer-link", "--reviewer"], ["check-config"]]
    if "ECG_CDS_PORT" not in extra:  # serve --port replaces that one
        commands.append(["serve", "--port", "1"])
    for command in commands:
        result = cli(*command, env=clean_env(tmp_path, **extra))
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        if command == ["check-config"]:  # the problem line, then its count; exit 1
            assert result.returncode == 1 and lines[-1] == "1 error(s), 0 warning(s)."
            lines = lines[:-1]
        else:
            assert result.returncode == 2, (command, result.stderr)
        assert len(lines) == 1 and expected in lines[0], (command, result.stderr)
        assert result.stdout == ""


def test_settings_file_with_bad_value_names_the_file(cli: CliRun, tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("jobs:\n  mode: banana\n")
    result = cli("audit", "verify", env=clean_env(tmp_path, ECG_CDS_SETTINGS_FILE=str(settings)))
    assert result.returncode == 2
    assert f"set in the settings file {settings}" in result.stderr


def test_data_dir_defaults_to_the_user_data_folder_not_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cds_service.settings import load_settings

    monkeypatch.delenv("ECG_CDS_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert load_settings().data_dir == tmp_path / "xdg" / "ecg-cds"
    monkeypatch.setenv("ECG_CDS_DATA_DIR", "relative/var")
    assert load_settings().data_dir == tmp_path / "relative" / "var"  # resolved once, absolute
