"""ECG upload and lookup: ``POST /ecgs``, ``GET /ecgs/{id}``, ``GET /ecgs/{id}/result``.

Uploading stores the original bytes, recognises duplicates by SHA-256, and queues
classification (and FHIR write-back when configured). Accepted bodies:

* ``multipart/form-data`` with one ``file`` part in any supported format, or several parts
  forming one multi-file record (a WFDB ``.hea`` with its ``.dat``/``.mat``);
* ``application/fhir+json`` / ``application/json``: a FHIR Observation (waveform) or a
  DocumentReference whose ``content[0].attachment.data`` holds the ECG file (base64);
* the raw file as the body (``application/octet-stream``, ``application/dicom``, XML).

Writes need a bearer token from ``settings.auth.ingest_tokens``; reads need one too (ECGs
are PHI). Bad input gets an OperationOutcome naming what is wrong, and an audit entry.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field

from adapters import EcgFormatError, EcgTooLarge
from cds_service.api.deps import get_runtime
from cds_service.api.ecg_bodies import (
    JSON_TYPES,
    RAW_TYPES,
    InputProblem,
    from_fhir_json,
    multipart_files,
    operation_outcome,
    problem_response,
    read_limited,
)
from cds_service.audit import Actor, AuditError
from cds_service.auth.static_tokens import require_static_bearer
from cds_service.errors import body_limit
from cds_service.runtime import Runtime
from cds_service.storage.records import EcgInfo, StoredResult

router = APIRouter(prefix="/ecgs", tags=["ecgs"])

#: Documents the scheme in OpenAPI; the check itself is :func:`require_ingest_token`.
_bearer_scheme = HTTPBearer(auto_error=False, description="A token from auth.ingest_tokens")
MAX_WAIT_S = 10.0


# -- dependencies -------------------------------------------------------------------------------


def require_ingest_token(
    request: Request,
    runtime: Runtime = Depends(get_runtime),
    _scheme: Any = Depends(_bearer_scheme),
) -> Actor:
    """The uploading client, or a bare 401 (recorded as ``auth-failure``)."""
    return require_static_bearer(
        request,
        runtime.settings.auth.ingest_tokens,
        runtime.audit,
        kind="ingest",
        setting="auth.ingest_tokens",
    )


# -- schemas ------------------------------------------------------------------------------------


class EcgOut(BaseModel):
    id: str = Field(description="The service's id for this ECG (UUID)")
    sha256: str = Field(description="SHA-256 of the stored bytes; duplicates share it")
    format: str = Field(description="Detected format, e.g. wfdb, hl7-aecg, dicom")
    source_uri: str | None = None
    patient_ref: str | None = Field(None, description="FHIR reference given at upload")
    acquired_at: datetime | None = Field(None, description="Acquisition time the file states")
    created_at: datetime
    status: Literal["pending", "done", "failed", "rejected"] = Field(
        description="pending: queued or classifying; rejected: the quality gate refused it"
    )
    error: str | None = Field(None, description="Why classification failed (status failed)")
    n_leads: int
    fs: float = Field(description="Sampling rate, Hz")
    duration_s: float
    created: bool = Field(False, description="True when this request stored it (False: duplicate)")
    result: dict[str, Any] | None = Field(None, description="The classification, when ready")

    @classmethod
    def of(cls, info: EcgInfo, result: StoredResult | None = None) -> EcgOut:
        return cls(
            id=info.id,
            sha256=info.sha256,
            format=info.format,
            source_uri=info.source_uri,
            patient_ref=info.patient_ref,
            acquired_at=info.acquired_at,
            created_at=info.created_at,
            status=info.status,
            error=info.error,
            n_leads=info.n_leads,
            fs=info.fs,
            duration_s=info.duration_s,
            created=info.created,
            result=_result_dict(result),
        )


class ResultOut(BaseModel):
    ecg_id: str
    model_version: str
    created_at: datetime
    result: dict[str, Any] = Field(
        description="ClassificationResult: quality, scores, measurements"
    )


def _result_dict(result: StoredResult | None) -> dict[str, Any] | None:
    return result.result.to_dict() if result else None


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Not a readable ECG (OperationOutcome says why)"},
    401: {"description": "Missing or wrong bearer token"},
    413: {
        "description": "Body over max_request_bytes, or an ECG over max_ecg_samples, "
        "max_ecg_leads or max_ecg_decoded_bytes (OperationOutcome names the limit)"
    },
    415: {"description": "Unsupported content type"},
    422: {"description": "JSON that is not a usable FHIR Observation/DocumentReference"},
}


# -- endpoints ----------------------------------------------------------------------------------


@router.post(
    "",
    summary="Upload an ECG: store it, classify it, write results back when configured",
    status_code=201,
    response_model=EcgOut,
    response_model_exclude_none=True,
    responses={200: {"description": "Already stored (same SHA-256)", "model": EcgOut}, **_ERRORS},
)
async def upload_ecg(
    request: Request,
    patient: str | None = Query(
        None, max_length=256, description="FHIR reference of the patient, e.g. Patient/123"
    ),
    wait_s: float = Query(
        0.0, ge=0.0, le=MAX_WAIT_S, description="Wait this long for the result (seconds)"
    ),
    actor: Actor = Depends(require_ingest_token),
    runtime: Runtime = Depends(get_runtime),
) -> JSONResponse:
    limit = body_limit(runtime.settings)  # the middleware's limit, checked as it is read
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == "multipart/form-data":
            files = await multipart_files(request, limit)
            info = await run_in_threadpool(
                runtime.ecgs.accept_files, files, patient_ref=patient, actor=actor,
                source_uri=None if len(files) > 1 else next(iter(files)),
            )  # fmt: skip
        elif content_type in JSON_TYPES:
            data = from_fhir_json(await read_limited(request, limit))
            info = await run_in_threadpool(
                runtime.ecgs.accept_bytes, data, patient_ref=patient, actor=actor
            )
        elif content_type in RAW_TYPES:
            data = await read_limited(request, limit)
            if not data:
                raise InputProblem(400, "required", "the body is empty; send the ECG file")
            info = await run_in_threadpool(
                runtime.ecgs.accept_bytes, data, patient_ref=patient, actor=actor
            )
        else:
            raise InputProblem(
                415,
                "not-supported",
                f"content type {content_type or '(none)'!r} is not accepted; use "
                "multipart/form-data, application/fhir+json or application/octet-stream",
            )
    except EcgFormatError as exc:
        # over a size limit (declared shape, decompressed size): 413, naming the setting
        too_large = isinstance(exc, EcgTooLarge)
        problem = InputProblem(
            413 if too_large else 400, "too-costly" if too_large else "invalid", str(exc)
        )
        _audit_refusal(runtime, actor, patient, problem)
        return problem_response(problem)
    except InputProblem as problem:
        _audit_refusal(runtime, actor, patient, problem)
        return problem_response(problem)
    await run_in_threadpool(runtime.jobs.submit, info.id)
    result = None
    if wait_s > 0:
        result = (await run_in_threadpool(runtime.jobs.wait, [info.id], wait_s))[info.id]
        fresh = await run_in_threadpool(runtime.ecgs.get_info, info.id)
        if fresh is not None:  # the status moved on; ``created`` belongs to this request
            info = replace(fresh, created=info.created)
    body = EcgOut.of(info, result).model_dump(mode="json", exclude_none=True)
    return JSONResponse(
        body, status_code=201 if body["created"] else 200, headers={"Location": f"/ecgs/{info.id}"}
    )


def _audit_refusal(
    runtime: Runtime, actor: Actor, patient: str | None, problem: InputProblem
) -> None:
    with contextlib.suppress(AuditError):
        runtime.audit.record(
            "ingest",
            outcome="failure",
            actor=actor,
            patient=patient,
            detail={"status": problem.status, "reason": problem.message[:500]},
        )


def _info_or_404(runtime: Runtime, ecg_id: str) -> EcgInfo:
    """The stored ECG's metadata, or a 404 naming the id (called after the token check)."""
    info = runtime.ecgs.get_info(ecg_id)
    if info is None:
        raise HTTPException(status_code=404, detail=f"No ECG with id {ecg_id}.")
    return info


