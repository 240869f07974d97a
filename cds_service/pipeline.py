"""The ECG pipeline: accept (store + dedupe), submit for classification, read results back.

Everything that touches ECGs goes through one :class:`Pipeline` per process (``runtime.pipeline``):
the upload endpoint, ``ecg-cds ingest``, the hooks, the viewer and the job bodies. It never
holds a waveform longer than a call: jobs get ECG ids and re-read the stored bytes.

Waiting for results never polls a broker. In embedded mode the job runs in this process and
:meth:`Pipeline.notify` wakes waiters through a condition variable; in distributed mode the
result appears in the shared database and :meth:`Pipeline.wait` re-reads it every
``jobs.result_poll_interval_s`` (an indexed primary-key lookup) until its budget is spent.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from adapters import Ecg, EcgFormatError, load_ecg, sha256_hex
from cds_service.jobs.dispatch import Dispatcher
from cds_service.settings import Settings
from cds_service.storage import bundle
from cds_service.storage.records import EcgInfo, FeedbackInfo, StoredResult
from cds_service.storage.tables import (
    CardRow,
    EcgBlobRow,
    EcgRow,
    FeedbackRow,
    JobRow,
    ResultRow,
    StateRow,
    utcnow,
)
from cds_service.storage.upsert import insert_ignore
from models.results import ClassificationResult

__all__ = ["EcgInfo", "FeedbackInfo", "Pipeline", "StoredResult"]

log = logging.getLogger(__name__)

#: Statuses after which no result is coming for this ECG without a new submit.
_FINAL_WITHOUT_RESULT = {"failed"}


class Pipeline:
    """Storage and job submission for ECGs. Thread-safe; one per process."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        dispatcher: Dispatcher,
        model_version: Callable[[], str],
        audit: Any = None,
    ) -> None:
        self.settings = settings
        self._sessions = session_factory
        self._dispatcher = dispatcher
        self._model_version = model_version
        self._audit = audit
        self._changed = threading.Condition()
        self._generation = 0

    # ------------------------------------------------------------------ accept

    @property
    def model_version(self) -> str:
        """The version of the model this process classifies with (loads it on first use)."""
        return self._model_version()

    def accept_bytes(
        self,
        data: bytes,
        *,
        source_uri: str | None = None,
        patient_ref: str | None = None,
        format: str | None = None,
        actor: Any = None,
    ) -> EcgInfo:
        """Store one single-file ECG (any adapter format); a known SHA-256 returns its record.

        The bytes are parsed first, so nothing unreadable is stored:
        :class:`~adapters.EcgFormatError` reaches the caller with its explanation.
        """
        digest = sha256_hex(data)
        existing = self._find_by_sha(digest)
        if existing is not None:
            return self._duplicate(existing, patient_ref, actor)
        ecg = load_ecg(
            data, format, name=source_uri or "<upload>", max_bytes=self.settings.max_ecg_bytes
        )
        return self._store(ecg, data, digest, "raw", source_uri, patient_ref, actor)

    def accept_files(
        self,
        files: Mapping[str, bytes],
        *,
        source_uri: str | None = None,
        patient_ref: str | None = None,
        actor: Any = None,
    ) -> EcgInfo:
        """Store a multi-file record (a WFDB ``.hea`` with its signal files) as one bundle."""
        if len(files) == 1:
            ((name, data),) = files.items()
            return self.accept_bytes(
                data, source_uri=source_uri or name, patient_ref=patient_ref, actor=actor
            )
        try:
            blob = bundle.pack(files)
            header = bundle.header_name(files)
        except ValueError as exc:
            raise EcgFormatError(source_uri or "<upload>", str(exc)) from None
        digest = sha256_hex(blob)
        existing = self._find_by_sha(digest)
        if existing is not None:
            return self._duplicate(existing, patient_ref, actor)
        with bundle.extracted(files) as folder:
            ecg = load_ecg(
                folder / header, name=source_uri or header, max_bytes=self.settings.max_ecg_bytes
            )
        return self._store(ecg, blob, digest, "zip", source_uri or header, patient_ref, actor)

    def accept_path(
        self, path: Path, *, patient_ref: str | None = None, actor: Any = None
    ) -> EcgInfo:
        """Store a file from disk; a WFDB header brings its signal files along."""
        path = Path(path)
        uri = path.resolve().as_uri()
        if path.suffix.lower() == ".hea":
            try:
                files = bundle.wfdb_record_files(path)
            except (OSError, UnicodeError) as exc:
                raise EcgFormatError(
                    str(path), str(exc), "keep the signal files beside the header"
                ) from None
            return self.accept_files(files, source_uri=uri, patient_ref=patient_ref, actor=actor)
        if path.stat().st_size > self.settings.max_ecg_bytes:
            raise EcgFormatError(
                str(path), f"file is over the {self.settings.max_ecg_bytes}-byte limit"
            )
        return self.accept_bytes(
            path.read_bytes(), source_uri=uri, patient_ref=patient_ref, actor=actor
        )

    def _find_by_sha(self, digest: str) -> EcgInfo | None:
        with self._sessions() as session:
            row = session.scalar(select(EcgRow).where(EcgRow.sha256 == digest))
            return EcgInfo.from_row(row) if row else None

    def _store(
        self,
        ecg: Ecg,
        blob: bytes,
        digest: str,
        container: str,
        source_uri: str | None,
        patient_ref: str | None,
        actor: Any,
    ) -> EcgInfo:
        row = EcgRow(
            id=str(uuid.uuid4()),
            sha256=digest,
            source_uri=source_uri,
            format=ecg.source.format,
            container=container,
            patient_ref=patient_ref,
            file_patient_id=ecg.patient_id,
            acquired_at=ecg.start_time,
            n_leads=len(ecg.leads),
            fs=float(ecg.fs),
            duration_s=float(ecg.duration_s),
            size_bytes=len(blob),
            status="pending",
        )
        try:
            with self._sessions.begin() as session:
                session.add(row)
                session.flush()
                session.add(EcgBlobRow(ecg_id=row.id, data=blob))
        except IntegrityError:  # the same bytes arrived concurrently: the other insert won
            existing = self._find_by_sha(digest)
            if existing is None:
                raise
            return self._duplicate(existing, patient_ref, actor)
        info = EcgInfo.from_row(row, created=True)
        self._record_ingest(info, actor, duplicate=False)
        return info

    def _duplicate(self, existing: EcgInfo, patient_ref: str | None, actor: Any) -> EcgInfo:
        """The stored record for bytes seen before. A patient reference given now fills one
        that was missing (a folder ingest first, the same ECG from the EHR later); a
        different one never overwrites it."""
        if patient_ref and existing.patient_ref is None:
            with self._sessions.begin() as session:
                session.execute(
                    update(EcgRow)
                    .where(EcgRow.id == existing.id, EcgRow.patient_ref.is_(None))
                    .values(patient_ref=patient_ref)
                )
            existing = replace(existing, patient_ref=patient_ref)
        elif patient_ref and existing.patient_ref != patient_ref:
            log.warning(
                "ECG %s was stored for another patient; the new reference is ignored", existing.id
            )
        self._record_ingest(existing, actor, duplicate=True)
        return existing

    def _record_ingest(self, info: EcgInfo, actor: Any, *, duplicate: bool) -> None:
        self.audit(
            "ingest",
            actor=actor,
            patient=info.patient_ref,
            ecg_id=info.id,
            detail={"format": info.format, "sha256": info.sha256, "duplicate": duplicate},
        )

    def audit(self, event: str, **kwargs: Any) -> None:
        """Record an audit event (``AuditError`` propagates: an unauditable action is an error)."""
        if self._audit is None:
            return
        self._audit.record(event, **kwargs)

    # ------------------------------------------------------------------ read

    def get_info(self, ecg_id: str) -> EcgInfo | None:
        with self._sessions() as session:
            row = session.get(EcgRow, ecg_id)
            return EcgInfo.from_row(row) if row else None

    def find_by_source(self, source_uri: str) -> EcgInfo | None:
        """The ECG stored from ``source_uri`` (the oldest, if several), or None."""
        with self._sessions() as session:
            row = session.scalar(
                select(EcgRow)
                .where(EcgRow.source_uri == source_uri)
                .order_by(EcgRow.created_at)
                .limit(1)
            )
            return EcgInfo.from_row(row) if row else None

    def load_ecg(self, ecg_id: str) -> Ecg:
        """The ECG re-read from its stored bytes. ``KeyError`` when the id is unknown."""
        with self._sessions() as session:
            row = session.get(EcgRow, ecg_id)
            blob = session.get(EcgBlobRow, ecg_id)
            if row is None or blob is None:
                raise KeyError(f"no ECG with id {ecg_id}")
            container, fmt, name, data = row.container, row.format, row.source_uri, blob.data
        if container == "zip":
            try:
                files = bundle.unpack(data, self.settings.max_ecg_bytes)
                header = bundle.header_name(files)
            except (ValueError, OSError, zipfile.BadZipFile) as exc:
                raise EcgFormatError(
                    name or ecg_id, f"stored bundle is unreadable: {exc}"
                ) from None
            with bundle.extracted(files) as folder:
                return load_ecg(folder / header, name=name, max_bytes=self.settings.max_ecg_bytes)
        return load_ecg(data, fmt, name=name or ecg_id, max_bytes=self.settings.max_ecg_bytes)

    def original_bytes(self, ecg_id: str) -> tuple[bytes, str] | None:
        """The stored blob and its container (``raw`` or ``zip``), e.g. for attachments."""
        with self._sessions() as session:
            row = session.get(EcgRow, ecg_id)
            blob = session.get(EcgBlobRow, ecg_id)
            return (blob.data, row.container) if row and blob else None

    def result(self, ecg_id: str) -> StoredResult | None:
        """The result of the current model version, else the newest of any version, else None."""
        return self._results([ecg_id]).get(ecg_id)

    def _results(self, ecg_ids: Sequence[str]) -> dict[str, StoredResult]:
        if not ecg_ids:
            return {}
        version = self.model_version
        with self._sessions() as session:
            rows = session.scalars(
                select(ResultRow)
                .where(ResultRow.ecg_id.in_(list(ecg_ids)))
                .order_by(ResultRow.created_at)
            ).all()
        best: dict[str, ResultRow] = {}
        for row in rows:  # ascending: later rows win unless the current version is held
            held = best.get(row.ecg_id)
            if held is None or held.model_version != version:
                best[row.ecg_id] = row
        return {ecg_id: StoredResult.from_row(row) for ecg_id, row in best.items()}

    def ids_matching(
        self, *, patient_ref: str | None = None, source_prefix: str | None = None
    ) -> list[str]:
        """Ids of every stored ECG of a patient and/or from under a source URI prefix."""
        query = select(EcgRow.id).order_by(EcgRow.id)
        if patient_ref is not None:
            query = query.where(EcgRow.patient_ref == patient_ref)
        if source_prefix is not None:
            query = query.where(EcgRow.source_uri.startswith(source_prefix, autoescape=True))
        with self._sessions() as session:
            return list(session.scalars(query).all())

    def has_result(self, ecg_id: str, model_version: str) -> bool:
        with self._sessions() as session:
            found = session.scalar(
                select(ResultRow.id).where(
                    ResultRow.ecg_id == ecg_id, ResultRow.model_version == model_version
                )
            )
            return found is not None

    def list_ecgs(
        self,
        *,
        patient_ref: str | None = None,
        status: str | None = None,
        source_prefix: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[tuple[EcgInfo, StoredResult | None]]:
        """Newest first, with each ECG's result (see :meth:`result`)."""
        query = select(EcgRow).order_by(EcgRow.created_at.desc(), EcgRow.id)
        if patient_ref is not None:
            query = query.where(EcgRow.patient_ref == patient_ref)
        if status is not None:
            query = query.where(EcgRow.status == status)
        if source_prefix is not None:
            query = query.where(EcgRow.source_uri.startswith(source_prefix, autoescape=True))
        if since is not None:
            query = query.where(EcgRow.created_at >= since)
        query = query.limit(max(1, min(limit, 1000))).offset(max(0, offset))
        with self._sessions() as session:
            infos = [EcgInfo.from_row(row) for row in session.scalars(query).all()]
        results = self._results([info.id for info in infos])
        return [(info, results.get(info.id)) for info in infos]

    # ------------------------------------------------------------------ jobs

    def submit(
        self, ecg_id: str, *, bulk: bool = False, requeue_before: datetime | None = None
    ) -> None:
        """Queue classification unless a result or a live job exists for the current model.

        A failed ECG is reset to pending and queued again: this is how failures are retried.
        ``bulk`` (folder ingest, backfills) yields to interactive work (hooks, uploads).
        A queued or running job counts as live unless it was last touched more than
        ``jobs.job_stale_after_s`` ago, or before ``requeue_before`` (the start of this
        process, when an embedded-mode job cannot have survived a restart).
        """
        version = self.model_version
        if self.has_result(ecg_id, version):
            return
        stale = utcnow() - timedelta(seconds=self.settings.jobs.job_stale_after_s)
        if requeue_before is not None:
            stale = max(stale, requeue_before)
        with self._sessions.begin() as session:
            ecg = session.get(EcgRow, ecg_id)
            if ecg is None:
                raise KeyError(f"no ECG with id {ecg_id}")
            job = session.scalar(
                select(JobRow).where(
                    JobRow.kind == "classify",
                    JobRow.ecg_id == ecg_id,
                    JobRow.model_version == version,
                )
            )
            if job is not None and job.state in ("queued", "running") and job.updated_at > stale:
                return
            if job is None:
                inserted = insert_ignore(
                    session,
                    JobRow.__table__,  # type: ignore[arg-type]
                    {
                        "kind": "classify",
                        "ecg_id": ecg_id,
                        "model_version": version,
                        "state": "queued",
                        "attempts": 0,
                        "created_at": utcnow(),
                        "updated_at": utcnow(),
                    },
                    ("kind", "ecg_id", "model_version"),
                )
                if not inserted:
                    return  # another submit won the race and is queuing it
            else:
                job.state, job.error, job.updated_at = "queued", None, utcnow()
            if ecg.status == "failed":
                ecg.status, ecg.error = "pending", None
        self._dispatcher.enqueue("classify_ecg", ecg_id, bulk=bulk)

    def pending_ids(self, *, limit: int = 10_000) -> list[str]:
        """ECGs accepted but never finished (e.g. the process stopped): resumed at start."""
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(EcgRow.id)
                    .where(EcgRow.status == "pending")
                    .order_by(EcgRow.created_at)
                    .limit(limit)
                ).all()
            )

    def mark_job(
        self, kind: str, ecg_id: str, model_version: str, state: str, error: str | None = None
    ) -> None:
        """Record a job's progress (creating its row when a task arrives without a submit)."""
        with self._sessions.begin() as session:
            _mark_job(session, kind, ecg_id, model_version, state, error)

    def job_state(self, kind: str, ecg_id: str, model_version: str) -> str | None:
        with self._sessions() as session:
            return session.scalar(
                select(JobRow.state).where(
                    JobRow.kind == kind,
                    JobRow.ecg_id == ecg_id,
                    JobRow.model_version == model_version,
                )
            )

    def store_result(
        self, ecg_id: str, result: ClassificationResult, *, notify: bool = True
    ) -> bool:
        """Store a result once per (ECG, model version); True if this call stored it.

        ``notify=False`` lets the caller finish its bookkeeping (the audit entry) before
        waiters wake; it then calls :meth:`notify` itself.
        """
        with self._sessions.begin() as session:
            inserted = insert_ignore(
                session,
                ResultRow.__table__,  # type: ignore[arg-type]
                {
                    "ecg_id": ecg_id,
                    "model_version": result.model_version,
                    "acceptable": result.quality.acceptable,
                    "result": result.to_dict(),
                    "created_at": utcnow(),
                },
                ("ecg_id", "model_version"),
            )
            session.execute(
                update(EcgRow)
                .where(EcgRow.id == ecg_id)
                .values(
                    status="done" if result.quality.acceptable else "rejected",
                    error=None,
                    updated_at=utcnow(),
                )
            )
            _mark_job(session, "classify", ecg_id, result.model_version, "done")
        if notify:
            self.notify()
        return inserted

    def mark_failed(
        self, ecg_id: str, model_version: str, error: str, *, notify: bool = True
    ) -> None:
        """The ECG stays recorded with its error; :meth:`submit` retries it."""
        with self._sessions.begin() as session:
            session.execute(
                update(EcgRow)
                .where(EcgRow.id == ecg_id)
                .values(status="failed", error=error[:2000], updated_at=utcnow())
            )
            _mark_job(session, "classify", ecg_id, model_version, "failed", error[:2000])
        if notify:
            self.notify()

    def notify(self) -> None:
        """Wake every :meth:`wait` in this process (a result or failure was just stored)."""
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def wait(self, ecg_ids: Sequence[str], timeout_s: float) -> dict[str, StoredResult | None]:
        """Results for ``ecg_ids``, waiting at most ``timeout_s`` for the missing ones.

        Returns early when every id has a result or has failed. Missing ones map to None.
        """
        ids = list(dict.fromkeys(ecg_ids))
        deadline = time.monotonic() + max(0.0, timeout_s)
        found: dict[str, StoredResult | None] = {}
        pending = set(ids)
        poll_s = self.settings.jobs.result_poll_interval_s
        while True:
            generation = self._generation
            found.update(self._results(sorted(pending)))
            pending -= set(found)
            if pending:
                pending -= self._failed(pending)
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                break
            if self._dispatcher.in_process:
                with self._changed:
                    if self._generation == generation:
                        self._changed.wait(remaining)
            else:
                time.sleep(min(poll_s, remaining))
        return {ecg_id: found.get(ecg_id) for ecg_id in ids}

    def _failed(self, ecg_ids: set[str]) -> set[str]:
        with self._sessions() as session:
            return set(
                session.scalars(
                    select(EcgRow.id).where(
                        EcgRow.id.in_(list(ecg_ids)), EcgRow.status.in_(_FINAL_WITHOUT_RESULT)
                    )
                ).all()
            )

    # ------------------------------------------------------------------ cards and feedback

    def save_card(
        self,
        *,
        card_uuid: str,
        service_id: str,
        ecg_id: str | None,
        patient_ref: str | None,
        summary: str,
        indicator: str,
        card: dict[str, Any],
    ) -> None:
        """Remember a card shown to an EHR (the same uuid twice is stored once)."""
        with self._sessions.begin() as session:
            insert_ignore(
                session,
                CardRow.__table__,  # type: ignore[arg-type]
                {
                    "uuid": card_uuid,
                    "service_id": service_id,
                    "ecg_id": ecg_id,
                    "patient_ref": patient_ref,
                    "summary": summary[:256],
                    "indicator": indicator,
                    "card": card,
                    "created_at": utcnow(),
                },
                ("uuid",),
            )

    def get_card(self, card_uuid: str) -> dict[str, Any] | None:
        with self._sessions() as session:
            row = session.get(CardRow, card_uuid)
            return dict(row.card) if row else None

    def save_feedback(
        self,
        *,
        card_uuid: str,
        service_id: str,
        outcome: str,
        accepted_suggestions: list[str],
        override_reason: dict[str, Any] | None,
        user_comment: str | None,
        outcome_timestamp: datetime | None,
        source: str = "cds-hooks",
    ) -> FeedbackInfo:
        """Store feedback tied to its card and ECG; feedback on an unknown card is kept, flagged."""
        with self._sessions.begin() as session:
            card = session.get(CardRow, card_uuid)
            row = FeedbackRow(
                card_uuid=card_uuid,
                card_known=card is not None,
                service_id=service_id,
                ecg_id=card.ecg_id if card else None,
                outcome=outcome,
                accepted_suggestions=list(accepted_suggestions),
                override_reason=override_reason,
                user_comment=user_comment,
                outcome_timestamp=outcome_timestamp,
                source=source,
                created_at=utcnow(),
            )
            session.add(row)
            session.flush()
            return FeedbackInfo.from_row(row)

    def feedback_for(self, ecg_id: str) -> list[FeedbackInfo]:
        with self._sessions() as session:
            rows = session.scalars(
                select(FeedbackRow)
                .where(FeedbackRow.ecg_id == ecg_id)
                .order_by(FeedbackRow.created_at, FeedbackRow.id)
            ).all()
            return [FeedbackInfo.from_row(row) for row in rows]

    # ------------------------------------------------------------------ remembered state

    def get_state(self, key: str) -> dict[str, Any] | None:
        with self._sessions() as session:
            row = session.get(StateRow, key)
            return dict(row.value) if row else None

    def set_state(self, key: str, value: dict[str, Any]) -> None:
        with self._sessions.begin() as session:
            row = session.get(StateRow, key)
            if row is None:
                session.add(StateRow(key=key, value=value, updated_at=datetime.now(UTC)))
            else:
                row.value = value


def _mark_job(
    session: Session,
    kind: str,
    ecg_id: str,
    model_version: str,
    state: str,
    error: str | None = None,
) -> None:
    """Upsert a job row's state inside the caller's transaction; ``running`` counts an attempt."""
    now = utcnow()
    insert_ignore(
        session,
        JobRow.__table__,  # type: ignore[arg-type]
        {
            "kind": kind,
            "ecg_id": ecg_id,
            "model_version": model_version,
            "state": state,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        },
        ("kind", "ecg_id", "model_version"),
    )
    values: dict[str, Any] = {"state": state, "error": error, "updated_at": now}
    if state == "running":
        values["attempts"] = JobRow.attempts + 1
    session.execute(
        update(JobRow)
        .where(
            JobRow.kind == kind,
            JobRow.ecg_id == ecg_id,
            JobRow.model_version == model_version,
        )
        .values(**values)
    )
