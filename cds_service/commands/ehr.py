"""`ecg-cds ehr`: act as an EHR against a running service (a developer tool).

It holds a key pair in a local folder (created on first use), signs CDS Hooks JWTs with it
(ES384 by default, ``kid`` = the key's RFC 7638 thumbprint), sends a ``patient-view`` call
(or ``order-select`` with ``--drug``) with the given ECG file converted to a FHIR
Observation in ``prefetch``, and prints the cards.

The service trusts nothing by default. Trust this dev EHR once with the settings that
``ecg-cds ehr --print-settings`` prints (an environment variable naming the key folder's
public JWKS file), then start the service.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import typer

DEFAULT_KEY_DIR = (
    Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "ecg-cds" / "ehr"
)
DEFAULT_ISSUER = "urn:ecg-cds:dev-ehr"
_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


# ---------------------------------------------------------------------------- keys


class DevKeys:
    """A signing key in ``key_dir``: ``private_key.pem`` (0600) and ``jwks.json`` (public)."""

    def __init__(self, key_dir: Path, alg: str = "ES384") -> None:
        self.key_dir = key_dir
        self.alg = alg
        self.private_path = key_dir / f"private_key_{alg.lower()}.pem"
        self.jwks_path = key_dir / "jwks.json"
        self._ensure()

    def _ensure(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        if not self.private_path.is_file():
            self.key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            key: Any
            if self.alg.startswith("ES"):
                curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}
                key = ec.generate_private_key(curve[self.alg])
            else:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(self.private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
        self._write_jwks()

    @property
    def private_key(self) -> Any:
        from cryptography.hazmat.primitives import serialization

        return serialization.load_pem_private_key(self.private_path.read_bytes(), password=None)

    def public_jwk(self) -> dict[str, Any]:
        from jwt.algorithms import ECAlgorithm, RSAAlgorithm

        public = self.private_key.public_key()
        algorithm = ECAlgorithm if self.alg.startswith("ES") else RSAAlgorithm
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(public))
        jwk.update({"kid": _thumbprint(jwk), "alg": self.alg, "use": "sig"})
        return jwk

    def _write_jwks(self) -> None:
        """The public key set, merged with keys of other algorithms already in the file."""
        jwk = self.public_jwk()
        keys: list[dict[str, Any]] = []
        if self.jwks_path.is_file():
            try:
                keys = json.loads(self.jwks_path.read_text(encoding="utf-8")).get("keys", [])
            except ValueError:
                keys = []
        keys = [k for k in keys if k.get("kid") != jwk["kid"]] + [jwk]
        self.jwks_path.write_text(json.dumps({"keys": keys}, indent=2), encoding="utf-8")

    def sign(self, *, iss: str, aud: str, lifetime_s: int = 300, jku: str | None = None) -> str:
        import jwt

        now = int(time.time())
        headers: dict[str, Any] = {"kid": self.public_jwk()["kid"], "typ": "JWT"}
        if jku:
            headers["jku"] = jku
        claims = {
            "iss": iss,
            "aud": aud,
            "iat": now,
            "exp": now + lifetime_s,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self.private_key, algorithm=self.alg, headers=headers)


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (base64url SHA-256 of the required members)."""
    import base64
    import hashlib

    members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def trust_settings(keys: DevKeys, iss: str) -> dict[str, Any]:
    """The ``auth.trusted_issuers`` entry that makes the service trust this dev EHR."""
    return {"iss": iss, "jwks_file": str(keys.jwks_path.resolve())}


# ---------------------------------------------------------------------------- calls


