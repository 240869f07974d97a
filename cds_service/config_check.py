"""What ``ecg-cds check-config`` checks: every setting an operator can get wrong, one line each.

:func:`find_problems` never raises; each :class:`Problem` names the setting (as it is written
in a settings file, ``auth.trusted_issuers[0].jwks_file``) and says what is wrong and what to
do. Errors stop the service from working as configured; warnings are legal but risky.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from cds_service.allow_list import has_unsafe_characters
from cds_service.settings import Settings

Level = Literal["error", "warning"]

#: Bearer tokens shorter than this are guessable.
MIN_TOKEN_CHARS = 32


@dataclass(frozen=True)
class Problem:
    level: Level
    setting: str
    message: str

    def line(self) -> str:
        return f"{self.level:<7} {self.setting}: {self.message}"


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a base URL of a server, or None."""
    if has_unsafe_characters(url):
        return f"{url!r} holds control characters, spaces or backslashes"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return f"{url!r} is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an absolute http(s) URL"
    if parts.username or parts.password:
        return f"{url!r} carries credentials; put them in the token settings instead"
    if parts.query or parts.fragment:
        return f"{url!r} has a query or fragment; give the base URL only"
    return None


def _check_url(setting: str, url: str | None, *, tls: bool = False) -> Iterator[Problem]:
    if url is None:
        return
    problem = _url_problem(url)
    if problem:
        yield Problem("error", setting, problem)
    elif tls and url.startswith("http://") and not is_loopback_host(urlsplit(url).hostname):
        yield Problem("warning", setting, f"{url} is plain http to another host; use https")


def _urls(settings: Settings) -> Iterator[Problem]:
    yield from _check_url("public_base_url", settings.public_base_url)
    yield from _check_url("auth.audience_base_url", settings.auth.audience_base_url)
    for i, url in enumerate(settings.fhir.allowed_servers):
        yield from _check_url(f"fhir.allowed_servers[{i}]", url, tls=True)
    for i, url in enumerate(settings.fhir.allowed_dicomweb):
        yield from _check_url(f"fhir.allowed_dicomweb[{i}]", url, tls=True)
    server = settings.fhir.writeback_server
    if server:
        yield from _check_url("fhir.writeback_server", server, tls=True)
        from cds_service.fhir_client import url_allowed

        if not _url_problem(server) and not url_allowed(server, settings.fhir.allowed_servers):
            yield Problem(
                "error",
                "fhir.writeback_server",
                f"{server} is not in fhir.allowed_servers, so write-back will be refused; "
                "add it there",
            )


def _trust(settings: Settings) -> Iterator[Problem]:
    issuers = settings.auth.trusted_issuers
    if not issuers:
        yield Problem(
            "warning",
            "auth.trusted_issuers",
            "no EHR is trusted, so every hook call is refused (401); add each EHR's iss and keys",
        )
    seen: set[str] = set()
    for i, issuer in enumerate(issuers):
        name = f"auth.trusted_issuers[{i}]"
        if not issuer.iss.strip():
            yield Problem("error", f"{name}.iss", "is empty; give the EHR's issuer (its iss claim)")
        elif issuer.iss in seen:
            yield Problem("error", f"{name}.iss", f"{issuer.iss!r} is listed twice")
        elif ":" not in issuer.iss:
            yield Problem("warning", f"{name}.iss", f"{issuer.iss!r} is neither a URL nor a URN")
        seen.add(issuer.iss)
        if not issuer.jwks_urls and issuer.jwks_file is None:
            yield Problem(
                "error", name, "has neither jwks_urls nor jwks_file: its tokens cannot be checked"
            )
        for j, url in enumerate(issuer.jwks_urls):
            yield from _check_url(f"{name}.jwks_urls[{j}]", url, tls=True)
        if issuer.jwks_file is not None:
            yield from _jwks_file(f"{name}.jwks_file", issuer.jwks_file)
        yield from _issuer_servers(
            f"{name}.fhir_servers", issuer.fhir_servers, settings.fhir.allowed_servers,
            "fhir.allowed_servers",
        )  # fmt: skip
        yield from _issuer_servers(
            f"{name}.dicomweb_servers", issuer.dicomweb_servers, settings.fhir.allowed_dicomweb,
            "fhir.allowed_dicomweb",
        )  # fmt: skip
    if len(issuers) < 2:
        return
    # With several EHRs, one not bound to its own servers can name another's.
    for field, needed, what in (
        ("fhir_servers", settings.fhir.writeback_server, "fhir.writeback_server is set"),
        ("dicomweb_servers", settings.fhir.allowed_dicomweb, "fhir.allowed_dicomweb is set"),
    ):
        unbound = [repr(i.iss) for i in issuers if not getattr(i, field)]
        if needed and unbound:
            yield Problem(
                "warning",
                "auth.trusted_issuers",
                f"{len(issuers)} EHRs are trusted and {what}, but {', '.join(unbound)} list "
                f"no {field}: {_UNBOUND[field]}; list each EHR's own in its {field}",
            )


