"""All service settings in one place.

Values come, in increasing priority, from defaults, a settings file (``ECG_CDS_SETTINGS_FILE``,
JSON or YAML), and environment variables prefixed ``ECG_CDS_`` (nested with ``__``, e.g.
``ECG_CDS_AUTH__MAX_TOKEN_LIFETIME_S=900``). The defaults are the embedded mode: SQLite,
in-process jobs, no broker.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from adapters.limits import DecodeLimits


class TrustedIssuer(BaseModel):
    """An EHR allowed to call the hooks: its ``iss`` and where its public keys are."""

    iss: str
    #: JWKS URLs this issuer may name in ``jku`` (and that are fetched when no jku is sent).
    jwks_urls: list[str] = Field(default_factory=list)
    #: A local JWKS file (JSON), for EHRs that exchange keys out of band.
    jwks_file: Path | None = None


class AuthSettings(BaseModel):
    trusted_issuers: list[TrustedIssuer] = Field(default_factory=list)
    #: Exact ``aud`` base, e.g. ``https://cds.example.org``; the service path is appended.
    #: Empty: ``public_base_url``. Never derived from the request (Host, X-Forwarded-*).
    audience_base_url: str | None = None
    clock_skew_s: int = 60
    max_token_lifetime_s: int = 3600
    jwks_cache_s: int = 300
    #: Bearer tokens accepted by the audit endpoints (separate from the EHR hook JWTs).
    audit_tokens: list[str] = Field(default_factory=list)
    #: Bearer tokens accepted by ``POST /ecgs`` and ``GET /ecgs/...`` (no anonymous writes).
    ingest_tokens: list[str] = Field(default_factory=list)
    #: Refused sign-ins per source address are counted in windows this long: the first of a
    #: window is audited in full, the rest as one entry with a count when it closes.
    #: 0 turns aggregation and throttling off.
    failure_window_s: float = 60.0
    #: Refused bearer credentials (hook JWTs, audit/ingest tokens) from one source within a
    #: window before it is answered 429 until the window ends.
    max_failures_per_source: int = 20
    #: The same for the viewer's sign-in form (a person typing a token).
    max_login_failures: int = 5


class FhirSettings(BaseModel):
    #: Base URLs the service may call (FHIR servers named in hook calls, write-back target).
    allowed_servers: list[str] = Field(default_factory=list)
    #: Base URLs of DICOMweb services the service may call.
    allowed_dicomweb: list[str] = Field(default_factory=list)
    #: Where ingest writes Observation/DiagnosticReport/Provenance; None: no write-back.
    writeback_server: str | None = None
    writeback_token: str | None = None
    timeout_s: float = 10.0


class JobSettings(BaseModel):
    #: ``memory://`` with ``always_eager`` semantics is never used for the hook path;
    #: embedded mode runs jobs in an in-process worker pool.
    mode: Literal["embedded", "distributed"] = "embedded"
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str | None = None
    embedded_threads: int = 1
    #: How long a hook waits for new classifications before answering with what it has.
    hook_wait_budget_s: float = 0.35
    task_time_limit_s: int = 120
    task_soft_time_limit_s: int = 100
    worker_max_memory_per_child_kb: int = 1_500_000
    max_retries: int = 5
    #: Broker queue the service sends to and workers consume (one per deployment).
    queue: str = "ecg-cds"
    #: Worker processes per ``ecg-cds worker`` (default: the machine's core count).
    worker_concurrency: int | None = None
    #: Torch threads per worker process: 1 with one process per core is fastest.
    torch_threads: int = 1
    #: Redis/SQS: an unacknowledged task is redelivered after this long (a worker that died
    #: mid-task). Must exceed the longest task; tests shorten it.
    visibility_timeout_s: int = 3600
    #: Distributed mode: how often a waiting hook re-reads the database for new results.
    result_poll_interval_s: float = 0.015
    #: A queued/running job older than this is presumed lost and may be submitted again.
    job_stale_after_s: int = 900
    #: ECGs per chunk of a backfill task.
    backfill_chunk_size: int = 64
    #: Chunks of one backfill queued at once: about twice the worker processes, so every
    #: process has one and the next is waiting (more only fills the broker).
    backfill_in_flight: int = 16
    #: Fault-injection for tests only (a task sleeps this long before classifying). Keep 0.
    debug_task_delay_s: float = 0.0


class CardSettings(BaseModel):
    """Clinical policy for cards (and the reports written back): when a score is a finding,
    when a QTc alerts. Which labels are critical, and their own critical thresholds, and
    which count as QT risk are the label catalog's (``severity``, ``critical_threshold``,
    ``qt_risk``)."""

    model_config = ConfigDict(frozen=True)

    #: Calibrated probability at or above which a label is reported as a finding.
    finding_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    #: A measured QTc at or above this makes a card critical; at or above the warning
    #: value, a warning (milliseconds).
    critical_qtc_ms: float = Field(default=500.0, gt=0.0)
    warning_qtc_ms: float = Field(default=480.0, gt=0.0)
    #: Findings listed in a card's detail.
    max_findings: int = Field(default=5, ge=1)
    #: Whether a normal ECG still gets an (info) card on patient-view.
    show_normal: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ECG_CDS_", env_nested_delimiter="__", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = 8080
    #: Public base URL (for card links, model-card link, audiences).
    public_base_url: str = "http://127.0.0.1:8080"
    data_dir: Path = Path("var")
    database_url: str | None = None  # default: sqlite:///{data_dir}/ecg-cds.db
    model_dir: Path | None = None  # default: the shipped weights
    catalog_file: Path | None = None  # default: the shipped label catalog
    #: The one limit on a request body (hook calls and ECG uploads alike): 413 when over.
    max_request_bytes: int = 32 * 1024 * 1024
    #: The limit on one ECG file read from disk, a folder ingest, a FHIR attachment or PACS.
    max_ecg_bytes: int = 64 * 1024 * 1024
    #: What one decoded ECG may hold, checked against the file's declared shape and
    #: decompressed size before anything is allocated (413 when over).
    max_ecg_leads: int = 64
    max_ecg_samples: int = 5_000_000  # leads x samples, all leads together
    max_ecg_decoded_bytes: int = 64 * 1024 * 1024
    #: JSON bodies nested deeper than this are refused (400) before they are parsed.
    max_json_depth: int = 64
    cors_origins: list[str] = Field(default_factory=list)
    #: Addresses of reverse proxies whose ``X-Forwarded-For``/``-Proto`` headers are believed
    #: (the client address used for audit and throttling). Empty: forwarded headers ignored.
    trusted_proxies: list[str] = Field(default_factory=list)
    #: Secret for signed viewer links; generated into data_dir on first start when unset.
    link_secret: str | None = None
    link_ttl_s: int = 900
    #: SMART on FHIR client id of the viewer, as registered with the EHR. When set, cards also
    #: carry a ``smart`` link that launches ``/viewer/launch`` (EHR launch, PKCE, public client)
    #: from the FHIR servers in ``fhir.allowed_servers``. None: signed links only.
    smart_client_id: str | None = None
    log_level: str = "INFO"
    #: Load the model in the background at start-up so the first hook call finds it ready.
    preload_model: bool = True

    auth: AuthSettings = Field(default_factory=AuthSettings)
    fhir: FhirSettings = Field(default_factory=FhirSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    cards: CardSettings = Field(default_factory=CardSettings)

    @property
    def decode_limits(self) -> DecodeLimits:
        """The ECG size limits in the form every reader in :mod:`adapters` checks."""
        return DecodeLimits(
            max_ecg_leads=self.max_ecg_leads,
            max_ecg_samples=self.max_ecg_samples,
            max_ecg_decoded_bytes=self.max_ecg_decoded_bytes,
        )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ecg-cds.db').resolve()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _SettingsFileSource(settings_cls))


class _SettingsFileSource(PydanticBaseSettingsSource):
    """Reads the file named by ``ECG_CDS_SETTINGS_FILE`` (JSON or YAML)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        import os

        path = os.environ.get("ECG_CDS_SETTINGS_FILE")
        if not path:
            return {}
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        return dict(data or {})


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (a FastAPI dependency; tests build their own ``Settings``)."""
    return Settings()