def observation_prefetch(ecg_path: Path, patient_id: str) -> dict[str, Any]:
    """The ECG file as a FHIR Observation in a searchset Bundle (the ecgObservations key)."""
    import adapters
    from adapters import load_ecg

    try:
        ecg = load_ecg(ecg_path)
    except adapters.EcgFormatError as exc:
        raise typer.BadParameter(str(exc), param_hint="ECG_FILE") from None
    writer = getattr(adapters, "to_fhir_observation", None)
    if writer is None:
        raise typer.BadParameter("this build has no FHIR Observation writer (adapters)")
    # A stable id: the same file gives the same Observation, so the service's cache hits.
    observation = dict(
        writer(
            ecg, patient_ref=f"Patient/{patient_id}", observation_id=f"ecg-{ecg.source.sha256[:16]}"
        )
    )
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 1,
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": observation,
                "search": {"mode": "match"},
            }
        ],
    }


def draft_orders(
    drug: str, subject: str, *, id_prefix: str = "draft"
) -> tuple[dict[str, Any], list[str]]:
    """A draft MedicationRequest bundle as order-select/order-sign carry it, and its selection."""
    order_id = f"{id_prefix}-{uuid.uuid4().hex[:8]}"
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": order_id,
                    "status": "draft",
                    "intent": "order",
                    "medicationCodeableConcept": {"text": drug},
                    "subject": {"reference": subject},
                }
            }
        ],
    }
    return bundle, [f"MedicationRequest/{order_id}"]


def _md_text(text: str) -> str:
    """Service text shown literally inside the Markdown the terminal renders."""
    return "".join("\\" + ch if ch in "\\`*_{}[]()#+-.!|<>" else ch for ch in str(text))


