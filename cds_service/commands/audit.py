"""`ecg-cds audit`: verify the hash chain and query the audit trail from the service's database."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from cds_service.commands._text import terminal_json

if TYPE_CHECKING:
    from cds_service.audit import AuditFilter, AuditTrail

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None)


def _open_trail() -> AuditTrail:
    """The audit trail in the database named by the settings; exits 2 when it is unusable."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from cds_service.allow_list import redact_url
    from cds_service.audit import AuditTrail
    from cds_service.settings import get_settings
    from cds_service.storage.base import make_engine, make_session_factory

    url = get_settings().resolved_database_url
    try:
        engine = make_engine(url)
        has_table = inspect(engine).has_table("audit_events")
    except SQLAlchemyError as exc:
        first = str(exc.args[0] if exc.args else exc).strip().splitlines()[0]
        typer.echo(
            f"error: cannot open the database {redact_url(url)} ({type(exc).__name__}: {first}); "
            "check ECG_CDS_DATABASE_URL / ECG_CDS_DATA_DIR.",
            err=True,
        )
        raise typer.Exit(2) from None
    if not has_table:
        typer.echo(
            f"error: the database {redact_url(url)} has no audit_events table: start the "
            "service once (ecg-cds serve) or check ECG_CDS_DATABASE_URL / ECG_CDS_DATA_DIR.",
            err=True,
        )
        raise typer.Exit(2)
    return AuditTrail(make_session_factory(engine))


@app.command("verify", help="Check the audit hash chain; exit 0 when intact, 1 when broken.")
def verify(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    witnessed: Annotated[
        str | None,
        typer.Option(
            "--witnessed",
            help="A head hash printed by an earlier verify: it must still be in the chain "
            "(catches entries removed from the end).",
        ),
    ] = None,
) -> None:
    report = _open_trail().verify(witnessed_hash=witnessed)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "n_entries": report.n_entries,
                    "first_bad_seq": report.first_bad_seq,
                    "reason": report.reason,
                    "last_hash": report.last_hash,
                }
            )
        )
    elif report.ok:
        typer.echo(f"OK: {report.n_entries} entries, chain intact (head {report.last_hash}).")
    else:
        typer.echo(
            f"BROKEN at entry seq {report.first_bad_seq}: {report.reason} "
            f"(checked {report.n_entries} entries).",
            err=True,
        )
    raise typer.Exit(0 if report.ok else 1)


def _record_read(
    trail: AuditTrail, filters: AuditFilter, offset: int, limit: int, every: bool, returned: int
) -> None:
    """The ``audit-read`` entry of this query, as the HTTP audit API writes one per answered
    read (:meth:`AuditTrail.record_read`)."""
    import getpass

    from cds_service.audit import Actor

    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        who = "unknown"
    given = {k: v for k, v in dataclasses.asdict(filters).items() if v not in (None, ())}
    query = [(k, ",".join(v) if isinstance(v, (list, tuple)) else str(v)) for k, v in given.items()]
    query.append(("offset", str(offset)))
    query.append(("all", "true") if every else ("limit", str(limit)))
    reader = Actor(client=f"ecg-cds audit query ({who})")
    trail.record_read(reader, "ecg-cds audit query", query, filters.patient, returned)


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 date or time (e.g. 2026-01-31 or 2026-01-31T12:00Z)",
            param_hint=option,
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


#: Entries read per database round trip with ``--all``.
_PAGE = 1000


