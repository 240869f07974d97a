"""All service settings in one place.

Values come, in increasing priority, from defaults, a settings file (``ECG_CDS_SETTINGS_FILE``,
JSON or YAML), and environment variables prefixed ``ECG_CDS_`` (nested with ``__``, e.g.
``ECG_CDS_AUTH__MAX_TOKEN_LIFETIME_S=900``). The defaults are the embedded mode: SQLite,
in-process jobs, no broker.

:func:`load_settings` turns every way the sources can be wrong (malformed JSON in a variable,
a missing settings file, a value of the wrong kind) into a :class:`SettingsError` whose
``problems`` are one line each, naming the variable or file to fix.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pydantic_settings
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

if TYPE_CHECKING:  # importing adapters loads every reader: not on the CLI's start path
    from adapters.limits import DecodeLimits

ENV_PREFIX = "ECG_CDS_"
SETTINGS_FILE_ENV = "ECG_CDS_SETTINGS_FILE"


def default_data_dir() -> Path:
    """Where state lives unless ``data_dir`` says otherwise: the user's data folder
    (``$XDG_DATA_HOME/ecg-cds``, else ``~/.local/share/ecg-cds``), the same whatever the
    current directory, so the service and every ``ecg-cds`` command find one database and
    one link secret."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ecg-cds"


class TrustedIssuer(BaseModel):
    """An EHR allowed to call the hooks: its ``iss`` and where its public keys are."""

    iss: str
    #: JWKS URLs this issuer may name in ``jku`` (and that are fetched when no jku is sent).
    jwks_urls: list[str] = Field(default_factory=list)
    #: A local JWKS file (JSON), for EHRs that exchange keys out of band.
    jwks_file: Path | None = None
    #: The FHIR servers (base URLs, on ``fhir.allowed_servers``) this EHR's calls may name as
    #: ``fhirServer``: its own. Empty: any allowed server. With more than one trusted EHR,
    #: list each one's: a call's patient ids are ids on the server it names, so an EHR that
    #: named another's server would have its ECGs filed there (write-back) under its ids.
    fhir_servers: list[str] = Field(default_factory=list)
    #: The DICOMweb servers (on ``fhir.allowed_dicomweb``) this EHR's calls may have read:
    #: its own PACS. Empty: any allowed one. With several EHRs, list each one's: a call names
    #: studies by UID, and another hospital's PACS answers the service as it answers ingest.
    dicomweb_servers: list[str] = Field(default_factory=list)


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
    #: Embedded mode also orders its queue by it: a classification queued longer than this
    #: (no hook waits for it any more) yields to those queued since (deadline first).
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


class SandboxSettings(BaseModel):
    """The offline EHR sandbox page (``/sandbox/``) for integration engineers."""

    #: Off by default. On, the service also trusts the sandbox's own key pair (kept in
    #: ``data_dir/sandbox``), and only while this stays on.
    enabled: bool = False
    #: The sandbox signs calls that the service accepts, so it starts only on a loopback
    #: ``host`` unless this says otherwise (a shared test server behind its own access control).
    allow_non_loopback: bool = False


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


