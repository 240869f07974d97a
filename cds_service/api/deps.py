"""Typed FastAPI dependencies: what a route may ask for, read from the running app.

Routes declare what they need (``runtime: RuntimeDep``, ``ecgs: EcgStoreDep``...) instead of
reaching into ``request.app.state`` themselves. Until the runtime has started (the app's
lifespan), every dependency that needs it answers 503.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from cds_service.audit import AuditTrail
from cds_service.runtime import Runtime
from cds_service.settings import Settings
from cds_service.storage.cards import CardStore
from cds_service.storage.ecgs import EcgStore
from cds_service.storage.jobs import JobLedger


async def get_runtime(request: Request) -> Runtime:
    """The process's runtime, or 503 while the service is starting. Async: a plain function
    would cost every request a trip to a worker thread."""
    runtime = getattr(request.app.state, "runtime", None)
    if not isinstance(runtime, Runtime):
        raise HTTPException(status_code=503, detail="The service is starting; try again.")
    return runtime


async def get_settings(request: Request) -> Settings:
    """The app's settings (available before the runtime has started)."""
    settings: Settings = request.app.state.settings
    return settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_audit_trail(runtime: RuntimeDep) -> AuditTrail:
    return runtime.audit


async def get_ecg_store(runtime: RuntimeDep) -> EcgStore:
    return runtime.ecgs


async def get_job_ledger(runtime: RuntimeDep) -> JobLedger:
    return runtime.jobs


async def get_card_store(runtime: RuntimeDep) -> CardStore:
    return runtime.cards


AuditDep = Annotated[AuditTrail, Depends(get_audit_trail)]
EcgStoreDep = Annotated[EcgStore, Depends(get_ecg_store)]
JobLedgerDep = Annotated[JobLedger, Depends(get_job_ledger)]
CardStoreDep = Annotated[CardStore, Depends(get_card_store)]