#: What an EHR not bound to its own servers can do (see :func:`_trust`).
_UNBOUND = {
    "fhir_servers": "any of them can name the write-back server as its fhirServer and have "
    "the ECGs it sends written there under its own patient ids",
    "dicomweb_servers": "any of them can have any allowed PACS read by study UID",
}


def _issuer_servers(
    setting: str, servers: list[str], allowed: list[str], allowed_name: str
) -> Iterator[Problem]:
    from cds_service.allow_list import url_allowed

    for j, url in enumerate(servers):
        yield from _check_url(f"{setting}[{j}]", url, tls=True)
        if not _url_problem(url) and not url_allowed(url, allowed):
            yield Problem(
                "warning",
                f"{setting}[{j}]",
                f"{url} is not in {allowed_name}, so the service never reads from it",
            )


def _jwks_file(setting: str, path: Path) -> Iterator[Problem]:
    from cds_service.auth.jwks import parse_jwks

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        yield Problem("error", setting, f"{path} does not exist")
        return
    except PermissionError:
        yield Problem("error", setting, f"{path} is not readable by this user")
        return
    except (OSError, UnicodeDecodeError) as exc:
        yield Problem("error", setting, f"{path} cannot be read ({exc})")
        return
    except ValueError as exc:
        yield Problem("error", setting, f"{path} is not JSON ({exc})")
        return
    try:
        keys = parse_jwks(data, str(path))
    except ValueError as exc:
        yield Problem("error", setting, str(exc))
        return
    if not keys:
        yield Problem(
            "error",
            setting,
            f"{path} holds no usable signing key (asymmetric, for signing; HMAC keys never count)",
        )


def _tokens(settings: Settings) -> Iterator[Problem]:
    for field in ("audit_tokens", "ingest_tokens"):
        for i, token in enumerate(getattr(settings.auth, field)):
            if len(token) < MIN_TOKEN_CHARS:
                yield Problem(
                    "warning",
                    f"auth.{field}[{i}]",
                    f"is {len(token)} characters; use at least {MIN_TOKEN_CHARS} random ones",
                )
    if settings.link_secret is not None and len(settings.link_secret) < MIN_TOKEN_CHARS:
        yield Problem("warning", "link_secret", f"is shorter than {MIN_TOKEN_CHARS} characters")


def _jobs(settings: Settings) -> Iterator[Problem]:
    jobs = settings.jobs
    if jobs.task_soft_time_limit_s >= jobs.task_time_limit_s:
        yield Problem(
            "error",
            "jobs.task_soft_time_limit_s",
            f"must be below jobs.task_time_limit_s ({jobs.task_time_limit_s})",
        )
    if jobs.visibility_timeout_s <= jobs.task_time_limit_s:
        yield Problem(
            "error",
            "jobs.visibility_timeout_s",
            "must exceed jobs.task_time_limit_s, or running tasks are delivered twice",
        )
    if jobs.embedded_threads < 1:
        yield Problem("error", "jobs.embedded_threads", "must be at least 1")
    if jobs.mode == "distributed" and settings.resolved_database_url.startswith("sqlite"):
        yield Problem(
            "error",
            "database_url",
            "distributed mode needs a database the workers share (PostgreSQL), not SQLite",
        )


