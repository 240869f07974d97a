"""Service test fixtures: one running app (real runtime, real model), EHR keys, a caller."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

from tests.service.cards import cards_of, prefetch_with
from tests.service.ehr import (
    EhrKey,
    RecordingServer,
    document_reference,
    epic_claims,
    hook_body,
    jwks,
    sandbox_claims,
    searchset,
)

if TYPE_CHECKING:
    from cds_service.runtime import Runtime

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_WEIGHTS = REPO_ROOT / "models" / "weights"
SANDBOX_ISS = "https://sandbox.cds-hooks.test"
EPIC_ISS = "https://fhir.epic.test/interconnect-fhir-oauth"
BASE = "http://testserver"


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The shipped model (its weights are committed: missing ones are a packaging fault)."""
    assert (SHIPPED_WEIGHTS / "config.json").is_file(), f"no shipped model in {SHIPPED_WEIGHTS}"
    return SHIPPED_WEIGHTS


@pytest.fixture(scope="session")
def sandbox_key() -> EhrKey:
    return EhrKey.generate("ES384")


@pytest.fixture(scope="session")
def epic_key() -> EhrKey:
    return EhrKey.generate("RS384")


@pytest.fixture(scope="session")
def jwks_server(sandbox_key: EhrKey) -> Iterator[RecordingServer]:
    """The sandbox-like EHR's JWKS endpoint (its jku), on loopback."""
    server = RecordingServer(jwks(sandbox_key)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def jwks_url(jwks_server: RecordingServer) -> str:
    return f"{jwks_server.url}/.well-known/jwks.json"


@pytest.fixture(scope="session")
def epic_jwks_file(tmp_path_factory: pytest.TempPathFactory, epic_key: EhrKey) -> Path:
    import json

    path = tmp_path_factory.mktemp("epic") / "jwks.json"
    path.write_text(json.dumps(jwks(epic_key)), encoding="utf-8")
    return path


def make_settings(
    data_dir: Path, model_dir: Path, jwks_url: str, epic_jwks_file: Path, **overrides: Any
) -> Any:
    """Settings as an operator would write them: two trusted EHRs, nothing else trusted."""
    from cds_service.settings import Settings

    values: dict[str, Any] = {
        "data_dir": data_dir,
        "model_dir": model_dir,
        # The audience tokens must carry: the URL the EHR calls us by (TestClient's base).
        "public_base_url": BASE,
        "auth": {
            "trusted_issuers": [
                {"iss": SANDBOX_ISS, "jwks_urls": [jwks_url]},
                {"iss": EPIC_ISS, "jwks_file": str(epic_jwks_file)},
            ],
            "max_token_lifetime_s": 3600,
            "clock_skew_s": 60,
            # One shared app refuses hundreds of tokens from one address on purpose: audit
            # each on its own, throttle none (tests/security checks the windows).
            "failure_window_s": 0,
        },
        # Tests wait for the classification rather than get "analysis pending".
        "jobs": {"hook_wait_budget_s": 60.0},
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Ehr:
    """Calls the service as the sandbox-like EHR (ES384 + jku) unless told otherwise."""

    client: TestClient
    key: EhrKey
    jku: str

    def token(self, path: str, **claims: Any) -> str:
        return self.key.sign(sandbox_claims(SANDBOX_ISS, BASE + path, **claims), jku=self.jku)

    def get(self, path: str) -> Any:
        return self.client.get(path, headers={"Authorization": f"Bearer {self.token(path)}"})

    def post(self, path: str, body: Any) -> Any:
        return self.client.post(
            path, json=body, headers={"Authorization": f"Bearer {self.token(path)}"}
        )

    def call(self, service_id: str, body: dict[str, Any]) -> Any:
        return self.post(f"/cds-services/{service_id}", body)

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.client.app.state.runtime  # type: ignore[attr-defined]
        return runtime


@pytest.fixture(scope="session")
def service_client(
    tmp_path_factory: pytest.TempPathFactory,
    model_dir: Path,
    jwks_url: str,
    epic_jwks_file: Path,
) -> Iterator[TestClient]:
    from cds_service.app import create_app

    settings = make_settings(
        tmp_path_factory.mktemp("service"), model_dir, jwks_url, epic_jwks_file
    )
    with TestClient(create_app(settings), base_url=BASE) as client:
        yield client


@pytest.fixture(scope="session")
def service_with(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, jwks_url: str, epic_jwks_file: Path
) -> Callable[..., AbstractContextManager[TestClient]]:
    """Another app like ``service_client``, its settings overridden (``auth=``, ``fhir=``),
    for the module that needs it: ``with service_with("name", fhir={...}) as client``."""
    from cds_service.app import create_app

    @contextmanager
    def start(name: str, **overrides: Any) -> Iterator[TestClient]:
        folder = tmp_path_factory.mktemp(name)
        settings = make_settings(folder, model_dir, jwks_url, epic_jwks_file, **overrides)
        with TestClient(create_app(settings), base_url=BASE) as client:
            yield client

    return start


@dataclass
class EpicEhr(Ehr):
    """The second trusted EHR: RS384, its keys in a file (no jku)."""

    def token(self, path: str, **claims: Any) -> str:
        return self.key.sign(epic_claims(EPIC_ISS, BASE + path, **claims))


@pytest.fixture(scope="session")
def two_ehrs(
    service_with: Callable[..., AbstractContextManager[TestClient]],
    sandbox_key: EhrKey,
    epic_key: EhrKey,
    jwks_url: str,
    epic_jwks_file: Path,
) -> Callable[..., AbstractContextManager[tuple[Ehr, Ehr]]]:
    """An app trusting both EHRs, each issuer entry with the fields given (``sandbox=``,
    ``epic=``: ``fhir_servers``...), and how each calls it."""

    @contextmanager
    def start(
        name: str, *, sandbox: dict[str, Any], epic: dict[str, Any], fhir: dict[str, Any]
    ) -> Iterator[tuple[Ehr, Ehr]]:
        issuers = [
            {"iss": SANDBOX_ISS, "jwks_urls": [jwks_url], **sandbox},
            {"iss": EPIC_ISS, "jwks_file": str(epic_jwks_file), **epic},
        ]
        auth = {"trusted_issuers": issuers, "failure_window_s": 0}
        with service_with(name, auth=auth, fhir=fhir) as client:
            yield Ehr(client, sandbox_key, jwks_url), EpicEhr(client, epic_key, "")

    return start


@pytest.fixture(scope="session")
def ehr(service_client: TestClient, sandbox_key: EhrKey, jwks_url: str) -> Ehr:
    return Ehr(service_client, sandbox_key, jwks_url)


@pytest.fixture(scope="session")
def dicom_bytes(formats_dir: Path) -> bytes:
    return (formats_dir / "dicom" / "pydicom_waveform_ecg.dcm").read_bytes()


@pytest.fixture(scope="session")
def aecg_bytes(formats_dir: Path) -> bytes:
    return (formats_dir / "hl7_aecg" / "Example_aECG_HL7_2003-12.xml").read_bytes()


@pytest.fixture(scope="session")
def ptbxl_observation(ptbxl_dir: Path) -> dict[str, Any]:
    """PTB-XL record 1 (500 Hz, 10 s, 12 leads) as a FHIR Observation, via our writer."""
    from adapters import load_ecg, to_fhir_observation

    ecg = load_ecg(ptbxl_dir / "records500" / "00000" / "00001_hr.hea")
    observation = to_fhir_observation(
        ecg, patient_ref="Patient/test-patient", observation_id="ptbxl-00001"
    )
    observation["effectiveDateTime"] = "2023-03-14T09:30:00Z"
    return observation


@pytest.fixture(scope="module")
def review_response(
    ehr: Ehr, dicom_bytes: bytes, aecg_bytes: bytes, ptbxl_observation: dict[str, Any]
) -> dict[str, Any]:
    prefetch = prefetch_with(
        ecgObservations=searchset(ptbxl_observation),
        ecgDocuments=searchset(
            document_reference("dicom-1", dicom_bytes, "application/dicom", "2024-05-01T10:00:00Z"),
            document_reference("aecg-1", aecg_bytes, "application/xml", "2022-01-02T08:00:00Z"),
        ),
    )
    response = ehr.call("ecg-review", hook_body(prefetch=prefetch))
    return {"cards": cards_of(response)}
