"""The job ledger: classification jobs, their results, and waiting for them.

:meth:`JobLedger.submit` queues classification unless a result or a live job exists for the
current model; task bodies record progress with :meth:`JobLedger.mark_job` and finish with
:meth:`JobLedger.store_result` or :meth:`JobLedger.mark_failed`. A result is stored once per
(ECG, model version), in compact form (:mod:`cds_service.storage.compact`). Job rows are
written by :mod:`~cds_service.storage.job_rows`; reading results back and waiting for them
(never by polling a broker) is :mod:`cds_service.storage.result_reads`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from cds_service.jobs.dispatch import Dispatcher
from cds_service.settings import Settings
from cds_service.storage.job_rows import JOBS, mark_job, mark_jobs, queued_job
from cds_service.storage.records import StoredResult
from cds_service.storage.result_reads import ResultReads
from cds_service.storage.tables import EcgRow, JobRow, ResultPartRow, ResultRow, utcnow
from cds_service.storage.upsert import insert_ignore, insert_ignore_many
from models.results import ClassificationResult


class JobLedger(ResultReads):
    """Jobs and results of classification (the reads and waits: :class:`ResultReads`).
    Thread-safe; one per process."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        dispatcher: Dispatcher,
        model_version: Callable[[], str],
    ) -> None:
        super().__init__(settings, session_factory, dispatcher, model_version)
        #: Digests of parts committed to this database (never deleted): not sent again.
        self._parts_written: set[str] = set()

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
                    queued_job(ecg_id, version, utcnow()),
                    ("kind", "ecg_id", "model_version"),
                )
                if not inserted:
                    return  # another submit won the race and is queuing it
            else:
                job.state, job.error, job.updated_at = "queued", None, utcnow()
            if ecg.status == "failed":
                ecg.status, ecg.error = "pending", None
        self._dispatcher.enqueue("classify_ecg", ecg_id, bulk=bulk)

    def submit_new(self, ecg_id: str) -> None:
        """:meth:`submit` for an ECG the caller has just stored (``EcgInfo.created``): it has
        no result and no job of its own yet, so only the job row is written (one statement,
        one commit); a concurrent :meth:`submit` of the same ECG is settled by the job's
        unique key, as in :meth:`submit`. Interactive (hook calls, uploads)."""
        with self._sessions.begin() as session:
            inserted = insert_ignore(
                session,
                JobRow.__table__,  # type: ignore[arg-type]
                queued_job(ecg_id, self.model_version, utcnow()),
                ("kind", "ecg_id", "model_version"),
            )
        if inserted:
            self._dispatcher.enqueue("classify_ecg", ecg_id, bulk=False)

    def submit_new_many(self, ecg_ids: Sequence[str], *, bulk: bool = False) -> None:
        """:meth:`submit_new` for ECGs the caller has just stored (a folder ingest's group):
        one insert of their job rows, no lookups; those whose row a concurrent submit
        inserted first are left to it."""
        ids = list(dict.fromkeys(ecg_ids))
        if not ids:
            return
        version, now = self.model_version, utcnow()
        with self._sessions.begin() as session:
            inserted = insert_ignore_many(
                session,
                JOBS,
                [queued_job(ecg_id, version, now) for ecg_id in ids],
                ("kind", "ecg_id", "model_version"),
                returning="ecg_id",
            )
        for ecg_id in ids:
            if ecg_id in inserted:
                self._dispatcher.enqueue("classify_ecg", ecg_id, bulk=bulk)

    def submit_many(self, ecg_ids: Sequence[str], *, bulk: bool = False) -> None:
        """:meth:`submit` for many ECGs: three queries and one commit, not a few each."""
        ids = list(dict.fromkeys(ecg_ids))
        if not ids:
            return
        version = self.model_version
        stale = utcnow() - timedelta(seconds=self.settings.jobs.job_stale_after_s)
        done = self.classified(ids, version)
        queue: set[str] = set()
        with self._sessions.begin() as session:
            ecgs = {
                row.id: row
                for row in session.scalars(select(EcgRow).where(EcgRow.id.in_(ids))).all()
            }
            jobs = {
                row.ecg_id: row
                for row in session.scalars(
                    select(JobRow).where(
                        JobRow.kind == "classify",
                        JobRow.ecg_id.in_(ids),
                        JobRow.model_version == version,
                    )
                ).all()
            }
            fresh: list[str] = []  # no job row yet: inserted together below
            for ecg_id in ids:
                if ecg_id in done:
                    continue
                if ecg_id not in ecgs:
                    raise KeyError(f"no ECG with id {ecg_id}")
                job = jobs.get(ecg_id)
                if job is None:
                    fresh.append(ecg_id)
                    continue
                if job.state in ("queued", "running") and job.updated_at > stale:
                    continue
                job.state, job.error, job.updated_at = "queued", None, utcnow()
                queue.add(ecg_id)
            now = utcnow()
            # One statement for the new job rows; one another submit inserted first is its
            # to queue (the unique key settles the race, as in submit).
            queue |= insert_ignore_many(
                session,
                JobRow.__table__,  # type: ignore[arg-type]
                [queued_job(ecg_id, version, now) for ecg_id in fresh],
                ("kind", "ecg_id", "model_version"),
                returning="ecg_id",
            )
            for ecg_id in queue:
                ecg = ecgs[ecg_id]
                if ecg.status == "failed":
                    ecg.status, ecg.error = "pending", None
        for ecg_id in (i for i in ids if i in queue):
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
            mark_job(session, kind, ecg_id, model_version, state, error)

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
        inserted = ecg_id in self.store_results([(ecg_id, result)])
        if notify:
            self.notify([ecg_id])
        return inserted

    def store_results(
        self, results: Sequence[tuple[str, ClassificationResult]], *, hand_over: bool = True
    ) -> set[str]:
        """:meth:`store_result` for a batch, in one transaction; the ids this call stored.

        Waiters are not woken: the caller appends the batch's audit entries, then calls
        :meth:`notify` (a result is never visible before its audit entry is written).
        ``hand_over=False`` (bulk work, whose results nobody waits for) keeps them out of the
        hand-over to waiters: 128 held results are ~10^5 long-lived objects that every full
        garbage collection walked; a waiter that comes anyway reads the row.
        """
        stored: set[str] = set()
        if not results:
            return stored
        now = utcnow()
        rows: list[dict[str, Any]] = []
        parts: dict[str, dict[str, Any]] = {}
        for ecg_id, result in results:
            split = self._codec.split(result)
            if split is not None and split.digest not in self._parts_written:
                parts[split.digest] = {
                    "digest": split.digest,
                    "body": split.body,
                    "created_at": now,
                }
            rows.append(
                {
                    "ecg_id": ecg_id,
                    "model_version": result.model_version,
                    "acceptable": result.quality.acceptable,
                    "result": result.to_dict() if split is None else split.row,
                    "parts_digest": None if split is None else split.digest,
                    "created_at": now,
                }
            )
        with self._sessions.begin() as session:
            # Parts first (content-addressed: whoever wrote them first, they are the same).
            insert_ignore_many(
                session,
                ResultPartRow.__table__,  # type: ignore[arg-type]
                list(parts.values()),
                ("digest",),
                returning="digest",
            )
            stored = insert_ignore_many(
                session,
                ResultRow.__table__,  # type: ignore[arg-type]
                rows,
                ("ecg_id", "model_version"),
                returning="ecg_id",
            )
            for status in ("done", "rejected"):
                ids = [
                    ecg_id for ecg_id, r in results if r.quality.acceptable == (status == "done")
                ]
                if ids:
                    session.execute(
                        update(EcgRow)
                        .where(EcgRow.id.in_(ids))
                        .values(status=status, error=None, updated_at=now)
                    )
            for version in {r.model_version for _, r in results}:
                ids = [ecg_id for ecg_id, r in results if r.model_version == version]
                mark_jobs(session, "classify", ids, version, "done")
        self._parts_written.update(parts)
        if self.runs_here and hand_over:  # committed: a waiter here may take them as they are
            for ecg_id, result in results:
                if ecg_id in stored:
                    self._fresh.put(
                        (ecg_id, result.model_version),
                        StoredResult(ecg_id, result.model_version, result, now),
                    )
        return stored

    def mark_jobs(self, kind: str, ecg_ids: Sequence[str], model_version: str, state: str) -> None:
        """:meth:`mark_job` for many ECGs in one transaction."""
        if ecg_ids:
            with self._sessions.begin() as session:
                mark_jobs(session, kind, ecg_ids, model_version, state)

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
            mark_job(session, "classify", ecg_id, model_version, "failed", error[:2000])
        if notify:
            self.notify([ecg_id])