def print_cards(cards: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.markdown import Markdown
    from rich.panel import Panel

    console = Console()
    if not cards:
        console.print(
            "No cards: the service found nothing to flag for this call (for order-select: "
            "no QT concern for this drug with this ECG). That is an answer, not an error; "
            "--json shows the raw response."
        )
    for card in cards:
        indicator = card.get("indicator", "info")
        body: list[Any] = []
        parts = []
        if card.get("detail"):
            parts.append(card["detail"])
        for suggestion in card.get("suggestions", []):
            kinds = ", ".join(
                f"{a['type']} {a.get('resource', {}).get('resourceType', a.get('resourceId', ''))}"
                for a in suggestion.get("actions", [])
            )
            parts.append(f"- **Suggestion:** {suggestion['label']} ({kinds})")
        for link in card.get("links", []):
            # the URL itself, not only its label: a terminal cannot follow a hidden link
            parts.append(f"- **Link:** {_md_text(link['label'])} (below)")
        source = card.get("source", {})
        parts.append(f"*Source: {source.get('label', '')}* {source.get('url', '')}")
        body.append(Markdown("\n\n".join(parts)))
        console.print(
            Panel(
                body[0],
                title=f"[{_STYLE.get(indicator, '')}]{indicator.upper()}[/] {card['summary']}",
                title_align="left",
                border_style=_STYLE.get(indicator, "white"),
            )
        )
        # The URLs themselves, unwrapped, outside the box: a terminal cannot follow a
        # hidden link, and a URL broken over box lines cannot be copied.
        for link in card.get("links", []):
            console.print(f"  {link['label']}: {link['url']}", soft_wrap=True, markup=False)


def ehr(
    ecg_file: Path | None = typer.Argument(
        None, help="ECG file (any supported format), sent in prefetch as a FHIR Observation."
    ),
    url: str = typer.Option("http://127.0.0.1:8080", help="Base URL of the running service."),
    service: str = typer.Option(
        "", help="Service id (default: ecg-review, or ecg-qt-drug-check with --drug)."
    ),
    patient: str = typer.Option("example", help="Patient id for context.patientId."),
    drug: str | None = typer.Option(
        None, help="Send order-select with a draft order for this drug (e.g. 'sotalol 80 mg')."
    ),
    key_dir: Path = typer.Option(DEFAULT_KEY_DIR, help="Folder holding the dev EHR's key pair."),
    iss: str = typer.Option(DEFAULT_ISSUER, help="Issuer (iss) of the signed JWTs."),
    alg: str = typer.Option("ES384", help="ES384 (like the CDS Hooks sandbox) or RS384 (Epic)."),
    print_settings: bool = typer.Option(
        False, "--print-settings", help="Print how to make the service trust this EHR, and exit."
    ),
    print_jwks: bool = typer.Option(False, "--print-jwks", help="Print the public JWKS, and exit."),
    wait: float = typer.Option(
        60.0, help="Seconds to keep re-asking while the service answers 'analysis pending'."
    ),
    raw: bool = typer.Option(False, "--json", help="Print the raw JSON response."),
) -> None:
    import httpx

    if alg not in ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512"):
        raise typer.BadParameter("use ES384 or RS384 (or another asymmetric algorithm)")
    keys = DevKeys(key_dir, alg)
    if print_jwks:
        typer.echo(keys.jwks_path.read_text(encoding="utf-8"))
        return
    trusted = [trust_settings(keys, iss)]
    if print_settings:
        typer.echo("# Trust this dev EHR: set this in the service's environment, then start it")
        typer.echo(f"export ECG_CDS_AUTH__TRUSTED_ISSUERS='{json.dumps(trusted)}'")
        typer.echo("# or, in a settings file named by ECG_CDS_SETTINGS_FILE (YAML):")
        typer.echo("auth:\n  trusted_issuers:")
        typer.echo(f"    - iss: {iss}\n      jwks_file: {trusted[0]['jwks_file']}")
        return
    if ecg_file is None:
        raise typer.BadParameter("give an ECG file (or --print-settings / --print-jwks)")

    service_id = service or ("ecg-qt-drug-check" if drug else "ecg-review")
    base = url.rstrip("/")
    call: dict[str, Any] = {
        "hook": "order-select" if drug else "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/dev-ehr", "patientId": patient},
        "prefetch": {
            "ecgObservations": observation_prefetch(ecg_file, patient),
            "ecgDocuments": None,
            "ecgImagingStudies": None,
        },
    }
    if drug:
        orders, selections = draft_orders(drug, "Patient/placeholder")
        call["context"].update({"draftOrders": orders, "selections": selections})

    target = f"{base}/cds-services/{service_id}"
    deadline = time.monotonic() + max(0.0, wait)
    # The first call to a fresh service also loads the model: allow it time.
    with httpx.Client(timeout=120.0) as client:
        announced = False
        while True:
            token = keys.sign(iss=iss, aud=target)
            try:
                response = client.post(
                    target, json=call, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.ConnectError:
                # A service started a moment ago (`make run &`) is not listening yet: wait
                # for it within --wait, as the README's "Try it" runs straight on.
                if time.monotonic() < deadline:
                    if not announced:
                        typer.echo(f"waiting for the service at {base} to start...", err=True)
                        announced = True
                    time.sleep(1.0)
                    continue
                typer.echo(
                    f"error: could not reach {base} (nothing listening). Is the service "
                    "running (`make run`) and is --url right?",
                    err=True,
                )
                raise typer.Exit(1) from None
            except httpx.HTTPError as exc:
                typer.echo(
                    f"error: could not reach {base} ({type(exc).__name__}). Is the service "
                    "running (`make run`) and is --url right?",
                    err=True,
                )
                raise typer.Exit(1) from None
            if response.status_code == 401:
                typer.echo(
                    "401: the service does not trust this EHR. Run `ecg-cds ehr --print-settings` "
                    "and start the service with those settings.",
                    err=True,
                )
                raise typer.Exit(1)
            if response.status_code != 200:
                typer.echo(f"HTTP {response.status_code}: {response.text}", err=True)
                raise typer.Exit(1)
            cards = response.json().get("cards", [])
            pending = any(c["summary"].startswith("AI analysis pending") for c in cards)
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
    if raw:
        typer.echo(json.dumps(response.json(), indent=2))
    else:
        print_cards(cards)