def _sandbox(settings: Settings) -> Iterator[Problem]:
    if not settings.sandbox.enabled:
        return
    if not is_loopback_host(settings.host) and not settings.sandbox.allow_non_loopback:
        yield Problem(
            "error",
            "sandbox.enabled",
            f"the sandbox signs calls this service trusts; host {settings.host!r} is not "
            "loopback (bind 127.0.0.1, or set sandbox.allow_non_loopback)",
        )
    else:
        yield Problem(
            "warning", "sandbox.enabled", "the EHR sandbox is on: for integration testing only"
        )


def _storage(settings: Settings) -> Iterator[Problem]:
    from sqlalchemy.exc import ArgumentError

    from cds_service.probes import broker_problem, database_problem
    from cds_service.storage.base import make_engine

    data_dir = settings.data_dir
    existing = next((p for p in (data_dir, *data_dir.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        yield Problem("error", "data_dir", f"{data_dir} cannot be created")
    else:
        import os

        if not os.access(existing, os.W_OK):
            yield Problem("error", "data_dir", f"{existing} is not writable by this user")
    url = settings.resolved_database_url
    try:
        engine = make_engine(url)
    except (ArgumentError, ImportError, ValueError) as exc:
        yield Problem("error", "database_url", f"not a usable database URL ({exc})")
    else:
        try:
            fresh_sqlite = url.startswith("sqlite") and not _sqlite_file(url).exists()
            # A missing SQLite file is created, and any database migrated, at start-up: only
            # whether it opens is a configuration matter.
            problem = None if fresh_sqlite else database_problem(engine, expect_schema=False)
            if problem:
                yield Problem("error", "database_url", problem)
        finally:
            engine.dispose()
    if settings.jobs.mode == "distributed":
        problem = broker_problem(settings.jobs.broker_url)
        if problem:
            yield Problem("error", "jobs.broker_url", problem)


def _sqlite_file(url: str) -> Path:
    from sqlalchemy.engine import make_url

    return Path(make_url(url).database or "")


def _model(settings: Settings) -> Iterator[Problem]:
    from models.catalog import CatalogError, load_catalog

    if settings.catalog_file is not None:
        try:
            load_catalog(settings.catalog_file)
        except (CatalogError, OSError) as exc:
            yield Problem("error", "catalog_file", str(exc))
    try:
        from models.classifier import ZeroShotClassifier

        ZeroShotClassifier.from_pretrained(settings.model_dir, threads=None)
    except Exception as exc:  # any load failure is the operator's to see, in one line
        where = settings.model_dir or "the shipped weights"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        yield Problem("error", "model_dir", f"cannot load the model from {where} ({first})")


def _ordered(found: list[Problem]) -> list[Problem]:
    return sorted(dict.fromkeys(found), key=lambda p: p.level != "error")


def settings_problems(settings: Settings) -> list[Problem]:
    """Problems visible in the settings alone (and the files they name): no connections.
    ``ecg-cds serve`` refuses to start on an error among these."""
    found: list[Problem] = []
    for check in (_urls, _trust, _tokens, _jobs, _sandbox):
        found.extend(check(settings))
    return _ordered(found)


def find_problems(settings: Settings, *, model: bool = True) -> list[Problem]:
    """Every problem found, errors first, each once: the settings, then the database and
    broker they name, then (``model``) the model and label catalog."""
    found = settings_problems(settings) + list(_storage(settings))
    if model:
        found.extend(_model(settings))
    return _ordered(found)


def problems_from_settings_error(lines: list[str]) -> list[Problem]:
    """A :class:`~cds_service.settings.SettingsError`'s lines as problems, named by setting."""
    problems = []
    for line in lines:
        setting, _, message = line.partition(": ")
        problems.append(
            Problem("error", setting, message) if message else Problem("error", "settings", line)
        )
    return problems
