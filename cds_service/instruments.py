"""Process-wide Prometheus instruments that the work itself updates (a leaf module: it
imports nothing of the service, so the audit trail and the job code can use it).
:mod:`cds_service.metrics` registers them with each app and serves them."""

from __future__ import annotations

from prometheus_client import Histogram

#: Seconds; from a cached hook answer (ms) to a slow batch.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

CLASSIFICATION_SECONDS = Histogram(
    "ecg_cds_classification_seconds",
    "Model time per ECG (quality gate, measurements, scoring), in this process.",
    buckets=LATENCY_BUCKETS,
    registry=None,
)
AUDIT_APPEND_SECONDS = Histogram(
    "ecg_cds_audit_append_seconds",
    "Time to append one audit transaction (one or more entries) to the hash chain.",
    buckets=LATENCY_BUCKETS,
    registry=None,
)
