"""CDS Hooks 2.0.1 endpoints: discovery, service calls and feedback.

Every route requires the EHR's JWT (:func:`~cds_service.auth.require_ehr_token`): a missing
or bad token is a bare 401. Other errors are OperationOutcome JSON (see
:mod:`cds_service.errors`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
import pydantic_core
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from cds_service.api.deps import get_runtime
from cds_service.auth import VerifiedToken, require_ehr_token
from cds_service.hooks.handlers import handle_feedback, handle_hook
from cds_service.hooks.problems import HookProblem
from cds_service.hooks.schemas import (
    CardsResponse,
    Discovery,
    FeedbackAck,
    FeedbackRequest,
    HookRequest,
    dump,
)
from cds_service.hooks.services import SERVICES, HookService
from cds_service.runtime import Runtime


class _FastJsonRequest(Request):
    """A request whose JSON body pydantic-core's parser reads (several times faster than the
    stdlib's on a prefetch of SampledData, the same values: exact big integers, NaN as the
    stdlib reads it). What it refuses the stdlib parses again, so errors and their positions
    are the stdlib's, as FastAPI reports them."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = pydantic_core.from_json(body)
            except ValueError:
                self._json = json.loads(body)  # raises the error FastAPI answers 400 with
        return self._json


class _FastJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_FastJsonRequest(request.scope, request.receive))

        return route


router = APIRouter(prefix="/cds-services", tags=["cds-hooks"], route_class=_FastJsonRoute)


class FastJSONResponse(JSONResponse):
    """JSON written by orjson: a card carries FHIR resources, and the stdlib encoder was a
    noticeable share of a cached hook call. Cards hold no NaN (validated wire schema)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed request (OperationOutcome says what is wrong)"},
    401: {"description": "Missing or invalid EHR JWT (empty body)"},
    404: {"description": "No such service"},
    412: {"description": "Needed data neither prefetched nor fetchable"},
    413: {"description": "Request body over the configured size limit"},
}


def _service(service_id: str) -> HookService:
    service = SERVICES.get(service_id)
    if service is None:
        raise HookProblem(404, f"no CDS service {service_id!r}", code="not-found")
    return service


@router.get(
    "",
    response_model=Discovery,
    summary="Discovery: the CDS services offered, with prefetch templates",
    responses={401: _ERRORS[401]},
)
async def discovery(_: VerifiedToken = Depends(require_ehr_token)) -> JSONResponse:
    body = Discovery(services=[service.describe() for service in SERVICES.values()])
    return JSONResponse(dump(body, keep_empty=("services",)))


@router.post(
    "/{service_id}",
    response_model=CardsResponse,
    summary="Call a CDS service (patient-view, order-select, order-sign)",
    responses={k: v for k, v in _ERRORS.items()},
)
async def call_service(
    service_id: str,
    call: HookRequest,
    token: VerifiedToken = Depends(require_ehr_token),
    runtime: Runtime = Depends(get_runtime),
) -> JSONResponse:
    service = _service(service_id)
    cards = await handle_hook(service, call, runtime, token)
    return FastJSONResponse({"cards": cards})


@router.post(
    "/{service_id}/feedback",
    response_model=FeedbackAck,
    summary="Feedback on cards: accepted suggestions or override reasons",
    responses={k: v for k, v in _ERRORS.items() if k != 412},
)
async def feedback(
    service_id: str,
    body: FeedbackRequest,
    token: VerifiedToken = Depends(require_ehr_token),
    runtime: Runtime = Depends(get_runtime),
) -> JSONResponse:
    service = _service(service_id)
    stored = await run_in_threadpool(handle_feedback, service, body, runtime, token)
    return JSONResponse(dump(FeedbackAck(stored=stored)))
