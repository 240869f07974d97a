"""CDS Hooks 2.0.1 wire schemas (pydantic), at the edge of the service.

Responses never carry ``null`` or empty strings, lists or objects (the spec forbids them):
routes serialise through :func:`dump`, which drops them recursively, and the models'
validators refuse the empty values a builder could otherwise emit.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from adapters.record import utc_representable

NonEmpty = Annotated[str, StringConstraints(min_length=1)]

#: Feedback limits, the same for the CDS Hooks feedback endpoint and the viewer's form: a
#: clinician's comment is a sentence or two, and one call reports on the cards of one view.
MAX_COMMENT_CHARS = 2000
MAX_FEEDBACK_ITEMS = 100
MAX_ACCEPTED_SUGGESTIONS = 20
#: Card and suggestion ids are the UUIDs we issued; anything longer is not one of ours.
_Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class _Wire(BaseModel):
    """Base for response objects: fields in spec camelCase, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---------------------------------------------------------------------------- discovery


class ServiceDescription(_Wire):
    hook: NonEmpty
    id: NonEmpty
    title: NonEmpty | None = None
    description: NonEmpty
    prefetch: dict[str, NonEmpty] | None = None
    usageRequirements: NonEmpty | None = None


class Discovery(_Wire):
    services: list[ServiceDescription]


# ---------------------------------------------------------------------------- request


class FhirAuthorization(BaseModel):
    """OAuth 2.0 access the EHR grants for this call; transient, never logged or stored."""

    model_config = ConfigDict(extra="allow")

    access_token: NonEmpty
    token_type: Literal["Bearer"]
    expires_in: int
    scope: NonEmpty
    subject: NonEmpty
    patient: str | None = None

    @field_validator("access_token")
    @classmethod
    def _header_safe(cls, value: str) -> str:
        # It goes into an Authorization header: visible ASCII only (RFC 6750's b64token is
        # a subset). Said without the value, which is a credential.
        if not value.isascii() or not value.isprintable() or " " in value:
            raise ValueError("must be visible ASCII characters only (an RFC 6750 bearer token)")
        return value

    @field_validator("token_type", mode="before")
    @classmethod
    def _bearer_any_case(cls, value: Any) -> Any:
        # RFC 6749 section 5.1: the token type is case insensitive ("BEARER" is "Bearer")
        return "Bearer" if isinstance(value, str) and value.lower() == "bearer" else value

    def __repr__(self) -> str:  # keep the token out of tracebacks and debug logs
        return f"FhirAuthorization(token_type={self.token_type!r}, scope={self.scope!r}, ...)"

    __str__ = __repr__


class HookRequest(BaseModel):
    """A service call. Extra top-level fields are tolerated (forward compatibility)."""

    model_config = ConfigDict(extra="allow")

    hook: NonEmpty
    hookInstance: uuid.UUID
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None
    fhirServer: NonEmpty | None = None
    fhirAuthorization: FhirAuthorization | None = None

    @field_validator("fhirServer")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("fhirServer must be an absolute http(s) URL")
        return value

    @model_validator(mode="after")
    def _server_with_authorization(self) -> HookRequest:
        if self.fhirAuthorization is not None and self.fhirServer is None:
            raise ValueError("fhirServer is required when fhirAuthorization is sent")
        return self


# ---------------------------------------------------------------------------- response


class Coding(_Wire):
    system: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    code: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    display: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None


class Source(_Wire):
    label: NonEmpty
    url: NonEmpty | None = None
    icon: NonEmpty | None = None
    topic: Coding | None = None


class Action(_Wire):
    type: Literal["create", "update", "delete"]
    description: NonEmpty
    resource: dict[str, Any] | None = None
    resourceId: NonEmpty | None = None


class Suggestion(_Wire):
    label: NonEmpty
    uuid: NonEmpty | None = None
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Link(_Wire):
    label: NonEmpty
    url: NonEmpty
    type: Literal["absolute", "smart"]
    appContext: NonEmpty | None = None
    autolaunchable: bool | None = None


class Card(_Wire):
    uuid: NonEmpty | None = None
    summary: Annotated[str, StringConstraints(min_length=1, max_length=139)]
    detail: NonEmpty | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding] | None = None
    links: list[Link] | None = None

    @model_validator(mode="after")
    def _selection_behavior(self) -> Card:
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("selectionBehavior is required when suggestions are present")
        return self


class CardsResponse(_Wire):
    cards: list[Card]
    systemActions: list[Action] | None = None


# ---------------------------------------------------------------------------- feedback


class AcceptedSuggestion(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: _Id


class OverrideReasonIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    reason: Coding | None = None
    userComment: Annotated[str, StringConstraints(max_length=MAX_COMMENT_CHARS)] | None = None


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    card: _Id
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: (
        Annotated[list[AcceptedSuggestion], Field(max_length=MAX_ACCEPTED_SUGGESTIONS)] | None
    ) = None
    overrideReason: OverrideReasonIn | None = None
    outcomeTimestamp: datetime

    @field_validator("outcomeTimestamp")
    @classmethod
    def _in_utc_range(cls, value: datetime) -> datetime:
        if utc_representable(value) is None:
            raise ValueError("outcomeTimestamp is outside years 1-9999 once taken to UTC")
        return value

    @model_validator(mode="after")
    def _accepted_has_suggestions(self) -> FeedbackItem:
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("an accepted outcome must list acceptedSuggestions")
        return self


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    feedback: list[FeedbackItem] = Field(min_length=1, max_length=MAX_FEEDBACK_ITEMS)


class FeedbackAck(_Wire):
    stored: int


# ---------------------------------------------------------------------------- helpers


def prune(value: Any) -> Any:
    """Drop ``None`` and empty strings, lists and objects, recursively (spec rule)."""
    if isinstance(value, dict):
        pruned = {k: prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if not _empty(v)}
    if isinstance(value, list | tuple):
        items = [prune(v) for v in value]
        return [v for v in items if not _empty(v)]
    return value


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


def dump(model: BaseModel, *, keep_empty: tuple[str, ...] = ()) -> dict[str, Any]:
    """Serialise a response model for the wire. ``keep_empty`` names top-level lists that
    the spec requires even when empty (``cards``, ``services``)."""
    raw = model.model_dump(mode="json", exclude_none=True, by_alias=True)
    out = prune(raw)
    for key in keep_empty:
        out.setdefault(key, [])
    return dict(out)
