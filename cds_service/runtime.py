"""What a running process holds: settings, stores, audit trail, job dispatch, classifier.

One :class:`Runtime` per process: the web app keeps it in ``app.state.runtime``, each Celery
worker process builds one after the fork, ``ecg-cds ingest`` builds one for its run.
``Runtime.start`` brings the database to the current schema (alembic) first.

``jobs.mode`` picks how submitted jobs run, and nothing else differs:

* ``embedded`` (default): an in-process thread pool; nothing to install or start.
* ``distributed``: a broker (Redis or RabbitMQ) and ``ecg-cds worker`` processes.
"""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Literal

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cds_service.audit import AuditTrail
from cds_service.jobs.dispatch import CeleryDispatcher, Dispatcher, EmbeddedDispatcher
from cds_service.jobs.work import Classifier, run_task
from cds_service.settings import Settings
from cds_service.storage.backfills import BackfillRuns
from cds_service.storage.base import make_engine, make_session_factory, private_directory
from cds_service.storage.cards import CardStore
from cds_service.storage.ecgs import EcgStore
from cds_service.storage.jobs import JobLedger
from cds_service.storage.migrate import upgrade
from cds_service.storage.state import StateStore
from cds_service.storage.tables import utcnow

log = logging.getLogger(__name__)

Role = Literal["web", "worker", "cli"]

_heap_frozen = False
_heap_lock = threading.Lock()


def freeze_heap() -> None:
    """Put every object alive now out of the cyclic garbage collector's reach, once per process.

    A loaded model leaves ~345 000 objects the collector tracks (torch modules, catalog,
    criteria, text cache), alive as long as the process. Each full (generation 2) collection
    walked all of them: ~130 ms on an idle core, 180-390 ms on shared ones, about once per
    200-400 ECGs of an embedded ingest (each result is thousands of small objects), i.e.
    0.5-2 ms of the main process per ECG (issue 11). Frozen, they are skipped; objects made
    later are collected as before, and frozen ones are still freed when no longer referenced
    (only a reference cycle among them would stay). Garbage is collected first, so no
    unreachable cycle is frozen. Processes forked later (the signal-work pool) inherit it.
    """
    global _heap_frozen
    with _heap_lock:
        if _heap_frozen:
            return
        _heap_frozen = True
        gc.collect()
        gc.freeze()


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    audit: AuditTrail
    dispatcher: Dispatcher
    jobs: JobLedger = field(init=False)
    ecgs: EcgStore = field(init=False)
    cards: CardStore = field(init=False)
    state: StateStore = field(init=False)
    backfills: BackfillRuns = field(init=False)
    role: Role = "web"
    started_at: datetime = field(default_factory=utcnow)
    _classifier: Classifier | None = None
    _classifier_lock: threading.Lock = field(default_factory=threading.Lock)
    _warming: threading.Thread | None = None

    @classmethod
    def start(
        cls,
        settings: Settings,
        *,
        role: Role = "web",
        classifier: Classifier | None = None,
        migrate: bool = True,
        resume: bool = True,
    ) -> Runtime:
        """Open storage (migrating it), set up job dispatch for ``settings.jobs.mode``.

        ``classifier`` lets a caller share an already-loaded model; by default it is loaded
        from ``settings.model_dir`` on first use. In embedded mode, ECGs left pending by a
        previous run are resubmitted in the background (``resume``).
        """
        private_directory(settings.data_dir)  # the database and the link secret live here
        engine = make_engine(settings.resolved_database_url)
        if migrate:
            upgrade(engine)
        session_factory = make_session_factory(engine)
        dispatcher: Dispatcher
        if settings.jobs.mode == "embedded":
            dispatcher = EmbeddedDispatcher(
                threads=settings.jobs.embedded_threads,
                max_retries=settings.jobs.max_retries,
                max_batch=settings.jobs.backfill_chunk_size,
                late_after_s=settings.jobs.hook_wait_budget_s,
            )
        else:
            from cds_service.jobs.celery_app import make_celery

            dispatcher = CeleryDispatcher(make_celery(settings), settings.jobs.queue)
        runtime = cls(
            settings=settings,
            engine=engine,
            session_factory=session_factory,
            audit=AuditTrail(session_factory),
            dispatcher=dispatcher,
            role=role,
            _classifier=classifier,
        )
        runtime.jobs = JobLedger(
            settings, session_factory, dispatcher, model_version=lambda: runtime.model_version
        )
        runtime.ecgs = EcgStore(settings, session_factory, runtime.jobs, audit=runtime.audit)
        runtime.cards = CardStore(session_factory)
        runtime.state = StateStore(session_factory)
        runtime.backfills = BackfillRuns(session_factory)
        if classifier is not None:  # loaded by the caller: what lives on is all there now
            freeze_heap()
        # Started once the runtime exists: embedded jobs run the task bodies against it.
        dispatcher.start(partial(run_task, runtime))
        if resume and settings.jobs.mode == "embedded" and role != "worker":
            threading.Thread(target=runtime._resume_pending, name="ecg-resume", daemon=True).start()
        return runtime

    @property
    def classifier(self) -> Classifier:
        """The model, loaded once per process on first use."""
        if self._classifier is None:
            with self._classifier_lock:
                if self._classifier is None:
                    self._classifier = self._load_classifier()
                    freeze_heap()
        return self._classifier

    def _load_classifier(self) -> Classifier:
        from models.classifier import ZeroShotClassifier

        classifier: Classifier
        if self.role == "worker":
            # Workers run one process per core, so one torch thread each.
            classifier = ZeroShotClassifier.from_pretrained(
                self.settings.model_dir,
                threads=max(1, self.settings.jobs.torch_threads),
                site_calibration=self.settings.site_calibration,
            )
        else:  # the web process and the CLI keep the model's default thread count
            classifier = ZeroShotClassifier.from_pretrained(
                self.settings.model_dir, site_calibration=self.settings.site_calibration
            )
        log.info("model %s loaded (%s)", classifier.model_version, self.role)
        return classifier

    def warm_up_in_background(self) -> None:
        """:meth:`warm_up` in a thread of its own, started once per process however often
        this is asked (the readiness probe asks on every poll until the model is there; a
        thread per poll was a thread per request of an unauthenticated caller, each running
        the whole warm-up on cores the first of them needed)."""
        with self._classifier_lock:
            if self._warming is not None or self._classifier is not None:
                return
            self._warming = threading.Thread(target=self.warm_up, name="model-warm-up", daemon=True)
        self._warming.start()

    def warm_up(self) -> None:
        """Load the model and the delineation library now, so the first hook call is not slow."""
        try:
            classifier = self.classifier
            from models.config import EcgClipConfig
            from models.signal_work import warm_up

            config = getattr(classifier, "config", None)  # a single-ECG call works here
            warm_up(config if isinstance(config, EcgClipConfig) else None)
            # The signal-work processes too: the first burst of new ECGs must not pay for them.
            start_workers = getattr(classifier, "start_workers", None)
            if start_workers is not None:
                start_workers()
        except Exception:  # the first call will retry the load and report the error
            log.exception("model warm-up failed")

    @property
    def model_version(self) -> str:
        return self.classifier.model_version

    def _resume_pending(self) -> None:
        """Embedded mode: jobs of a previous run died with it; queue their ECGs again."""
        try:
            for ecg_id in self.jobs.pending_ids():
                self.jobs.submit(ecg_id, bulk=True, requeue_before=self.started_at)
        except Exception:
            log.exception("could not resume pending ECGs")

    def stop(self) -> None:
        """Let running jobs finish, then release the database."""
        self.dispatcher.shutdown()
        self.engine.dispose()
