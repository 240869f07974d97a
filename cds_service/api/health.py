"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

import models

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/healthz", response_model=Health, summary="Liveness probe")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/model-card",
    summary="The shipped model's card (data, training, metrics, limitations)",
    response_class=PlainTextResponse,
    responses={404: {"description": "No model card shipped with this build"}},
)
def model_card() -> PlainTextResponse:
    path = Path(models.__file__).parent / "weights" / "MODEL_CARD.md"
    if not path.is_file():
        return PlainTextResponse("No model card in this build.", status_code=404)
    return PlainTextResponse(path.read_text(encoding="utf-8"), media_type="text/markdown")
