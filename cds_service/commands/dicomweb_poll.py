"""``ecg-cds ingest --dicomweb URL``: poll a DICOMweb server (PACS) for new ECGs.

QIDO-RS asks for series of modality ECG, WADO-RS fetches each instance not stored yet, and
each is stored and queued as bulk work like a file of ``ecg-cds ingest``. The date of the
last complete poll is remembered in the database (state key ``dicomweb-poll:<base URL>``),
so the next run only asks for newer studies.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer

from cds_service.commands._inputs import progress_bar

if TYPE_CHECKING:
    from cds_service.audit import Actor
    from cds_service.dicomweb import DicomwebClient
    from cds_service.runtime import Runtime

_STATE_PREFIX = "dicomweb-poll:"


def poll_dicomweb(
    runtime: Runtime, url: str, full: bool, patient: str, actor: Actor, progress: bool
) -> tuple[list[str], list[str]]:
    """QIDO-RS for ECG series since the last poll; WADO-RS each instance not stored yet.

    Instances are stored exactly as the PACS sends them (:mod:`cds_service.dicomweb`, the
    same reads as the hooks'), so an ECG polled here and the same ECG seen in a hook call
    have one SHA-256 and are stored once.
    """
    from cds_service.allow_list import OutboundRefused
    from cds_service.dicomweb import DicomwebClient

    try:
        client = DicomwebClient(runtime.settings, url)
    except OutboundRefused as exc:
        typer.echo(
            f"{exc.url} {exc.problem} (fhir.allowed_dicomweb); add it to the settings to poll it.",
            err=True,
        )
        raise typer.Exit(2) from None
    with client:
        return _poll(runtime, client, full, patient, actor, progress)


def _poll(
    runtime: Runtime, client: DicomwebClient, full: bool, patient: str, actor: Actor, progress: bool
) -> tuple[list[str], list[str]]:
    from adapters import EcgFormatError
    from cds_service.dicomweb import FetchFailed

    url = client.base_url
    state_key = _STATE_PREFIX + url
    state = runtime.state.get(state_key) or {}
    poll_started = datetime.now(UTC)
    filters: dict[str, str] = {"Modality": "ECG"}
    if state.get("last_run") and not full:
        # QIDO matches dates, not times: ask from the day before the last poll (a study
        # stored just before midnight is not missed); stored instances are skipped below.
        since = datetime.fromisoformat(state["last_run"]) - timedelta(days=1)
        filters["StudyDate"] = since.strftime("%Y%m%d") + "-"
    try:
        series = client.search_series(filters)
    except FetchFailed as exc:
        typer.echo(f"error: QIDO-RS query to {url} failed: {exc.problem}", err=True)
        raise typer.Exit(1) from None
    instances: list[tuple[str, str, str]] = []
    for item in series:
        study_uid = _value(item, "0020000D")
        series_uid = _value(item, "0020000E")
        if not study_uid or not series_uid:
            continue
        for inst in client.search_instances(study_uid, series_uid):
            sop_uid = _value(inst, "00080018")
            if sop_uid:
                instances.append((study_uid, series_uid, sop_uid))
    new_ids: list[str] = []
    problems: list[str] = []
    retrieval_failed = False
    for study_uid, series_uid, sop_uid in progress_bar(instances, "dicomweb", progress):
        source = client.instance_url(study_uid, series_uid, sop_uid)
        if runtime.ecgs.find_by_source(source) is not None:
            continue  # fetched by an earlier poll
        try:
            data = client.retrieve_instance(study_uid, series_uid, sop_uid)
            info = runtime.ecgs.accept_bytes(
                data, source_uri=source, patient_ref=patient or None, actor=actor
            )
        except EcgFormatError as exc:
            problems.append(str(exc))
            continue
        except Exception as exc:
            problems.append(f"{source}: could not retrieve ({type(exc).__name__}: {exc})")
            retrieval_failed = True
            continue
        runtime.jobs.submit(info.id, bulk=True)
        if info.created:
            new_ids.append(info.id)
    if retrieval_failed:
        # A PACS outage mid-poll: keep the old mark so the next poll asks for these again
        # (instances already stored are skipped by their source URI).
        return new_ids, problems
    runtime.state.set(
        state_key, {"last_run": poll_started.isoformat(), "instances_seen": len(instances)}
    )
    return new_ids, problems


def _value(item: dict[str, Any], tag: str) -> str | None:
    values = item.get(tag, {}).get("Value") or []
    return str(values[0]) if values else None
