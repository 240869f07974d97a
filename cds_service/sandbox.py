"""The offline EHR sandbox (``/sandbox/``): an integration engineer's EHR inside the service.

Off unless ``sandbox.enabled``. On, it holds its own ES384 key pair in ``data_dir/sandbox``
and the service trusts that key (issuer :data:`SANDBOX_ISS`) only while the setting stays on:
the trust is added to the app's settings at start-up, never written anywhere. Because it
signs calls the service accepts, the service refuses to start with it on unless it is bound
to loopback or ``sandbox.allow_non_loopback`` says otherwise.

A call is built and sent the way an EHR sends it: a fresh JWT (``aud`` = the service URL
called), ``hook``, ``hookInstance``, ``context`` and either ``prefetch`` (the ECG as a FHIR
Observation) or ``fhirServer`` + ``fhirAuthorization`` pointing at the sandbox's own small
FHIR endpoint (``/sandbox/fhir``), from which the service fetches the ECG itself.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from cds_service.settings import Settings, SettingsError, TrustedIssuer

SANDBOX_ISS = "urn:ecg-cds:sandbox"
HOOK_SERVICES = {
    "patient-view": "ecg-review",
    "order-select": "ecg-qt-drug-check",
    "order-sign": "ecg-qt-drug-sign",
}


def fhir_base(settings: Settings) -> str:
    return settings.public_base_url.rstrip("/") + "/sandbox/fhir"


def with_sandbox(settings: Settings) -> Settings:
    """``settings`` as the app runs them: with the sandbox on, its key trusted and its FHIR
    endpoint allow-listed (a copy; the caller's object is left alone). Off: unchanged."""
    if not settings.sandbox.enabled:
        return settings
    from cds_service.config_check import is_loopback_host

    if not is_loopback_host(settings.host) and not settings.sandbox.allow_non_loopback:
        raise SettingsError(
            [
                f"sandbox.enabled: the sandbox signs calls this service trusts, so it runs only "
                f"on a loopback host (host is {settings.host!r}); set "
                "sandbox.allow_non_loopback to run it there anyway"
            ]
        )
    keys = sandbox_keys(settings)
    copy = settings.model_copy(deep=True)
    copy.auth.trusted_issuers = [
        *[i for i in copy.auth.trusted_issuers if i.iss != SANDBOX_ISS],
        TrustedIssuer(iss=SANDBOX_ISS, jwks_file=keys.jwks_path),
    ]
    copy.fhir.allowed_servers = [*copy.fhir.allowed_servers, fhir_base(settings)]
    return copy


def sandbox_keys(settings: Settings) -> Any:
    """The sandbox's key pair (``DevKeys``), created on first use."""
    from cds_service.commands.ehr import DevKeys

    return DevKeys(settings.data_dir / "sandbox", "ES384")


@dataclass
class SandboxFhir:
    """What the sandbox's FHIR endpoint serves: per patient, the ECG of the last call made
    in FHIR-server mode; one access token per process, sent as ``fhirAuthorization``."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    observations: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, patient_id: str, observation: dict[str, Any]) -> None:
        with self.lock:
            self.observations[patient_id] = observation

    def search(self, resource_type: str, patient: str | None) -> dict[str, Any]:
        patient_id = (patient or "").removeprefix("Patient/")
        with self.lock:
            found = self.observations.get(patient_id) if resource_type == "Observation" else None
        entries = (
            [
                {
                    "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                    "resource": found,
                    "search": {"mode": "match"},
                }
            ]
            if found
            else []
        )
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(entries),
            "entry": entries,
        }


def build_call(
    *,
    hook: str,
    observation: dict[str, Any],
    patient_id: str,
    drug: str | None,
    mode: str,
    settings: Settings,
    fhir: SandboxFhir,
) -> dict[str, Any]:
    """The CDS Hooks request body an EHR would send for this ECG and hook."""
    call: dict[str, Any] = {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/sandbox-clinician", "patientId": patient_id},
    }
    if hook in ("order-select", "order-sign"):
        from cds_service.commands.ehr import draft_orders

        bundle, selections = draft_orders(
            drug or "sotalol 80 mg", f"Patient/{patient_id}", id_prefix="sandbox"
        )
        call["context"]["draftOrders"] = bundle
        if hook == "order-select":
            call["context"]["selections"] = selections
    if mode == "fhir-server":
        fhir.put(patient_id, observation)
        call["fhirServer"] = fhir_base(settings)
        call["fhirAuthorization"] = {
            "access_token": fhir.token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/Observation.read patient/Patient.read",
            "subject": "ecg-cds-sandbox",
        }
    else:
        call["prefetch"] = {
            "ecgObservations": {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": 1,
                "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": observation}],
            },
            "ecgDocuments": None,
            "ecgImagingStudies": None,
        }
    return call


def render_markdown(text: str) -> str:
    """A card's Markdown ``detail`` as HTML, the way the CDS Hooks sandbox shows it; raw
    HTML in it is escaped and unsafe links (``javascript:``) are left as text."""
    from markdown_it import MarkdownIt

    return str(MarkdownIt("commonmark", {"html": False}).enable("table").render(text or ""))
