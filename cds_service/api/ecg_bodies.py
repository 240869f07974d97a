"""Reading the body of a ``POST /ecgs`` upload, within the size limit, into ECG file bytes.

Three shapes (see :mod:`cds_service.api.ecgs`): a multipart form of one or more files, a FHIR
Observation or DocumentReference as JSON, or the raw file. Every refusal is an
:class:`InputProblem`, which the route answers with an OperationOutcome and audits.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from cds_service.errors import BodyTooLarge

RAW_TYPES = {
    "application/octet-stream",
    "application/dicom",
    "application/xml",
    "text/xml",
    "application/hl7-v3+xml",
}
JSON_TYPES = {"application/json", "application/fhir+json"}


# -- errors -------------------------------------------------------------------------------------


class InputProblem(Exception):
    """Bad input: answered with an OperationOutcome and recorded in the audit trail."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def operation_outcome(message: str, code: str = "invalid") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": message}],
    }


def problem_response(problem: InputProblem) -> JSONResponse:
    return JSONResponse(
        operation_outcome(problem.message, problem.code),
        status_code=problem.status,
        media_type="application/fhir+json",
    )


# -- body parsing -------------------------------------------------------------------------------


async def read_limited(request: Request, limit: int) -> bytes:
    _refuse_declared_excess(request, limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise over_limit(limit)
            chunks.append(chunk)
    except BodyTooLarge:  # the size middleware counted first: answered and audited here
        raise over_limit(limit) from None
    return b"".join(chunks)


def _refuse_declared_excess(request: Request, limit: int) -> None:
    """A declared Content-Length over the limit is refused before any of the body is read."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise InputProblem(
            413,
            "too-costly",
            f"body is {length} bytes, over the {limit}-byte limit (setting max_request_bytes)",
        )


def over_limit(limit: int) -> InputProblem:
    return InputProblem(
        413, "too-costly", f"body is over the {limit}-byte limit (setting max_request_bytes)"
    )


async def multipart_files(request: Request, limit: int) -> dict[str, bytes]:
    _refuse_declared_excess(request, limit)
    try:
        form = await request.form(max_files=16, max_fields=16)
    except BodyTooLarge:  # a chunked body past the limit is not a malformed one
        raise over_limit(limit) from None
    except Exception as exc:  # starlette raises its own MultiPartException on malformed bodies
        raise InputProblem(400, "invalid", f"malformed multipart body: {exc}") from None
    files: dict[str, bytes] = {}
    total = 0
    try:
        for _key, value in form.multi_items():
            if not isinstance(value, UploadFile):
                continue
            data = await value.read()
            total += len(data)
            if total > limit:
                raise InputProblem(413, "too-costly", f"upload is over the {limit}-byte limit")
            name = (value.filename or f"part{len(files)}").replace("\\", "/").rsplit("/", 1)[-1]
            if name in files:
                # One name is one file of the record: keeping either would drop the other.
                raise InputProblem(
                    400,
                    "invalid",
                    f"file name {name!r} is sent more than once (folders in part names are "
                    "dropped); send each file once, under its own name",
                )
            files[name] = data
    finally:
        await form.close()
    if not files:
        raise InputProblem(
            400, "required", "multipart body has no file part; send the ECG as a 'file' part"
        )
    return files


def from_fhir_json(body: bytes) -> bytes:
    """The ECG bytes in a FHIR resource: an Observation as is, a DocumentReference attachment."""
    try:
        resource = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, ...
        raise InputProblem(400, "structure", f"body is not valid JSON: {exc}") from None
    if not isinstance(resource, dict) or "resourceType" not in resource:
        raise InputProblem(422, "structure", "JSON body is not a FHIR resource (no resourceType)")
    kind = resource["resourceType"]
    if kind == "Observation":
        return body
    if kind == "DocumentReference":
        try:
            attachment = resource["content"][0]["attachment"]
        except (KeyError, IndexError, TypeError):
            raise InputProblem(
                422, "required", "DocumentReference has no content[0].attachment"
            ) from None
        data = attachment.get("data") if isinstance(attachment, dict) else None
        if not data:
            raise InputProblem(
                422,
                "not-supported",
                "DocumentReference attachment has no inline data; attachment.url is not "
                "fetched, send the file itself",
            )
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InputProblem(422, "invalid", "attachment.data is not valid base64") from None
    raise InputProblem(
        422, "not-supported", f"resourceType {kind!r}: send an Observation or a DocumentReference"
    )
