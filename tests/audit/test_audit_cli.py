"""``ecg-cds audit verify`` and ``ecg-cds audit query`` on a service database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from cds_service.audit import Actor, AuditFilter, AuditTrail
from cds_service.cli import app
from cds_service.settings import get_settings
from cds_service.storage.base import make_engine, make_session_factory

runner = CliRunner()


@pytest.fixture
def trail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AuditTrail]:
    """A trail in the database the CLI finds through ``ECG_CDS_DATA_DIR``."""
    monkeypatch.setenv("ECG_CDS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ECG_CDS_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    engine = make_engine(f"sqlite:///{tmp_path / 'ecg-cds.db'}")
    trail = AuditTrail(make_session_factory(engine))
    trail.create_table()
    actor = Actor(iss="https://ehr.example.org", sub="c7", user="Practitioner/123")
    trail.record("hook-call", actor=actor, patient="p1", model_version="m-1")
    trail.record("fetch", actor=actor, patient="p1", outcome="failure")
    trail.record("classification", patient="p2", ecg_id="e2", model_version="m-1")
    yield trail
    engine.dispose()
    get_settings.cache_clear()


def test_verify_intact_chain_exits_0(trail: AuditTrail) -> None:
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "3 entries" in result.output
    report = json.loads(runner.invoke(app, ["audit", "verify", "--json"]).output)
    assert report["ok"] is True and report["n_entries"] == 3
    head = report["last_hash"]
    assert runner.invoke(app, ["audit", "verify", "--witnessed", head]).exit_code == 0
    assert runner.invoke(app, ["audit", "verify", "--witnessed", "f" * 64]).exit_code == 1


def test_verify_broken_chain_exits_1_naming_the_entry(trail: AuditTrail) -> None:
    with trail.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER audit_events_no_update"))
        conn.execute(text("UPDATE audit_events SET outcome = 'success' WHERE seq = 2"))
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 1
    assert "seq 2" in result.output
    report = json.loads(runner.invoke(app, ["audit", "verify", "--json"]).output)
    assert report == {
        "ok": False,
        "n_entries": 2,
        "first_bad_seq": 2,
        "reason": report["reason"],
        "last_hash": report["last_hash"],
    }


def test_query_json_lines_with_filters(trail: AuditTrail) -> None:
    # JSON Lines moved from --json to --jsonl (--json is now one JSON document: issue 12)
    limited = runner.invoke(app, ["audit", "query", "--jsonl", "--limit", "1"])
    assert [json.loads(x)["seq"] for x in limited.stdout.splitlines()] == [3]
    assert "showing entries 1-1 of 3; --offset 1 for the next page" in limited.stderr
    result = runner.invoke(app, ["audit", "query", "--jsonl", "--patient", "Patient/p1"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [e["seq"] for e in lines] == [2, 1]
    assert lines[1]["actor"]["user"] == "Practitioner/123"

    failures = runner.invoke(app, ["audit", "query", "--jsonl", "--outcome", "failure"])
    assert [json.loads(x)["event"] for x in failures.output.splitlines()] == ["fetch"]
    by_event = runner.invoke(
        app, ["audit", "query", "--jsonl", "--event", "classification", "--event", "hook-call"]
    )
    assert [json.loads(x)["seq"] for x in by_event.output.splitlines()] == [3, 1]
    future = runner.invoke(app, ["audit", "query", "--jsonl", "--from", "2999-01-01"])
    assert future.exit_code == 0 and future.output == ""


def test_query_json_is_one_document_and_says_what_is_left(trail: AuditTrail) -> None:
    for i in range(120):
        trail.record("hook-call", patient=f"bulk-{i}")
    first = runner.invoke(app, ["audit", "query", "--json"])
    document = json.loads(first.stdout)  # json.load works: one document, not lines
    assert document["total"] == 123 and len(document["entries"]) == 50
    assert document["next_offset"] == 50 and "of 123" in first.stderr
    everything = json.loads(runner.invoke(app, ["audit", "query", "--json", "--all"]).stdout)
    # The first query's own read came after it: 124 entries now, that read the newest.
    assert len(everything["entries"]) == 124 and everything["next_offset"] is None
    assert [e["seq"] for e in everything["entries"]] == list(range(124, 0, -1))
    read = everything["entries"][0]
    assert read["event"] == "audit-read" and read["detail"]["returned"] == 50
    assert read["detail"]["query"] == [["offset", "0"], ["limit", "50"]]
    assert read["actor"]["client"].startswith("ecg-cds audit query (")


def test_each_query_is_an_audit_read_naming_its_filters(trail: AuditTrail) -> None:
    runner.invoke(app, ["audit", "query", "--jsonl", "--patient", "Patient/p1", "--event", "fetch"])
    [read] = trail.query(AuditFilter(events=["audit-read"])).entries
    assert read.patient == "p1" and read.detail["endpoint"] == "ecg-cds audit query"
    assert read.detail["query"][:2] == [["patient", "Patient/p1"], ["events", "fetch"]]
    assert read.detail["returned"] == len(
        trail.query(AuditFilter(patient="p1", events=["fetch"])).entries
    )


def test_query_table(trail: AuditTrail) -> None:
    result = runner.invoke(app, ["audit", "query", "--user", "c7"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "of 2" in result.output and "hook-call" in result.output
    assert "classification" not in result.output


def test_query_table_shows_what_callers_wrote_as_text(trail: AuditTrail) -> None:
    """An EHR writes its ``context.userId``, JWT ``sub`` and ``patientId`` into the trail.
    The table read them as Rich markup (a hidden hyperlink, styles) and passed terminal
    escapes through to the compliance officer's terminal (clear the screen, retitle it,
    move the cursor up and overwrite the rows above: entries hidden from the reader)."""
    hostile = (
        "Practitioner/9\x1b[2J\x1b[1A\x1b[2K\x1b]0;title\x07\u202e"
        " [link=https://evil.example]open[/link] [bold]x[/bold]"
    )
    actor = Actor(iss="https://ehr.example.org", sub="\x1b[8mhidden", user=hostile)
    trail.record("hook-call", actor=actor, patient="p9\x1b[31m", model_version="m-1")
    result = runner.invoke(app, ["audit", "query", "--patient", "p9\x1b[31m"],
                           env={"COLUMNS": "400"})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "\u202e" not in result.stdout  # a right-to-left override reorders what follows
    table = " ".join(result.stdout.split())
    assert "[link=https://evil.example]open[/link]" in table  # shown as written
    assert "[bold]x[/bold]" in table
    assert "Practitioner/9?[2J?[1A?[2K?]0;title??" in table  # each control character a ?


@pytest.mark.parametrize("form", ["--json", "--jsonl"])
def test_query_json_escapes_what_a_terminal_would_act_on(trail: AuditTrail, form: str) -> None:
    """JSON was written with ``ensure_ascii=False``, which escapes C0 controls only: a
    caller's one-byte CSI (U+009B, the C1 form of ESC[) and bidi overrides reached the
    terminal raw. They are now escaped; letters of other scripts stay as written, and the
    JSON still reads back as what the caller wrote."""
    user = "Practitioner/9\u009b2J\u202e\u2028 Ζωή Jürgen"
    trail.record("hook-call", actor=Actor(iss="https://ehr.example.org", user=user), patient="p9")
    result = runner.invoke(app, ["audit", "query", form, "--patient", "p9"])
    assert result.exit_code == 0, result.output
    for raw in ("\u009b", "\u202e", "\u2028"):
        assert raw not in result.stdout
    assert "Ζωή Jürgen" in result.stdout
    lines = result.stdout.splitlines() if form == "--jsonl" else [result.stdout]
    entries = [json.loads(x) for x in lines]
    found = entries if form == "--jsonl" else entries[0]["entries"]
    assert found[0]["actor"]["user"] == user


@pytest.mark.parametrize(
    "args",
    [
        ["--event", "nonsense"],
        ["--from", "yesterday"],
        ["--outcome", "ok"],
        ["--patient", "p" * 257],  # wider than the patient column: its audit-read failed
    ],
)
def test_query_bad_input_is_a_usage_error(trail: AuditTrail, args: list[str]) -> None:
    result = runner.invoke(app, ["audit", "query", *args])
    assert result.exit_code == 2
    assert "Invalid value" in result.output


def test_missing_audit_table_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECG_CDS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ECG_CDS_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["audit", "verify"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "no audit_events table" in result.output
