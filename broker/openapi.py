"""The API description tells the truth about errors.

FastAPI documents only the success of an operation and, for one with parameters, its own
validation shape for 422, which the broker never sends: every refusal is ``{"error",
"detail"}`` from the one mapping in ``broker.app``. This rewrites the generated description
once, in one place, from what each route depends on:

- 401 where the route reads the caller (a malformed or refused bearer token, or no login);
- 403 where it needs a signed-in caller with a settled password (and so its scopes), and on
  any state-changing route that reads a cookie (CSRF);
- 404 where a path names a resource, and on state-changing routes (a body names one too);
- 409 on state-changing routes (a move the state machine refuses, a name taken);
- 400 and 413 where a body is read (one that cannot be parsed at all; one over the size
  limit, refused before anything reads it);
- 422 for a parameter or body that does not validate, or a rule a change breaks;
- 401 and 429 where a route checks credentials or throttles guessing itself
  (:data:`OWN_REFUSALS`: the login, consent codes, a webhook's signature).

Each refers to one shared schema, ``Error``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from broker.auth.deps import current_principal, optional_principal

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "description": "Every refusal: a stable machine code and a sentence for people.",
    "properties": {
        "error": {"type": "string", "description": "machine code, e.g. not_found"},
        "detail": {"type": "string", "description": "what went wrong, for people"},
    },
    "required": ["error", "detail"],
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}

DESCRIPTIONS = {
    400: "The body could not be parsed",
    401: "Not authenticated: no login or bearer token, or a refused one",
    403: "Forbidden: a missing scope, a one-time password to change, or a CSRF token",
    404: "Not found",
    409: "Conflict with the current state",
    410: "Gone: the link was valid but its retention ran out",
    413: "Body too large",
    422: "Invalid request",
    429: "Too many attempts: wait for Retry-After",
}

# What no dependency shows: routes that check credentials themselves (401) and routes that
# throttle guessing (429: the login, consent codes).
OWN_REFUSALS: dict[tuple[str, str], frozenset[int]] = {
    ("POST", "/api/v1/auth/login"): frozenset({401, 429}),
    ("POST", "/api/v1/consent/lookup"): frozenset({429}),
    ("POST", "/api/v1/connectors/{system}/webhook"): frozenset({401, 413}),
    # An end user's history link past its retention (broker.flows.history).
    ("GET", "/api/v1/history/{token}"): frozenset({410}),
    ("GET", "/api/v1/history/{token}/receipts/{session_id}"): frozenset({410}),
}
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _calls(dep)


def error_codes(route: APIRoute, path: str, method: str) -> set[int]:
    """The refusals ``method`` on ``route`` (at ``path``) can answer with."""
    calls = set(_calls(route.dependant))
    changes = method not in SAFE
    dependant = route.dependant
    has_input = bool(
        dependant.path_params
        or dependant.query_params
        or dependant.header_params
        or dependant.cookie_params
        or dependant.body_params
    )
    codes: set[int] = set()
    if optional_principal in calls:
        codes.add(401)
        if changes:
            codes.add(403)
    if current_principal in calls:
        codes.add(403)
    if dependant.path_params or changes:
        codes.add(404)
    if changes:
        codes.add(409)
    if dependant.body_params:
        codes.update((400, 413))
    if has_input or changes:
        codes.add(422)
    return codes | OWN_REFUSALS.get((method, path), frozenset())


def describe_errors(schema: dict[str, Any], routes: list[Any]) -> None:
    """Document each operation's refusals with the shared ``Error`` schema, in place."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    # The routes as FastAPI's own generator walks them (included routers flattened, each
    # with its full path).
    for context in iter_route_contexts(routes):
        route, path = context.original_route, context.path_format
        if not isinstance(route, APIRoute) or not route.include_in_schema or path is None:
            continue
        for method in route.methods or ():
            operation = schema["paths"].get(path, {}).get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for code in error_codes(route, path, method):
                responses[str(code)] = {"description": DESCRIPTIONS[code]}
            # A refusal a route declares itself with ``responses=`` gets the one shape too.
            for code, response in responses.items():
                if code.startswith("4"):
                    response["content"] = {"application/json": {"schema": ERROR_REF}}
            operation["responses"] = dict(sorted(responses.items()))
    # FastAPI's validation shapes are no longer referenced by anything.
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the corrected description (built once, then cached)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            describe_errors(schema, app.routes)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