#: What ``viewer_frame_ancestors`` holds: an http(s) origin, nothing after the port.
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore"
    )

    @field_validator("viewer_frame_ancestors")
    @classmethod
    def _frame_origins(cls, value: list[str]) -> list[str]:
        # Each one goes into the Content-Security-Policy header as it is: origins only.
        for origin in value:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"viewer_frame_ancestors: {origin!r} is not an origin; write scheme, host "
                    "and optional port, e.g. https://ehr.example.org"
                )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    host: str = "127.0.0.1"
    port: int = 8080
    #: Public base URL (for card links, model-card link, audiences).
    public_base_url: str = "http://127.0.0.1:8080"
    #: Database (embedded), link secret, stored originals. Relative paths are taken from the
    #: current directory at start-up and resolved once.
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None  # default: sqlite:///{data_dir}/ecg-cds.db
    model_dir: Path | None = None  # default: the shipped weights
    catalog_file: Path | None = None  # default: the shipped label catalog
    #: A site calibration written by ``ecg-cds calibrate`` (relative: beside the model);
    #: results, cards and the model card then name it. None: the shipped calibration.
    site_calibration: Path | None = None
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
    #: Origins (``https://ehr.example.org``) of EHR web apps that show the viewer's ECG page
    #: inside a frame (a SMART app in an iframe). Empty: no page may frame the viewer, so no
    #: other site can overlay its feedback buttons (clickjacking).
    viewer_frame_ancestors: list[str] = Field(default_factory=list)
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
    log_level: Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"] = "INFO"
    #: ``text``: one readable line per record; ``json``: one JSON object per line (for log
    #: collectors: time, level, logger, message and any extra fields).
    log_format: Literal["text", "json"] = "text"
    #: Load the model in the background at start-up so the first hook call finds it ready.
    preload_model: bool = True

    auth: AuthSettings = Field(default_factory=AuthSettings)
    fhir: FhirSettings = Field(default_factory=FhirSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    cards: CardSettings = Field(default_factory=CardSettings)

    @property
    def decode_limits(self) -> DecodeLimits:
        """The ECG size limits in the form every reader in :mod:`adapters` checks."""
        from adapters.limits import DecodeLimits

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
        path = os.environ.get(SETTINGS_FILE_ENV)
        if not path:
            return {}
        where = f"{SETTINGS_FILE_ENV}={path}"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SettingsError([f"{where}: no such file"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError([f"{where}: cannot read it ({exc})"]) from None
        try:
            data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            detail = " ".join(str(exc).split())
            raise SettingsError([f"{where}: not valid {_file_kind(path)} ({detail})"]) from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise SettingsError([f"{where}: must hold a mapping of settings, not a list or value"])
        return data


def _file_kind(path: str) -> str:
    return "JSON" if path.endswith(".json") else "YAML"


class SettingsError(ValueError):
    """The settings cannot be loaded; ``problems`` has one line per thing to fix."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _env_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part) for part in loc if isinstance(part, str)).upper()


def _setting_name(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in loc).replace(
        ".[", "["
    )


def _where(loc: tuple[int | str, ...]) -> str:
    """Which source set the value at ``loc``: its environment variable, else the file."""
    for depth in range(len(loc), 0, -1):
        name = _env_name(loc[:depth])
        if name in os.environ:
            return name
    path = os.environ.get(SETTINGS_FILE_ENV)
    return f"the settings file {path}" if path else "the defaults"


def _malformed_env_json() -> list[str]:
    """Environment variables of this service holding JSON that does not parse."""
    problems = []
    for name, value in sorted(os.environ.items()):
        if not name.startswith(ENV_PREFIX) or value.lstrip()[:1] not in ("[", "{"):
            continue
        try:
            json.loads(value)
        except ValueError as exc:
            problems.append(f"{name}: not valid JSON ({exc})")
    return problems


def load_settings(**overrides: Any) -> Settings:
    """Settings from the file and the environment, or a :class:`SettingsError` that says,
    one line per problem, which setting is wrong, where it was set and what is expected."""
    try:
        settings = Settings(**overrides)
    except SettingsError:
        raise
    except pydantic_settings.SettingsError as exc:
        problems = _malformed_env_json() or [str(exc)]
        raise SettingsError(problems) from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            got = error.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            problems.append(f"{_setting_name(loc)}: {error['msg']}{shown}; set in {_where(loc)}")
        raise SettingsError(problems) from None
    if not settings.data_dir.is_absolute():
        settings.data_dir = settings.data_dir.resolve()
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (a FastAPI dependency; tests build their own ``Settings``).
    Raises :class:`SettingsError` (one line per problem) when they cannot be loaded."""
    return load_settings()
