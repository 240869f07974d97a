"""The reviewers' list: recent ECGs with filters (finding, probability, dates, feedback)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from cds_service.api.deps import get_runtime
from cds_service.api.viewer_access import (
    audit_viewer,
    denied,
    feedback_view,
    is_reviewer,
    redirect,
    render_page,
    set_reviewer_cookie,
)
from cds_service.runtime import Runtime
from cds_service.viewer.links import verify_list_token
from cds_service.viewer.present import format_time, label_names, percent

#: The list shows at most the newest this-many ECGs that pass the filters.
LIST_SCAN_LIMIT = 1000
PAGE_SIZE = 25

router = APIRouter()


@dataclass(frozen=True)
class _Filters:
    finding: str | None
    min_prob: float | None
    date_from: date | None
    date_to: date | None
    feedback: Literal["yes", "no"] | None
    page: int

    @property
    def min_prob_text(self) -> str:
        return "" if self.min_prob is None else f"{self.min_prob * 100:g}"

    @property
    def date_from_text(self) -> str:
        return self.date_from.isoformat() if self.date_from else ""

    @property
    def date_to_text(self) -> str:
        return self.date_to.isoformat() if self.date_to else ""

    def query(self, page: int) -> str:
        params = {
            "finding": self.finding or "",
            "min_prob": self.min_prob_text,
            "date_from": self.date_from_text,
            "date_to": self.date_to_text,
            "feedback": self.feedback or "",
            "page": str(page),
        }
        return "?" + urlencode({k: v for k, v in params.items() if v})


def _parse_filters(
    finding: str | None,
    min_prob: str | None,
    date_from: str | None,
    date_to: str | None,
    feedback: str | None,
    page: int,
) -> _Filters:
    """Validated list filters; ``ValueError`` names the field and what is wrong."""
    prob: float | None = None
    if min_prob:
        try:
            prob = float(min_prob) / 100
        except ValueError:
            raise ValueError("Probability must be a number from 0 to 100.") from None
        if not 0 <= prob <= 1:
            raise ValueError("Probability must be from 0 to 100.")

    def day(value: str | None, name: str) -> date | None:
        if not value:
            return None
        try:
            parsed = date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name} must be a date (YYYY-MM-DD).") from None
        if parsed >= date.max:  # "to" includes its whole day: the day after must exist
            raise ValueError(f"{name} must be before {date.max.isoformat()}.")
        return parsed

    start, end = day(date_from, "Received from"), day(date_to, "Received to")
    if start and end and end < start:
        raise ValueError("The 'to' date is before the 'from' date.")
    if feedback not in (None, "", "yes", "no"):
        raise ValueError("Feedback must be 'yes', 'no' or empty.")
    return _Filters(
        finding=finding or None,
        min_prob=prob,
        date_from=start,
        date_to=end,
        feedback=feedback or None,  # type: ignore[arg-type]
        page=max(1, page),
    )


@router.get(
    "/",
    summary="Recent ECGs for reviewers, with filters (reviewer session or reviewer link)",
    response_class=HTMLResponse,
    responses={
        303: {"description": "Sign in first, or a reviewer link was just exchanged for a session"},
        400: {"description": "A filter is not valid"},
    },
)
def ecg_list(
    request: Request,
    token: Annotated[str | None, Query(max_length=200)] = None,
    finding: Annotated[str | None, Query(max_length=64)] = None,
    min_prob: Annotated[str | None, Query(max_length=8)] = None,
    date_from: Annotated[str | None, Query(max_length=10)] = None,
    date_to: Annotated[str | None, Query(max_length=10)] = None,
    feedback: Annotated[str | None, Query(max_length=3)] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    runtime: Runtime = Depends(get_runtime),
) -> Response:
    settings = runtime.settings
    if token is not None:
        if not verify_list_token(settings, token):
            return denied(
                runtime, request, "../", where="viewer-list", reason="invalid reviewer link"
            )
        response = redirect("./")  # the token leaves the address bar and history
        set_reviewer_cookie(response, settings)
        return response
    if not is_reviewer(settings, request):
        return redirect("login")

    names = label_names(settings.catalog_file)
    context: dict[str, Any] = {"root": "../", "label_options": sorted(names.items(),
                               key=lambda kv: kv[1].lower())}  # fmt: skip
    try:
        filters = _parse_filters(finding, min_prob, date_from, date_to, feedback, page)
    except ValueError as exc:
        empty = _Filters(None, None, None, None, None, 1)
        return render_page("list.html", settings, status_code=400, error=str(exc),
                           filters=empty, rows=[], page_text="", finding_name="",
                           **context)  # fmt: skip
    since = (
        datetime.combine(filters.date_from, datetime.min.time(), UTC) if filters.date_from else None
    )
    until = (
        datetime.combine(filters.date_to + timedelta(days=1), datetime.min.time(), UTC)
        if filters.date_to
        else None
    )
    rows: list[dict[str, Any]] = []
    # Every filter is SQL; the finding filters are checked again below against the result
    # the page shows (the current model's, when there are several).
    listed = runtime.ecgs.list_ecgs(
        since=since,
        until=until,
        with_feedback=None if filters.feedback is None else filters.feedback == "yes",
        scored=filters.finding,
        min_probability=filters.min_prob,
        limit=LIST_SCAN_LIMIT,
    )
    for info, stored in listed:
        shown = None
        if stored is not None:
            scores = sorted(stored.result.scores, key=lambda s: s.probability, reverse=True)
            if filters.finding:
                shown = next((s for s in scores if s.label_id == filters.finding), None)
            else:
                shown = scores[0] if scores else None
        if (filters.finding or filters.min_prob is not None) and shown is None:
            continue
        if (
            filters.min_prob is not None
            and shown is not None
            and shown.probability < filters.min_prob
        ):
            continue
        rows.append({"info": info, "score": shown})

    total = len(rows)
    start = (filters.page - 1) * PAGE_SIZE
    page_rows = rows[start : start + PAGE_SIZE]
    feedback_of = runtime.cards.feedback_for_many([row["info"].id for row in page_rows])
    shown_rows = []
    for row in page_rows:
        info, score = row["info"], row["score"]
        fb = feedback_of.get(info.id, [])
        shown_rows.append(
            {
                "href": f"ecg/{quote(info.id, safe='')}",
                "received": format_time(info.created_at),
                "acquired": format_time(info.acquired_at),
                "patient": info.patient_ref or info.file_patient_id or "—",
                "finding": (names.get(score.label_id) or score.text) if score else None,
                "severity": score.severity if score else "info",
                "percent": percent(score.probability) if score else "—",
                "status": info.status,
                "feedback": ", ".join(feedback_view(f)["outcome_text"] for f in fb) or "—",
            }
        )
    audit_viewer(
        runtime,
        "viewer-access",
        client="viewer-reviewer",
        detail={"list": True, "shown": len(shown_rows), "page": filters.page},
    )
    last = start + len(page_rows)
    return render_page(
        "list.html",
        settings,
        filters=filters,
        rows=shown_rows,
        finding_name=names.get(filters.finding or "", filters.finding or ""),
        page_text=f"{start + 1}–{last} of {total}" if total else "",
        prev_href=filters.query(filters.page - 1) if filters.page > 1 else None,
        next_href=filters.query(filters.page + 1) if last < total else None,
        **context,
    )
