"""The CDS services this server offers, with their prefetch templates (the discovery document).

Three services share one set of ECG queries:

* ``ecg-review`` on ``patient-view``: a card per recent ECG with findings.
* ``ecg-qt-drug-check`` on ``order-select``: a QT-prolonging drug being chosen is checked
  against the patient's latest ECG (QTc and rhythm).
* ``ecg-qt-drug-sign`` on ``order-sign``: the same check when the orders are signed.

Prefetch keys are what :mod:`cds_service.hooks.prefetch` reads; a client that does not fill
them lets the service search the same queries itself (with ``fhirServer``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cds_service.hooks.schemas import ServiceDescription

MDC_SYSTEM = "urn:oid:2.16.840.1.113883.6.24"
LOINC_SYSTEM = "http://loinc.org"
DICOM_DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
MDC_ECG_WAVEFORM = "131328"
LOINC_EKG_STUDY = "11524-6"
LOINC_12_LEAD_PANEL = "34534-8"

#: Codes that mark an Observation (or a DocumentReference type) as an ECG.
ECG_CODES: tuple[tuple[str, str], ...] = (
    (MDC_SYSTEM, MDC_ECG_WAVEFORM),
    (LOINC_SYSTEM, LOINC_EKG_STUDY),
    (LOINC_SYSTEM, LOINC_12_LEAD_PANEL),
)
_CODE_PARAM = ",".join(f"{system}|{code}" for system, code in ECG_CODES)
#: How many recent items of each kind a hook looks at.
RECENT_COUNT = 5

#: Prefetch key -> (resource type, search parameters with ``{{context.patientId}}``).
ECG_QUERIES: dict[str, tuple[str, dict[str, str]]] = {
    "ecgObservations": (
        "Observation",
        {
            "patient": "{{context.patientId}}",
            "code": _CODE_PARAM,
            "_sort": "-date",
            "_count": str(RECENT_COUNT),
        },
    ),
    "ecgDocuments": (
        "DocumentReference",
        {
            "patient": "{{context.patientId}}",
            "type": f"{LOINC_SYSTEM}|{LOINC_EKG_STUDY},{LOINC_SYSTEM}|{LOINC_12_LEAD_PANEL}",
            "_sort": "-date",
            "_count": str(RECENT_COUNT),
        },
    ),
    "ecgImagingStudies": (
        "ImagingStudy",
        {
            "patient": "{{context.patientId}}",
            "modality": f"{DICOM_DCM_SYSTEM}|ECG",
            "_sort": "-started",
            "_count": str(RECENT_COUNT),
        },
    ),
}


def query_template(resource_type: str, params: dict[str, str]) -> str:
    """``Observation?patient={{context.patientId}}&code=...`` (prefetch template form)."""
    return resource_type + "?" + "&".join(f"{key}={value}" for key, value in params.items())


ECG_PREFETCH: dict[str, str] = {
    key: query_template(resource_type, params)
    for key, (resource_type, params) in ECG_QUERIES.items()
}


USAGE_REQUIREMENTS = (
    "Send the prefetch keys, or fhirServer with fhirAuthorization granting read access to "
    "the patient's Observation, DocumentReference, Binary, ImagingStudy and Endpoint "
    "resources; the fhirServer (and any DICOMweb server) must be on this service's allow-list."
)


@dataclass(frozen=True)
class HookService:
    id: str
    hook: str
    title: str
    description: str
    prefetch: dict[str, str] = field(default_factory=lambda: dict(ECG_PREFETCH))
    #: "review": cards for ECG findings; "qt-drug": cards only when a QT-prolonging drug is ordered.
    kind: str = "review"
    #: Where the orders are in the context (order-select: ``draftOrders`` + ``selections``).
    orders_key: str | None = None

    def describe(self) -> ServiceDescription:
        return ServiceDescription(
            hook=self.hook,
            id=self.id,
            title=self.title,
            description=self.description,
            prefetch=self.prefetch,
            usageRequirements=USAGE_REQUIREMENTS,
        )


SERVICES: dict[str, HookService] = {
    service.id: service
    for service in (
        HookService(
            id="ecg-review",
            hook="patient-view",
            title="ECG review (zero-shot AI)",
            description=(
                "Reviews the patient's recent ECGs with a zero-shot ECG-text model and shows a "
                "card per ECG with findings: rhythm, conduction, ischaemia, QTc and "
                "measurements, with an AI-asserted impression to file."
            ),
        ),
        HookService(
            id="ecg-qt-drug-check",
            hook="order-select",
            title="QT-prolonging drug vs. latest ECG",
            description=(
                "When a QT-prolonging medication is selected, checks the patient's latest ECG "
                "for a long QTc or a risky rhythm and warns before the order is written."
            ),
            kind="qt-drug",
            orders_key="draftOrders",
        ),
        HookService(
            id="ecg-qt-drug-sign",
            hook="order-sign",
            title="QT-prolonging drug vs. latest ECG (at signing)",
            description=(
                "When orders with a QT-prolonging medication are signed, checks the patient's "
                "latest ECG for a long QTc or a risky rhythm."
            ),
            kind="qt-drug",
            orders_key="draftOrders",
        ),
    )
}
