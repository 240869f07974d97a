"""What every step of one hook call knows: the call, who made it, for whom, until when.

A hook call runs as explicit steps, each a function of this context:
:mod:`~cds_service.hooks.gather` (ECG candidates from prefetch or the EHR's FHIR server) ->
:mod:`~cds_service.hooks.load` (their bytes) -> :mod:`~cds_service.hooks.accept` (store, submit,
wait) -> cards (:mod:`~cds_service.hooks.handlers`) -> :mod:`~cds_service.hooks.record` (cards
and audit entries, before the EHR gets its answer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cds_service.audit import Actor
from cds_service.auth import VerifiedToken
from cds_service.hooks.problems import HookProblem
from cds_service.hooks.schemas import HookRequest
from cds_service.hooks.services import HookService
from cds_service.hooks.sources import EcgCandidate

#: Longest context.patientId / context.userId taken. FHIR R4 ids have at most 64
#: characters; this leaves room for servers that exceed it, and keeps one call from writing
#: megabytes into the append-only audit trail (every call records patient and user).
MAX_ID_CHARS = 256


@dataclass(frozen=True)
class HookContext:
    service: HookService
    call: HookRequest
    actor: Actor
    patient_id: str
    #: ``time.monotonic()`` by which the call must answer (the wait budget counts from arrival).
    deadline: float

    @property
    def patient_ref(self) -> str:
        return f"Patient/{self.patient_id}"

    @classmethod
    def of(
        cls, service: HookService, call: HookRequest, token: VerifiedToken, deadline: float
    ) -> HookContext:
        """The context of a valid call; :class:`HookProblem` (400) names what is missing."""
        user = call.context.get("userId")
        if isinstance(user, str) and len(user) > MAX_ID_CHARS:
            raise HookProblem(
                400, f"context.userId is {len(user)} characters; a user reference has at most "
                f"{MAX_ID_CHARS} (FHIR ids have at most 64)"
            )  # fmt: skip
        actor = Actor(iss=token.iss, sub=token.sub, user=user if isinstance(user, str) else None)
        return cls(service, call, actor, _patient_id(service, call), deadline)


@dataclass
class Gathered:
    """What the steps found out along the way (shown on the "could not be read" card)."""

    candidates: list[EcgCandidate] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)  # what was read from the EHR (audit)


class BuiltCard(NamedTuple):
    """A card and what it is about: the ECG and the model version (None for notices)."""

    card: dict[str, Any]
    ecg_id: str | None
    model_version: str | None


def _patient_id(service: HookService, call: HookRequest) -> str:
    if call.hook != service.hook:
        raise HookProblem(
            400, f"service {service.id!r} answers the {service.hook!r} hook, not {call.hook!r}"
        )
    patient_id = call.context.get("patientId")
    if not isinstance(patient_id, str) or not patient_id:
        raise HookProblem(400, "context.patientId is required (a non-empty string)")
    if len(patient_id) > MAX_ID_CHARS:
        raise HookProblem(
            400, f"context.patientId is {len(patient_id)} characters; a Patient.id has at most "
            f"64 (FHIR R4 id), and this service takes at most {MAX_ID_CHARS}"
        )  # fmt: skip
    if service.kind == "qt-drug":
        draft = call.context.get("draftOrders")
        if not isinstance(draft, dict) or draft.get("resourceType") != "Bundle":
            raise HookProblem(400, "context.draftOrders is required (a FHIR Bundle of orders)")
        selections = call.context.get("selections")
        if service.hook == "order-select" and (
            not isinstance(selections, list) or not all(isinstance(s, str) for s in selections)
        ):
            raise HookProblem(400, "context.selections is required (a list of order references)")
    return patient_id
