"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: it can do its work).

Readiness checks the database and its schema, that the model is loaded, and in distributed
mode that the broker accepts connections and a worker answers. Each check runs in its own
thread with a deadline, so the probe answers (503) even while a dependency hangs.

Both answer without a credential (orchestrators probe them), so a failed check says what is
wrong but not where: the database's or broker's host, port and user, and the driver's own
message, go to the log (warning, :mod:`cds_service.probes`) for the operator, and
``ecg-cds check-config`` prints them.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)

#: The probe's answer is due within this many seconds, whatever hangs.
READY_DEADLINE_S = 3.0
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")


class Health(BaseModel):
    status: str


class Check(BaseModel):
    ok: bool
    detail: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "unready"]
    checks: dict[str, Check]


@router.get("/healthz", response_model=Health, summary="Liveness probe")
def healthz() -> Health:
    return Health(status="ok")


def _checks(runtime: Any) -> dict[str, Callable[[], str | None]]:
    from cds_service.probes import broker_problem, database_problem, worker_problem

    settings = runtime.settings
    checks: dict[str, Callable[[], str | None]] = {
        "database": lambda: database_problem(runtime.engine, public=True),
        "model": lambda: _model_problem(runtime),
    }
    if settings.jobs.mode == "distributed":
        checks["broker"] = lambda: broker_problem(
            settings.jobs.broker_url, timeout_s=1.5, public=True
        )
        celery_app = getattr(runtime.dispatcher, "_app", None)
        if celery_app is not None:
            checks["workers"] = lambda: worker_problem(celery_app, timeout_s=1.0, public=True)
    return checks


def _model_problem(runtime: Any) -> str | None:
    if runtime._classifier is not None:
        return None
    # Without preload_model nothing else loads it before the first call: start now (once),
    # report not yet.
    runtime.warm_up_in_background()
    return "the model is still loading"


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness probe: database, migrations, model, broker and workers",
    responses={503: {"model": Readiness, "description": "Not ready; checks say why"}},
)
def readyz(request: Request) -> JSONResponse:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        body = Readiness(status="unready", checks={"startup": Check(ok=False, detail="starting")})
        return JSONResponse(body.model_dump(), status_code=503)
    futures = {name: _pool.submit(check) for name, check in _checks(runtime).items()}
    concurrent.futures.wait(futures.values(), timeout=READY_DEADLINE_S)
    checks: dict[str, Check] = {}
    for name, future in futures.items():
        if not future.done():
            checks[name] = Check(ok=False, detail=f"no answer within {READY_DEADLINE_S:g} s")
            continue
        try:
            problem = future.result()
        except Exception as exc:  # a check must never turn the probe into a 500
            log.warning("readiness check %s failed", name, exc_info=True)
            problem = f"the check failed ({type(exc).__name__})"  # its text may say where
        checks[name] = Check(ok=problem is None, detail=problem)
    ready = all(check.ok for check in checks.values())
    body = Readiness(status="ready" if ready else "unready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
