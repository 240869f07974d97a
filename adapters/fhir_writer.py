"""The canonical record out as a FHIR R4 waveform Observation (SampledData per lead, MDC lead
codes); read back by :mod:`adapters.fhir`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import numpy as np

from adapters.fhir import (
    EKG_IMPRESSION_LOINC,
    LOCAL_TIME_EXTENSION,
    LOINC_SYSTEM,
    MDC_SYSTEM,
    OBSERVATION_CATEGORY,
    UCUM_SYSTEM,
)
from adapters.leads import (
    MDC_POTENTIAL_BASE,
    mdc_lead_term,
    normalize_lead_name,
)
from adapters.quantise import quantisation_step_uv
from adapters.record import Ecg, written_notes


def _effective(start: datetime) -> dict[str, Any]:
    """``effectiveDateTime`` for a start time, honest about a missing time zone.

    FHIR requires a zone on any dateTime with a time of day. Most ECG files record the
    cart's local clock without one, and inventing UTC would shift the time. So a naive time
    is written as its date, with the local time kept in an extension our reader restores.
    """
    if start.tzinfo is not None:
        return {"effectiveDateTime": start.isoformat()}
    return {
        "effectiveDateTime": start.date().isoformat(),
        "_effectiveDateTime": {
            "extension": [{"url": LOCAL_TIME_EXTENSION, "valueString": start.isoformat()}]
        },
    }


def _lead_code(name: str) -> dict[str, Any]:
    term = mdc_lead_term(name)
    if term is None:
        # The generic potential code; the lead's own name travels in text.
        coding = {
            "system": MDC_SYSTEM,
            "code": str(MDC_POTENTIAL_BASE),
            "display": "MDC_ECG_ELEC_POTL",
        }
    else:
        suffix = normalize_lead_name(name).upper()
        coding = {
            "system": MDC_SYSTEM,
            "code": str(MDC_POTENTIAL_BASE + term),
            "display": f"MDC_ECG_ELEC_POTL_{suffix}",
        }
    return {"coding": [coding], "text": name}


def _sampled_data(samples: np.ndarray, period_ms: float) -> dict[str, Any]:
    step_mv = quantisation_step_uv(float(np.abs(samples).max(initial=0.0))) / 1000.0
    counts = np.rint(samples.astype(np.float64) / step_mv).astype(np.int64)
    return {
        "origin": {"value": 0, "unit": "mV", "system": UCUM_SYSTEM, "code": "mV"},
        "period": period_ms,
        "factor": step_mv,
        "dimensions": 1,
        "data": " ".join(map(str, counts.tolist())),
    }


def ecg_to_fhir_observation(
    ecg: Ecg, *, patient_ref: str | None = None, observation_id: str | None = None
) -> dict[str, Any]:
    """A FHIR R4 Observation (the "ekg" example shape) holding every lead of ``ecg``.

    ``patient_ref`` is a reference such as ``Patient/123``; ``observation_id`` defaults to
    a random UUID. Statements become ``note`` texts, SNOMED CT codes an EKG-impression
    component (LOINC 8601-7) each, so :func:`read` recovers both.
    """
    period_ms = 1000.0 / float(ecg.fs)
    components: list[dict[str, Any]] = [
        {"code": _lead_code(name), "valueSampledData": _sampled_data(ecg.signal[i], period_ms)}
        for i, name in enumerate(ecg.leads)
    ]
    for code in ecg.diagnosis_codes:
        system, _, value = code.partition("|")
        components.append(
            {
                "code": {
                    "coding": [
                        {
                            "system": LOINC_SYSTEM,
                            "code": EKG_IMPRESSION_LOINC,
                            "display": "EKG impression",
                        }
                    ]
                },
                "valueCodeableConcept": {"coding": [{"system": system, "code": value}]},
            }
        )
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_id or str(uuid.uuid4()),
        "status": "final",
        "category": [
            {
                "coding": [
                    {"system": OBSERVATION_CATEGORY, "code": "procedure", "display": "Procedure"}
                ]
            }
        ],
        "code": {
            "coding": [{"system": MDC_SYSTEM, "code": "131328", "display": "MDC_ECG_ELEC_POTL"}],
            "text": "ECG waveform",
        },
    }
    if patient_ref:
        observation["subject"] = {"reference": patient_ref}
    if ecg.start_time is not None:
        observation.update(_effective(ecg.start_time))
    if ecg.device:
        observation["device"] = {"display": ecg.device}
    notes = written_notes(ecg.amplitude_assumed, ecg.statements)
    if notes:
        observation["note"] = [{"text": n} for n in notes]
    observation["component"] = components
    return observation
