"""Reading results back and waiting for them: the read side of the job ledger.

:meth:`ResultReads.results` picks each ECG's result (the current model version's, else the
newest) and decodes it once (stored rows never change). Waiting never polls a broker: in
embedded mode the job runs in this process and :meth:`ResultReads.notify` wakes waiters
through a condition variable; in distributed mode the result appears in the shared database
and is re-read every ``jobs.result_poll_interval_s`` (:mod:`cds_service.storage.waits`).

Split from :mod:`cds_service.storage.jobs` (submit, store, mark), whose
:class:`~cds_service.storage.jobs.JobLedger` is this class plus the writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from cds_service.jobs.dispatch import Dispatcher
from cds_service.lru import BoundedLru
from cds_service.settings import Settings
from cds_service.storage.compact import Parts, ResultCodec, join
from cds_service.storage.records import StoredResult
from cds_service.storage.tables import EcgRow, ResultPartRow, ResultRow
from cds_service.storage.waits import ResultWaits

#: Which result rows the ECGs have (built once: a hook call runs it on every call).
_RESULT_KEYS = (
    select(ResultRow.id, ResultRow.ecg_id, ResultRow.model_version)
    .where(ResultRow.ecg_id.in_(bindparam("ids", expanding=True)))
    .order_by(ResultRow.created_at)
)

#: Statuses after which no result is coming for this ECG without a new submit.
_FINAL_WITHOUT_RESULT = {"failed"}


class ResultReads:
    """Results of classification, read and waited for. Thread-safe."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        dispatcher: Dispatcher,
        model_version: Callable[[], str],
    ) -> None:
        self.settings = settings
        self._sessions = session_factory
        self._engine: Engine = session_factory.kw["bind"]
        self._dispatcher = dispatcher
        self._model_version = model_version
        self._waits = ResultWaits()
        #: Decoded results by (row id, ECG id, model version): rows are never updated.
        self._decoded: BoundedLru[tuple[int, str, str], StoredResult] = BoundedLru(4_096)
        #: Results this process's jobs just stored, by (ECG id, model version), handed to the
        #: waiting call so it need not read and decode the row it waits for (embedded mode;
        #: the pair is unique, so the row the key query finds is the one stored here). Taken
        #: out when used; small, because a bulk ingest's results are never waited for.
        self._fresh: BoundedLru[tuple[str, str], StoredResult] = BoundedLru(128)
        #: Decoded shared parts of compact result rows, by digest (storage.compact).
        self._codec = ResultCodec()

    @property
    def runs_here(self) -> bool:
        """True when classification jobs run in this process (embedded mode)."""
        return self._dispatcher.in_process

    @property
    def model_version(self) -> str:
        """The version of the model this process classifies with (loads it on first use)."""
        return self._model_version()

    def result(self, ecg_id: str) -> StoredResult | None:
        """The result of the current model version, else the newest of any version, else None."""
        return self.results([ecg_id]).get(ecg_id)

    def results(self, ecg_ids: Sequence[str]) -> dict[str, StoredResult]:
        """:meth:`result` of several ECGs. Which row is chosen is read every time; its decoded
        form is kept (a stored result never changes), so a repeat call decodes nothing."""
        if not ecg_ids:
            return {}
        version = self.model_version
        with self._engine.connect() as conn:  # Core: a hook call runs this on every call
            rows = conn.execute(_RESULT_KEYS, {"ids": list(ecg_ids)}).all()
        best: dict[str, tuple[int, str, str]] = {}
        for row_id, ecg_id, row_version in rows:  # ascending: later rows win unless the
            held = best.get(ecg_id)  # current version is held
            if held is None or held[2] != version:
                best[ecg_id] = (row_id, ecg_id, row_version)
        out: dict[str, StoredResult] = {}
        for ecg_id, key in best.items():
            hit = self._decoded.get(key)
            if hit is None:
                hit = self._fresh.pop((ecg_id, key[2]))
                if hit is not None:
                    self._decoded.put(key, hit)
            if hit is not None:
                out[ecg_id] = hit
        missing = [key[0] for ecg_id, key in best.items() if ecg_id not in out]
        if missing:
            with self._sessions() as session:
                found = session.scalars(select(ResultRow).where(ResultRow.id.in_(missing))).all()
                parts = self._parts(session, {r.parts_digest for r in found if r.parts_digest})
            for row in found:
                result = join(row.result, parts.get(row.parts_digest or ""))
                stored = StoredResult(row.ecg_id, row.model_version, result, row.created_at)
                self._decoded.put((row.id, row.ecg_id, row.model_version), stored)
                out[row.ecg_id] = stored
        return out

    def _parts(self, session: Session, digests: set[str]) -> dict[str, Parts]:
        """The decoded ``result_parts`` of ``digests``: kept ones, the others read at once."""
        found: dict[str, Parts] = {}
        for digest in digests:
            hit = self._codec.known_parts(digest)
            if hit is not None:
                found[digest] = hit
        unknown = digests - set(found)
        if unknown:
            for row in session.scalars(
                select(ResultPartRow).where(ResultPartRow.digest.in_(sorted(unknown)))
            ):
                found[row.digest] = self._codec.add_parts(row.digest, row.body)
        return found

    def has_result(self, ecg_id: str, model_version: str) -> bool:
        with self._sessions() as session:
            found = session.scalar(
                select(ResultRow.id).where(
                    ResultRow.ecg_id == ecg_id, ResultRow.model_version == model_version
                )
            )
            return found is not None

    def classified(self, ecg_ids: Sequence[str], model_version: str) -> set[str]:
        """Those of ``ecg_ids`` that have a result of ``model_version``."""
        if not ecg_ids:
            return set()
        with self._sessions() as session:
            return set(
                session.scalars(
                    select(ResultRow.ecg_id).where(
                        ResultRow.ecg_id.in_(list(ecg_ids)),
                        ResultRow.model_version == model_version,
                    )
                ).all()
            )

    def notify(self, ecg_ids: Iterable[str] | None = None) -> None:
        """Wake this process's waits for ``ecg_ids`` (see :meth:`ResultWaits.notify`)."""
        self._waits.notify(ecg_ids)

    def wait(self, ecg_ids: Sequence[str], timeout_s: float) -> dict[str, StoredResult | None]:
        """Results for ``ecg_ids``, waiting at most ``timeout_s`` for the missing ones.

        Returns early when every id has a result or has failed. Missing ones map to None.
        """
        found: dict[str, StoredResult] = {}

        def fetch(pending: set[str]) -> set[str]:
            found.update(self.results(sorted(pending)))
            return set(found)

        self._wait(ecg_ids, timeout_s, fetch)
        return {ecg_id: found.get(ecg_id) for ecg_id in dict.fromkeys(ecg_ids)}

    def wait_finished(self, ecg_ids: Sequence[str], timeout_s: float) -> dict[str, bool]:
        """:meth:`wait` for a caller that needs no result, only which ECGs are finished:
        id -> True (a result of any version is stored) or False (failed); unfinished ids
        are absent. Reads ids only, not the results' JSON (``ecg-cds ingest`` of thousands)."""
        return self._wait(ecg_ids, timeout_s, self._with_result)

    def _with_result(self, ecg_ids: set[str]) -> set[str]:
        with self._sessions() as session:
            return set(
                session.scalars(
                    select(ResultRow.ecg_id).where(ResultRow.ecg_id.in_(sorted(ecg_ids)))
                ).all()
            )

    def _wait(
        self, ecg_ids: Sequence[str], timeout_s: float, fetch: Callable[[set[str]], set[str]]
    ) -> dict[str, bool]:
        poll_s = None if self._dispatcher.in_process else self.settings.jobs.result_poll_interval_s
        return self._waits.until(ecg_ids, timeout_s, fetch, self._failed, poll_s)

    def _failed(self, ecg_ids: set[str]) -> set[str]:
        with self._sessions() as session:
            return set(
                session.scalars(
                    select(EcgRow.id).where(
                        EcgRow.id.in_(list(ecg_ids)), EcgRow.status.in_(_FINAL_WITHOUT_RESULT)
                    )
                ).all()
            )
