"""A property-based sweep of the whole HTTP surface, generated from the OpenAPI document.

For every operation the service documents, Hypothesis draws path and query parameters and
bodies from the operation's own schemas (``$ref``\\s resolved), mixed with hostile values
(NUL, lone surrogates, huge numbers, deep nesting, junk bytes, wrong content types), and
sends them with a valid credential most of the time (a fresh EHR JWT with the right
audience, the audit or ingest token) so that requests reach the handlers, not only the
authentication. Every answer must be below 500, within a generous per-request timeout (a
hang detector, not a speed test). The example count is fixed and derandomised, so the
sweep is the same in every run; the number of requests sent is printed and written to
``sweep-requests.json`` in the test's temporary folder.

schemathesis is not available on this project's package index, so the generator is
Hypothesis directly.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.conftest import (
    AUDIT_SECRET,
    INGEST_TOKEN,
    ISS,
    start_service,
    stop_service,
)
from tests.service.ehr import EhrKey, sandbox_claims

#: Examples per operation; 21 operations x 160 = 3,360 requests (plus the discovery call).
EXAMPLES_PER_OPERATION = 160
#: Far above any answer this service gives; a request that takes this long is a hang.
HANG_TIMEOUT_S = 30.0


@dataclass
class Sweep:
    base_url: str
    key: EhrKey
    schema: dict[str, Any]
    client: httpx.Client
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Sweep]:
    folder = tmp_path_factory.mktemp("sweep")
    # Refusals are not throttled here: the sweep refuses itself thousands of tokens on
    # purpose and must reach the handlers behind them (test_credentials checks throttling).
    base, process, key, log = start_service(folder, model_dir, auth__failure_window_s="0")
    # A fresh connection per request: a kept-alive one can be closed by the server's idle
    # timeout (5 s) just as the next example is sent, between two of the sweep's thousands
    # of requests, and the client then reads "server disconnected" (seen twice, GET /readyz
    # and POST /viewer/logout, each passing on Hypothesis's retry). A crash still shows as
    # a refused connection or a missing answer on the retry.
    client = httpx.Client(
        base_url=base, timeout=HANG_TIMEOUT_S, limits=httpx.Limits(max_keepalive_connections=0)
    )
    try:
        schema = client.get("/openapi.json").json()
        state = Sweep(base, key, schema, client)
        yield state
        report = {
            "requests": state.sent,
            "operations": len(state.by_operation),
            "statuses": dict(sorted(state.statuses.items())),
            "per_operation": dict(sorted(state.by_operation.items())),
        }
        print(f"\nsweep: {json.dumps(report)}")
        (folder / "sweep-requests.json").write_text(json.dumps(report, indent=2))
        assert state.sent >= 3000
    finally:
        client.close()
        stop_service(process, log)


def _operations() -> list[tuple[str, str]]:
    from cds_service.app import create_app
    from cds_service.settings import Settings

    paths = create_app(Settings(preload_model=False)).openapi()["paths"]
    return [(method.upper(), path) for path, ops in paths.items() for method in ops]


# -- strategies ---------------------------------------------------------------------------------

_NASTY_TEXT = st.sampled_from(
    [
        "",
        "\x00",
        "a\x00b",
        "\ud800",
        "\udfff",
        "../../etc/passwd",
        "%00",
        "%2e%2e%2f",
        "[click](javascript:alert(1))",
        "<script>alert(1)</script>",
        "9" * 25,
        "-1",
        "1e309",
        "NaN",
        "Patient/" + "x" * 300,
        "http://127.0.0.1:abc/fhir",
        "http://127.0.0.1:99999/fhir",
        "file:///etc/passwd",
        "\u202e\ufeff",
        "A" * 5000,
    ]
)
_TEXT = st.one_of(st.text(max_size=40), _NASTY_TEXT)
_NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 2**63, 2**64, 10**30]),
)
_JUNK_JSON = st.recursive(
    st.none() | st.booleans() | _NUMBERS | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root["components"]["schemas"][name]
    return schema


def _from_schema(schema: dict[str, Any], root: dict[str, Any], depth: int = 0) -> Any:
    """A strategy for values of ``schema``, with hostile values mixed in at every level."""
    schema = _resolve(schema, root)
    if depth > 5:
        return _JUNK_JSON
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return st.one_of([_from_schema(o, root, depth + 1) for o in options])
    if "enum" in schema:
        return st.one_of(st.sampled_from(schema["enum"]), _TEXT)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        fields = {name: _from_schema(sub, root, depth + 1) for name, sub in properties.items()}
        required_part = st.fixed_dictionaries({k: v for k, v in fields.items() if k in required})
        optional_part = st.fixed_dictionaries(
            {}, optional={k: v for k, v in fields.items() if k not in required}
        )
        shaped = st.tuples(required_part, optional_part).map(lambda pair: {**pair[0], **pair[1]})
        return st.one_of(shaped, shaped, shaped, _JUNK_JSON)
    if kind == "array":
        item = _from_schema(schema.get("items", {}), root, depth + 1)
        return st.one_of(st.lists(item, max_size=3), _JUNK_JSON)
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "uuid":
            return st.one_of(st.uuids().map(str), _TEXT)
        if fmt == "date-time":
            return st.one_of(st.datetimes().map(lambda d: d.isoformat() + "Z"), _TEXT)
        return _TEXT
    if kind in ("integer", "number"):
        return st.one_of(_NUMBERS, _TEXT)
    if kind == "boolean":
        return st.one_of(st.booleans(), _TEXT)
    return _JUNK_JSON


def _param_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _safe(text: str) -> str:
    """A URL-encodable form of generated text (lone surrogates as their escapes)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# -- the sweep ----------------------------------------------------------------------------------


