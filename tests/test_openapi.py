"""The API description says what the broker answers: every refusal is ``{"error", "detail"}``
(one shared ``Error`` schema, never FastAPI's validation shape), the refusals each operation
can meet are listed, and ``/metrics`` is Prometheus text. schemathesis checks the answers
themselves against it (tests/test_openapi_fuzz.py)."""

from __future__ import annotations

from typing import Any

from broker.app import create_app
from broker.config import Settings

ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _spec(settings: Settings) -> dict[str, Any]:
    spec: dict[str, Any] = create_app(settings).openapi()
    return spec


def _operations(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": op
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }


def test_every_refusal_has_the_error_shape(settings: Settings) -> None:
    spec = _spec(settings)
    assert spec["components"]["schemas"]["Error"]["required"] == ["error", "detail"]
    assert "HTTPValidationError" not in str(spec)
    for label, op in _operations(spec).items():
        for code, response in op["responses"].items():
            if code.startswith("4"):
                assert response["content"] == {"application/json": {"schema": ERROR_REF}}, label


def test_each_operation_lists_the_refusals_it_can_meet(settings: Settings) -> None:
    ops = _operations(_spec(settings))

    def codes(label: str) -> set[str]:
        return {c for c in ops[label]["responses"] if c.startswith("4")}

    # A token-protected list: no login (401), no scope (403); nothing else.
    assert codes("GET /api/v1/users") == {"401", "403"}
    # A change to a named resource: every refusal of the error tree but the throttle.
    assert codes("PATCH /api/v1/devices/{device_id}") == {
        "400", "401", "403", "404", "409", "413", "422"
    }  # fmt: skip
    # The login checks the password itself and throttles guessing.
    assert {"401", "429"} <= codes("POST /api/v1/auth/login")
    assert "429" in codes("POST /api/v1/consent/lookup")
    # Anonymous and input-free: no refusal at all.
    assert codes("GET /healthz") == set()


def test_metrics_are_text(settings: Settings) -> None:
    content = _spec(settings)["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]
