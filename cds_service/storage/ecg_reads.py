"""Reading stored ECGs back: their rows, their original bytes re-parsed, and the queries
the API and the commands page through (by patient, source, status, time, feedback, score).

Split from :mod:`cds_service.storage.ecgs` (which accepts and stores): :class:`EcgReads` is
the base of :class:`cds_service.storage.ecgs.EcgStore` and holds nothing of its own.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import TextClause, exists, select, text
from sqlalchemy.orm import Session, sessionmaker

from adapters import Ecg, EcgFormatError, load_ecg
from cds_service.settings import Settings
from cds_service.storage import bundle
from cds_service.storage.jobs import JobLedger
from cds_service.storage.records import EcgInfo, StoredResult
from cds_service.storage.tables import EcgBlobRow, EcgRow, FeedbackRow


class EcgReads:
    """The read side of the ECG store (set up by :class:`~cds_service.storage.ecgs.EcgStore`)."""

    settings: Settings
    _sessions: sessionmaker[Session]
    _jobs: JobLedger

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
                return load_ecg(
                    folder / header,
                    name=name,
                    max_bytes=self.settings.max_ecg_bytes,
                    limits=self.settings.decode_limits,
                )
        return load_ecg(
            data,
            fmt,
            name=name or ecg_id,
            max_bytes=self.settings.max_ecg_bytes,
            limits=self.settings.decode_limits,
        )

    def original_bytes(self, ecg_id: str) -> tuple[bytes, str] | None:
        """The stored blob and its container (``raw`` or ``zip``), e.g. for attachments."""
        with self._sessions() as session:
            row = session.get(EcgRow, ecg_id)
            blob = session.get(EcgBlobRow, ecg_id)
            return (blob.data, row.container) if row and blob else None

    def patients(self, ecg_ids: Sequence[str]) -> dict[str, str | None]:
        """The patient reference of each stored ECG among ``ecg_ids`` (unknown ids absent)."""
        if not ecg_ids:
            return {}
        with self._sessions() as session:
            rows = session.execute(
                select(EcgRow.id, EcgRow.patient_ref).where(EcgRow.id.in_(list(ecg_ids)))
            ).all()
        return {ecg_id: patient for ecg_id, patient in rows}

    def ids_matching(
        self,
        *,
        patient_ref: str | None = None,
        source_prefix: str | None = None,
        after_id: str | None = None,
        limit: int | None = None,
    ) -> list[str]:
        """Ids of stored ECGs of a patient and/or from under a source URI prefix, in id order;
        ``after_id`` and ``limit`` page through them."""
        query = select(EcgRow.id).order_by(EcgRow.id)
        if patient_ref is not None:
            query = query.where(EcgRow.patient_ref == patient_ref)
        if source_prefix is not None:
            query = query.where(EcgRow.source_uri.startswith(source_prefix, autoescape=True))
        if after_id is not None:
            query = query.where(EcgRow.id > after_id)
        if limit is not None:
            query = query.limit(limit)
        with self._sessions() as session:
            return list(session.scalars(query).all())

    def list_ecgs(
        self,
        *,
        patient_ref: str | None = None,
        status: str | None = None,
        source_prefix: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        with_feedback: bool | None = None,
        scored: str | None = None,
        min_probability: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[tuple[EcgInfo, StoredResult | None]]:
        """Newest first, with each ECG's result (see :meth:`JobLedger.result`).

        ``since``/``until`` bound the time received (``until`` excluded); ``with_feedback``
        keeps only ECGs with (True) or without (False) any feedback stored. ``scored`` and
        ``min_probability`` keep ECGs with a stored result that scores that label (or, without
        ``scored``, any label) at or above that probability: any model version's result, so
        a caller judging the current result checks it again.
        """
        query = select(EcgRow).order_by(EcgRow.created_at.desc(), EcgRow.id)
        if patient_ref is not None:
            query = query.where(EcgRow.patient_ref == patient_ref)
        if status is not None:
            query = query.where(EcgRow.status == status)
        if source_prefix is not None:
            query = query.where(EcgRow.source_uri.startswith(source_prefix, autoescape=True))
        if since is not None:
            query = query.where(EcgRow.created_at >= since)
        if until is not None:
            query = query.where(EcgRow.created_at < until)
        if with_feedback is not None:
            has_feedback = exists().where(FeedbackRow.ecg_id == EcgRow.id)
            query = query.where(has_feedback if with_feedback else ~has_feedback)
        if scored is not None or min_probability is not None:
            query = query.where(self._has_score(scored, min_probability))
        query = query.limit(max(1, min(limit, 1000))).offset(max(0, offset))
        with self._sessions() as session:
            infos = [EcgInfo.from_row(row) for row in session.scalars(query).all()]
        results = self._jobs.results([info.id for info in infos])
        return [(info, results.get(info.id)) for info in infos]

    def _has_score(self, label_id: str | None, min_probability: float | None) -> TextClause:
        """SQL: some stored result of the ECG has a score (of ``label_id``) >= the minimum.

        Scores live inside the result's JSON, so the JSON array is expanded in SQL, with each
        database's own function (SQLite ``json_each``, PostgreSQL ``json_array_elements``).
        """
        bind = self._sessions.kw["bind"]
        params: dict[str, object] = {}
        if bind.dialect.name == "postgresql":
            elements = "json_array_elements(r.result -> 'scores') AS s"
            label, probability = "s ->> 'label_id'", "CAST(s ->> 'probability' AS FLOAT)"
        else:
            elements = "json_each(r.result, '$.scores') AS s"
            label = "json_extract(s.value, '$.label_id')"
            probability = "json_extract(s.value, '$.probability')"
        conditions = ["r.ecg_id = ecgs.id"]
        if label_id is not None:
            conditions.append(f"{label} = :scored_label")
            params["scored_label"] = label_id
        if min_probability is not None:
            conditions.append(f"{probability} >= :scored_min")
            params["scored_min"] = float(min_probability)
        sql = f"EXISTS (SELECT 1 FROM results AS r, {elements} WHERE {' AND '.join(conditions)})"
        return text(sql).bindparams(**params)