def _credentials(sweep: Sweep, path: str, valid: bool) -> dict[str, str]:
    if not valid:
        return {"Authorization": "Bearer " + "junk"}
    if path.startswith("/cds-services"):
        token = sweep.key.sign(sandbox_claims(ISS, sweep.base_url + path))
        return {"Authorization": f"Bearer {token}"}
    if path.startswith(("/audit", "/fhir")):
        return {"Authorization": f"Bearer {AUDIT_SECRET}"}
    if path.startswith("/ecgs"):
        return {"Authorization": f"Bearer {INGEST_TOKEN}"}
    return {}


@pytest.mark.slow
@pytest.mark.parametrize(("method", "template"), _operations())
def test_no_operation_answers_5xx_or_hangs(sweep: Sweep, method: str, template: str) -> None:
    operation = sweep.schema["paths"][template][method.lower()]
    parameters = operation.get("parameters", [])
    content = operation.get("requestBody", {}).get("content", {})

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def probe(data: st.DataObject) -> None:
        path = template
        query: list[tuple[str, str]] = []
        for parameter in parameters:
            value = data.draw(_from_schema(parameter.get("schema", {}), sweep.schema))
            if parameter["in"] == "path":
                text = _safe(_param_text(value)) or "x"
                path = path.replace("{" + parameter["name"] + "}", quote(text, safe=""))
            elif parameter["in"] == "query" and data.draw(st.booleans()):
                values = value if isinstance(value, list) else [value]
                query += [(parameter["name"], _safe(_param_text(v))) for v in values[:3]]
        if data.draw(st.integers(0, 9)) == 0:  # parameters nobody declared
            query.append((data.draw(st.text(string.ascii_letters, min_size=1)), "1"))
        headers = _credentials(sweep, path.split("?")[0], valid=data.draw(st.integers(0, 4)) > 0)
        body: bytes | None = None
        if method == "POST":
            body, content_type = _body(data, content, sweep.schema, template)
            headers["Content-Type"] = content_type
        request = sweep.client.build_request(
            method, path, params=query, content=body, headers=headers
        )
        response = sweep.client.send(request)
        sweep.sent += 1
        sweep.statuses[response.status_code] += 1
        sweep.by_operation[f"{method} {template}"] += 1
        # A 503 the operation documents is an answer, not a failure: /readyz says "not ready"
        # (e.g. while the model loads) that way, with the reason in its body.
        documented_503 = response.status_code == 503 and "503" in operation.get("responses", {})
        assert response.status_code < 500 or documented_503, (
            f"{method} {request.url} -> {response.status_code}: {response.text[:300]}"
        )

    probe()


def _body(
    data: st.DataObject, content: dict[str, Any], root: dict[str, Any], template: str
) -> tuple[bytes, str]:
    choice = data.draw(st.integers(0, 9))
    if "application/json" in content and choice < 7:
        value = data.draw(_from_schema(content["application/json"].get("schema", {}), root))
        text = json.dumps(value, ensure_ascii=data.draw(st.booleans()), allow_nan=False)
        return text.encode("utf-8", "surrogatepass"), "application/json"
    if "application/x-www-form-urlencoded" in content and choice < 7:
        schema = _resolve(content["application/x-www-form-urlencoded"]["schema"], root)
        fields = {
            name: _safe(_param_text(data.draw(_from_schema(sub, root))))
            for name, sub in schema.get("properties", {}).items()
            if data.draw(st.booleans())
        }
        return httpx.QueryParams(fields).__str__().encode(), "application/x-www-form-urlencoded"
    if template == "/ecgs" and choice < 7:
        kind = data.draw(
            st.sampled_from(
                ["application/octet-stream", "application/fhir+json", "multipart/form-data"]
            )
        )
        return data.draw(st.binary(max_size=2048)), kind
    nasty = data.draw(
        st.sampled_from(
            [
                (b"[" * 5000 + b"]" * 5000, "application/json"),
                (b'{"a": "\\ud800"}', "application/json"),
                (b'{"n": 1' + b"0" * 5000 + b"}", "application/json"),
                (b"\xff\xfe\x00", "application/json"),
                (b"<x>&a;</x>", "application/xml"),
                (b"--b\r\n\r\n", "multipart/form-data; boundary=b"),
                (b"", "text/plain"),
            ]
        )
    )
    return nasty
