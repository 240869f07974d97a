"""Reading what the EHR prefetched, and rendering prefetch templates into queries.

A prefetch key can be (CDS Hooks 2.0.1, "Prefetch"):

* missing — the client chose not to fill it: the service fetches it itself;
* ``null`` — the client looked and there is no data: nothing to fetch;
* an ``OperationOutcome`` — the client's query failed: fetch it ourselves if we can;
* a searchset ``Bundle`` — possibly paged (``link`` with relation ``next``);
* a single resource (a read template such as ``Patient/{{context.patientId}}``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

PrefetchState = Literal["present", "null", "missing", "error"]

_TOKEN = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")


class PrefetchError(ValueError):
    """A prefetch value that is not FHIR JSON (answered with 400, naming the key)."""


@dataclass(frozen=True)
class PrefetchItem:
    state: PrefetchState
    resources: list[dict[str, Any]] = field(default_factory=list)
    #: The ``next`` page of a paged searchset, when there is one.
    next_url: str | None = None
    #: The OperationOutcome's text when state is "error".
    problem: str | None = None


def read_prefetch(prefetch: dict[str, Any] | None, key: str) -> PrefetchItem:
    """Classify and unpack one prefetch key."""
    if prefetch is None or key not in prefetch:
        return PrefetchItem(state="missing")
    value = prefetch[key]
    if value is None:
        return PrefetchItem(state="null")
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise PrefetchError(f"prefetch.{key} must be a FHIR resource, a Bundle or null")
    resource_type = value["resourceType"]
    if resource_type == "OperationOutcome":
        return PrefetchItem(state="error", problem=outcome_text(value))
    if resource_type == "Bundle":
        resources, next_url = bundle_resources(value, key)
        return PrefetchItem(state="present", resources=resources, next_url=next_url)
    return PrefetchItem(state="present", resources=[value])


def bundle_resources(
    bundle: dict[str, Any], where: str = "bundle"
) -> tuple[list[dict[str, Any]], str | None]:
    """The matched resources of a searchset Bundle and its ``next`` link.

    Included resources (``search.mode = include``) and OperationOutcome warnings are left
    out: they are not search results.
    """
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise PrefetchError(f"{where}: Bundle.entry must be a list")
    resources: list[dict[str, Any]] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise PrefetchError(f"{where}: Bundle.entry items must be objects")
        resource = entry.get("resource")
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            continue
        search = entry.get("search")
        mode = search.get("mode") if isinstance(search, dict) else None
        if mode in ("include", "outcome") or resource["resourceType"] == "OperationOutcome":
            continue
        resources.append(resource)
    links = bundle.get("link") or []
    if not isinstance(links, list):
        raise PrefetchError(f"{where}: Bundle.link must be a list")
    next_url = None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            next_url = str(link["url"])
    return resources, next_url


def outcome_text(outcome: dict[str, Any]) -> str:
    issues = outcome.get("issue") or []
    texts = []
    for issue in issues if isinstance(issues, list) else []:
        if isinstance(issue, dict):
            details = issue.get("details")
            text = details.get("text") if isinstance(details, dict) else None
            texts.append(str(issue.get("diagnostics") or text or issue.get("code") or ""))
    return "; ".join(t for t in texts if t) or "OperationOutcome without text"


def render_template(template: str, context: dict[str, Any]) -> str | None:
    """Fill ``{{context.x}}`` tokens from the hook context; None if one cannot be filled.

    Only top-level primitive context fields are usable (spec rule). ``{{userPatientId}}``
    and friends are derived from ``context.userId`` (``Patient/123`` -> ``123``).
    """
    missing = False

    def fill(match: re.Match[str]) -> str:
        nonlocal missing
        name = match.group(1)
        value: Any = None
        if name.startswith("context."):
            value = context.get(name[len("context.") :])
        else:
            user_id = context.get("userId")
            prefix = {
                "userPractitionerId": "Practitioner/",
                "userPractitionerRoleId": "PractitionerRole/",
                "userPatientId": "Patient/",
                "userRelatedPersonId": "RelatedPerson/",
            }.get(name)
            if prefix and isinstance(user_id, str) and user_id.startswith(prefix):
                value = user_id[len(prefix) :]
        if not isinstance(value, str | int | float) or isinstance(value, bool) or value == "":
            missing = True
            return ""
        return str(value)

    rendered = _TOKEN.sub(fill, template)
    return None if missing else rendered