@app.command("query", help="List audit entries (newest first) as a table, JSON or JSON lines.")
def query(
    patient: Annotated[str | None, typer.Option(help="Patient id or Patient/<id>.")] = None,
    event: Annotated[
        list[str] | None, typer.Option(help="Event type (repeatable), e.g. hook-call.")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="From this UTC time (ISO 8601), inclusive.")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Up to this UTC time (ISO 8601), inclusive.")
    ] = None,
    user: Annotated[
        str | None, typer.Option(help="Actor's user, JWT subject or client name.")
    ] = None,
    iss: Annotated[str | None, typer.Option(help="Caller's JWT issuer.")] = None,
    outcome: Annotated[str | None, typer.Option(help="success, failure, error or fatal.")] = None,
    model_version: Annotated[str | None, typer.Option(help="Model version.")] = None,
    ecg_id: Annotated[str | None, typer.Option(help="ECG id.")] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="One JSON document: total, offset, limit, next_offset, entries."
        ),
    ] = False,
    as_jsonl: Annotated[
        bool, typer.Option("--jsonl", help="One JSON object per entry per line (for piping).")
    ] = False,
    every: Annotated[
        bool, typer.Option("--all", help="Every matching entry (ignores --limit).")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many (paging).")] = 0,
) -> None:
    from cds_service.audit import EVENTS, OUTCOMES, AuditFilter, patient_filter_problem

    for name in event or ():
        if name not in EVENTS:
            raise typer.BadParameter(
                f"unknown event {name!r}; one of {', '.join(EVENTS)}", param_hint="--event"
            )
    if outcome is not None and outcome not in OUTCOMES:
        raise typer.BadParameter(
            f"unknown outcome {outcome!r}; one of {', '.join(OUTCOMES)}", param_hint="--outcome"
        )
    if problem := patient_filter_problem(patient):
        raise typer.BadParameter(problem, param_hint="--patient")
    filters = AuditFilter(
        patient=patient,
        user=user,
        iss=iss,
        start=_parse_time(start, "--from"),
        end=_parse_time(end, "--to"),
        events=tuple(event or ()),
        model_version=model_version,
        outcome=outcome,
        ecg_id=ecg_id,
    )
    if as_json and as_jsonl:
        raise typer.BadParameter("give --json or --jsonl, not both", param_hint="--jsonl")
    trail = _open_trail()
    page = trail.query(filters, limit=_PAGE if every else limit, offset=offset)
    entries = list(page.entries)
    if every:
        while len(entries) + offset < page.total and page.entries:
            page = trail.query(filters, limit=_PAGE, offset=offset + len(entries))
            entries.extend(page.entries)
    _record_read(trail, filters, offset, limit, every, len(entries))
    shown_end = offset + len(entries)
    next_offset = shown_end if shown_end < page.total else None
    if next_offset is not None:
        typer.echo(
            f"showing entries {offset + 1}-{shown_end} of {page.total:,}; "
            f"--offset {next_offset} for the next page, or --all",
            err=True,
        )
    if as_jsonl:
        for entry in entries:
            typer.echo(terminal_json(entry.to_dict()))
        return
    if as_json:
        document = {
            "total": page.total,
            "offset": offset,
            "limit": None if every else limit,
            "next_offset": next_offset,
            "entries": [entry.to_dict() for entry in entries],
        }
        typer.echo(terminal_json(document, indent=2))
        return

    from rich.console import Console
    from rich.table import Table

    # Callers write these fields (an EHR's userId, JWT sub, patientId): plain text only.
    from cds_service.commands._text import plain as cell

    table = Table(title=f"Audit entries {offset + 1}-{shown_end} of {page.total}")
    for column in ("seq", "time (UTC)", "event", "outcome"):
        table.add_column(column, no_wrap=True)  # a timestamp split over two lines is unreadable
    for column in ("who", "patient", "ecg", "model"):
        table.add_column(column, overflow="fold")
    for e in entries:
        who = e.actor.user or e.actor.sub or e.actor.client or ""
        if e.actor.iss:
            who = f"{who} ({e.actor.iss})" if who else e.actor.iss
        table.add_row(
            str(e.seq),
            e.ts.strftime("%Y-%m-%d %H:%M:%S"),
            e.event,
            e.outcome,
            cell(who),
            cell(e.patient or ""),
            cell(e.ecg_id or ""),
            cell(e.model_version or ""),
        )
    Console().print(table)
