"""Prometheus metrics (``GET /metrics``), with prometheus-client and
prometheus-fastapi-instrumentator.

* HTTP: ``http_requests_total{handler,method,status}`` and the latency histogram
  ``http_request_duration_seconds{handler,method}``, by route template (``/ecgs/{ecg_id}``,
  never an id), unmatched paths grouped as ``none``.
* Jobs: ``ecg_cds_jobs{kind,state}`` read from the jobs table at scrape time (queued,
  running, done, failed: the same numbers in embedded and distributed mode).
* ``ecg_cds_classification_seconds`` (per ECG, in this process), ``ecg_cds_audit_append_seconds``
  (one audit transaction), ``ecg_cds_model_info{model_version}`` once the model is loaded.

Each app has its own registry, so several apps in one process (tests) never collide; the
process-wide histograms are registered into each. With several web processes
(``serve --workers``) each process answers for itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cds_service.instruments import AUDIT_APPEND_SECONDS, CLASSIFICATION_SECONDS

log = logging.getLogger(__name__)

JOB_STATES = ("queued", "running", "done", "failed")


class RuntimeCollector(Collector):
    """Numbers read at scrape time from the app's runtime: jobs by state, model version."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        runtime: Any = getattr(self._app.state, "runtime", None)
        jobs = GaugeMetricFamily(
            "ecg_cds_jobs", "Background jobs by kind and state.", labels=["kind", "state"]
        )
        model = GaugeMetricFamily(
            "ecg_cds_model_info", "The loaded model (1 once loaded).", labels=["model_version"]
        )
        if runtime is not None:
            for (kind, state), count in _job_counts(runtime).items():
                jobs.add_metric([kind, state], count)
            loaded = runtime._classifier
            if loaded is not None:
                model.add_metric([loaded.model_version], 1.0)
        yield jobs
        yield model


def _job_counts(runtime: Any) -> dict[tuple[str, str], int]:
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from cds_service.storage.tables import JobRow

    counts = {(kind, state): 0 for kind in ("classify", "annotate") for state in JOB_STATES}
    try:
        with runtime.session_factory() as session:
            rows = session.execute(
                select(JobRow.kind, JobRow.state, func.count()).group_by(JobRow.kind, JobRow.state)
            ).all()
    except SQLAlchemyError as exc:  # a scrape must not fail because the database is down
        log.warning("metrics: cannot count jobs (%s)", type(exc).__name__)
        return {}
    for kind, state, count in rows:
        counts[(str(kind), str(state))] = int(count)
    return counts


def install_metrics(app: FastAPI) -> None:
    """Instrument ``app`` and add ``GET /metrics``."""
    from prometheus_fastapi_instrumentator import Instrumentator

    registry = CollectorRegistry()
    for histogram in (CLASSIFICATION_SECONDS, AUDIT_APPEND_SECONDS):
        registry.register(histogram)
    registry.register(RuntimeCollector(app))
    Instrumentator(
        should_group_status_codes=False,
        should_group_untemplated=True,
        excluded_handlers=["/metrics"],
        registry=registry,
    ).instrument(app)
    app.state.metrics_registry = registry

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (text exposition format)",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