@router.get(
    "/{ecg_id}",
    summary="One stored ECG: metadata, status and (when ready) its result",
    response_model=EcgOut,
    response_model_exclude_none=True,
    responses={401: _ERRORS[401], 404: {"description": "No such ECG"}},
)
def get_ecg(
    ecg_id: str,
    _actor: Actor = Depends(require_ingest_token),
    runtime: Runtime = Depends(get_runtime),
) -> EcgOut:
    return EcgOut.of(_info_or_404(runtime, ecg_id), runtime.jobs.result(ecg_id))


@router.get(
    "/{ecg_id}/result",
    summary="The classification of one ECG",
    response_model=ResultOut,
    responses={
        202: {"description": "Not classified yet (pending)"},
        401: _ERRORS[401],
        404: {"description": "No such ECG"},
        409: {"description": "Classification failed; POST /ecgs/{id}/classify retries it"},
    },
)
def get_result(
    ecg_id: str,
    _actor: Actor = Depends(require_ingest_token),
    runtime: Runtime = Depends(get_runtime),
) -> Any:
    info = _info_or_404(runtime, ecg_id)
    stored = runtime.jobs.result(ecg_id)
    if stored is not None:
        return ResultOut(
            ecg_id=stored.ecg_id,
            model_version=stored.model_version,
            created_at=stored.created_at,
            result=stored.result.to_dict(),
        )
    if info.status == "failed":
        return JSONResponse(
            operation_outcome(f"classification failed: {info.error}", "exception"),
            status_code=409,
            media_type="application/fhir+json",
        )
    return JSONResponse({"ecg_id": ecg_id, "status": info.status}, status_code=202)


@router.post(
    "/{ecg_id}/classify",
    summary="Queue classification again (retries a failed ECG; a no-op when classified)",
    status_code=202,
    responses={401: _ERRORS[401], 404: {"description": "No such ECG"}},
)
def classify_again(
    ecg_id: str,
    _actor: Actor = Depends(require_ingest_token),
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, str]:
    try:
        runtime.jobs.submit(ecg_id)
    except KeyError:
        raise HTTPException(status_code=404, detail=f"No ECG with id {ecg_id}.") from None
    return {"ecg_id": ecg_id, "status": "queued"}
