"""The ECG store: accept ECGs (parse, dedupe by SHA-256, store the original bytes) and read
them back (the reads: :mod:`cds_service.storage.ecg_reads`).

Every path that brings an ECG in goes through :meth:`EcgStore.accept_bytes` and its siblings:
the upload endpoint, ``ecg-cds ingest``, the hooks. The bytes are parsed before anything is
stored, so nothing unreadable is kept; the same bytes twice are stored once. Readers never get
a waveform held from an earlier call: :meth:`EcgStore.load_ecg` re-reads the stored bytes.
The one exception is the classification job in the process that accepted the ECG: it takes
the waveform parsed from exactly the stored bytes once (:meth:`EcgStore.take_accepted`)
instead of unpacking and parsing them again, which cost as much as the first parse.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from adapters import Ecg, EcgFormatError, load_ecg, sha256_hex
from cds_service.audit import Actor, AuditRecord, AuditTrail
from cds_service.settings import Settings
from cds_service.storage import bundle
from cds_service.storage.ecg_reads import EcgReads
from cds_service.storage.incoming import (
    HandOver,
    Incoming,
    ecg_row_values,
    parse_incoming,
    read_incoming,
    text_checked,
)
from cds_service.storage.jobs import JobLedger
from cds_service.storage.records import EcgInfo
from cds_service.storage.tables import EcgBlobRow, EcgRow, utcnow
from cds_service.storage.upsert import insert_ignore_many

log = logging.getLogger(__name__)


class EcgStore(EcgReads):
    """Stored ECGs: accept (store + dedupe) and read (:class:`EcgReads`). Thread-safe; one
    per process."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        jobs: JobLedger,
        audit: AuditTrail | None = None,
    ) -> None:
        self.settings = settings
        self._sessions = session_factory
        self._jobs = jobs
        self._audit = audit
        # Only where the jobs run here: a web process in distributed mode would hold ECGs
        # that no job of its own ever takes.
        self._accepted = HandOver(max_bytes=HandOver.DEFAULT_MAX_BYTES if jobs.runs_here else 0)

    def accept_bytes(
        self,
        data: bytes,
        *,
        source_uri: str | None = None,
        patient_ref: str | None = None,
        format: str | None = None,
        actor: Actor | None = None,
        sha256: str | None = None,
    ) -> EcgInfo:
        """Store one single-file ECG (any adapter format); a known SHA-256 returns its record.

        The bytes are parsed first, so nothing unreadable is stored:
        :class:`~adapters.EcgFormatError` reaches the caller with its explanation.
        ``sha256``: the caller's digest of exactly ``data`` (a hook call has made it to look
        the ECG up), so it is not made twice.
        """
        digest = sha256 if sha256 is not None else sha256_hex(data)
        existing = self._find_by_sha(digest)
        if existing is not None:
            return self._duplicate(existing, patient_ref, actor)
        ecg = load_ecg(
            data,
            format,
            name=source_uri or "<upload>",
            max_bytes=self.settings.max_ecg_bytes,
            limits=self.settings.decode_limits,
        )
        text_checked(ecg, source_uri or "<upload>")
        return self._store(ecg, data, digest, "raw", source_uri, patient_ref, actor)

    def accept_files(
        self,
        files: Mapping[str, bytes],
        *,
        source_uri: str | None = None,
        patient_ref: str | None = None,
        actor: Actor | None = None,
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
        existing = self._find_by_sha(digest) or self._same_bundle(files, source_uri or header)
        if existing is not None:
            return self._duplicate(existing, patient_ref, actor)
        with bundle.extracted(files) as folder:
            ecg = load_ecg(
                folder / header,
                name=source_uri or header,
                max_bytes=self.settings.max_ecg_bytes,
                limits=self.settings.decode_limits,
            )
        text_checked(ecg, source_uri or header)
        return self._store(ecg, blob, digest, "zip", source_uri or header, patient_ref, actor)

    def accept_path(
        self, path: Path, *, patient_ref: str | None = None, actor: Actor | None = None
    ) -> EcgInfo:
        """Store a file from disk; a WFDB header brings its signal files along."""
        outcome = self.accept_paths([path], patient_ref=patient_ref, actor=actor)[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def accept_paths(
        self,
        paths: Sequence[Path],
        *,
        patient_ref: str | None = None,
        actor: Actor | None = None,
    ) -> list[EcgInfo | EcgFormatError | OSError]:
        """:meth:`accept_path` for a group of files: one lookup of the known digests, one
        transaction for the new ECGs, one audit append for the group. Each path gets its
        :class:`EcgInfo`, or the error that kept it out (the others are stored regardless)."""
        outcomes: list[EcgInfo | EcgFormatError | OSError | Incoming] = []
        for path in paths:
            try:
                outcomes.append(read_incoming(path, self.settings))
            except (EcgFormatError, OSError) as exc:
                outcomes.append(exc)
        items = [o for o in outcomes if isinstance(o, Incoming)]
        known = self._find_by_shas([i.digest for i in items])
        unknown = [i for i in items if i.files is not None and i.digest not in known]
        known.update(self._same_bundles([(i.digest, i.uri, i.files or {}) for i in unknown]))
        new: dict[str, tuple[Incoming, Ecg]] = {}
        for k, item in enumerate(outcomes):
            if isinstance(item, Incoming) and item.digest not in known and item.digest not in new:
                try:
                    new[item.digest] = (item, parse_incoming(item, self.settings))
                except EcgFormatError as exc:
                    outcomes[k] = exc
        created = self._store_many(list(new.values()), patient_ref)
        known.update(self._find_by_shas([d for d in new if d not in created]))  # lost races
        audit: list[AuditRecord] = []
        for k, item in enumerate(outcomes):
            if not isinstance(item, Incoming):
                continue
            info = created.pop(item.digest, None)
            if info is not None:  # the same file twice in the group: the second is a duplicate
                known[item.digest] = replace(info, created=False)
            else:
                info = known[item.digest] = self._link_patient(known[item.digest], patient_ref)
            audit.append(self._ingest_entry(info, actor, duplicate=not info.created))
            outcomes[k] = info
        if self._audit is not None:
            self._audit.record_many(audit)
        return [o for o in outcomes if not isinstance(o, Incoming)]

    def _store_many(
        self, parsed: list[tuple[Incoming, Ecg]], patient_ref: str | None
    ) -> dict[str, EcgInfo]:
        """Insert new ECGs and their bytes in one transaction; digest -> info of those this
        call inserted (a digest another writer stored meanwhile is left out)."""
        if not parsed:
            return {}
        now = utcnow()
        rows = {
            item.digest: ecg_row_values(
                ecg, item.blob, item.digest, item.container, item.uri, patient_ref, now
            )
            for item, ecg in parsed
        }
        with self._sessions.begin() as session:
            inserted = insert_ignore_many(
                session,
                EcgRow.__table__,  # type: ignore[arg-type]
                list(rows.values()),
                ("sha256",),
                returning="sha256",
            )
            blobs = [
                {"ecg_id": rows[item.digest]["id"], "data": item.blob}
                for item, _ in parsed
                if item.digest in inserted
            ]
            if blobs:  # a Core executemany: the ORM's bulk insert adds nothing for plain rows
                session.execute(insert(EcgBlobRow.__table__), blobs)  # type: ignore[arg-type]
        created: dict[str, EcgInfo] = {}
        for item, ecg in parsed:
            if item.digest in inserted:
                info = EcgInfo.from_values(rows[item.digest], created=True)
                created[item.digest] = info
                self._accepted.put(info.id, ecg)
        return created

    def _same_bundle(self, files: Mapping[str, bytes], source_uri: str) -> EcgInfo | None:
        return self._same_bundles([("", source_uri, files)]).get("")

    def _same_bundles(
        self, bundles: Sequence[tuple[str, str, Mapping[str, bytes]]]
    ) -> dict[str, EcgInfo]:
        """For each (digest, source URI, files): a bundle stored from that URI that holds
        exactly those files, i.e. the same record packed at another deflate level (see
        :mod:`cds_service.storage.bundle`) and so under another SHA-256. One indexed
        lookup for the group; stored bytes are compared only where a URI matches."""
        if not bundles:
            return {}
        with self._sessions() as session:
            rows = session.execute(
                select(EcgRow, EcgBlobRow.data)
                .join(EcgBlobRow, EcgBlobRow.ecg_id == EcgRow.id)
                .where(
                    EcgRow.source_uri.in_({uri for _, uri, _ in bundles}),
                    EcgRow.container == "zip",
                )
                .order_by(EcgRow.created_at)
            ).all()
        found: dict[str, EcgInfo] = {}
        for digest, uri, files in bundles:
            for row, blob in rows:
                if row.source_uri == uri and bundle.same_files(
                    blob, files, self.settings.max_ecg_bytes
                ):
                    found[digest] = EcgInfo.from_row(row)
                    break
        return found

    def _find_by_shas(self, digests: Sequence[str]) -> dict[str, EcgInfo]:
        if not digests:
            return {}
        with self._sessions() as session:
            rows = session.scalars(select(EcgRow).where(EcgRow.sha256.in_(set(digests)))).all()
            return {row.sha256: EcgInfo.from_row(row) for row in rows}

    def _find_by_sha(self, digest: str) -> EcgInfo | None:
        return self._find_by_shas([digest]).get(digest)

    def _store(
        self,
        ecg: Ecg,
        blob: bytes,
        digest: str,
        container: str,
        source_uri: str | None,
        patient_ref: str | None,
        actor: Actor | None,
    ) -> EcgInfo:
        now = utcnow()
        row = EcgRow(**ecg_row_values(ecg, blob, digest, container, source_uri, patient_ref, now))
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
        self._accepted.put(info.id, ecg)
        self._record_ingest(info, actor, duplicate=False)
        return info

    def _duplicate(
        self, existing: EcgInfo, patient_ref: str | None, actor: Actor | None
    ) -> EcgInfo:
        """The stored record for bytes seen before (see :meth:`_link_patient`), audited."""
        existing = self._link_patient(existing, patient_ref)
        self._record_ingest(existing, actor, duplicate=True)
        return existing

    def _link_patient(self, existing: EcgInfo, patient_ref: str | None) -> EcgInfo:
        """A patient reference given now fills one that was missing (a folder ingest first,
        the same ECG from the EHR later); a different one never overwrites it."""
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
        return existing

    def _record_ingest(self, info: EcgInfo, actor: Actor | None, *, duplicate: bool) -> None:
        if self._audit is not None:
            self._audit.record_many([self._ingest_entry(info, actor, duplicate=duplicate)])

    @staticmethod
    def _ingest_entry(info: EcgInfo, actor: Actor | None, *, duplicate: bool) -> AuditRecord:
        return AuditRecord(
            "ingest",
            actor=actor,
            patient=info.patient_ref,
            ecg_id=info.id,
            detail={"format": info.format, "sha256": info.sha256, "duplicate": duplicate},
        )

    def take_accepted(self, ecg_id: str) -> Ecg | None:
        """The ECG this process parsed when it stored ``ecg_id``, once (the classification
        job's first read); None when not held (another process stored it, or it was
        dropped, or already taken): read it with :meth:`load_ecg`."""
        return self._accepted.take(ecg_id)
