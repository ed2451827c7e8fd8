"""The published API description is the truth: schemathesis fuzzes every operation of a
running ``supportbroker serve`` (a fresh database per run) as an admin and as a technician,
with valid and invalid input, and checks that no answer is a server error and that each
answer's status code, content type and body are the ones the description declares.

The admin's run leaves out what would end its own access (revoking a token: it may be its
own) and erasure (it destroys a ticket's content); key rotation has no API operation.
Examples are bounded per operation and derandomized, so a run is repeatable; each of the
four runs (two roles, SQLite and PostgreSQL) takes under a minute on two cores.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from broker.auth.permissions import grants_for
from tests.conftest import IN_CI, PG_HOST, PG_USER, _pg_admin, _pg_reachable
from tests.e2e.processes import Served, serve

pytestmark = pytest.mark.slow

EXAMPLES = 8  # per operation and role, half valid and half invalid input
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# What would destroy the admin run's own access or the evidence it reads.
LEFT_OUT = {
    "admin": {
        "DELETE /api/v1/tokens/{token_id}",
        "POST /api/v1/audit/tickets/{system}/{external_id}/erase",
    },
    "technician": set(),
}


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """A fresh ``supportbroker serve``: its own SQLite file, or its own PostgreSQL database."""
    if request.param == "sqlite":
        found = serve(tmp_path)
        try:
            yield found
        finally:
            found.stop()
        return
    problem = _pg_reachable()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"PostgreSQL is not reachable ({problem}); in CI it is mandatory")
        pytest.skip(f"PostgreSQL is not reachable ({problem})")
    name = f"sb_fuzz_{secrets.token_hex(6)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        found = serve(
            tmp_path,
            SUPPORTBROKER_DATABASE_URL=f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:5432/{name}",
        )
        try:
            yield found
        finally:
            found.stop()
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _token(served: Served, role: str) -> str:
    """An API token of a user with ``role``, made with the command line as an operator would."""
    user = "admin"
    if role != "admin":
        user = f"fuzz-{role}"
        served.cli("user", "create", user, "--role", role, "--display-name", f"Fuzz {role}")
        served.cli("group", "add", "fuzz-group", "--description", "fuzzed")
        served.cli("group", "add-member", "fuzz-group", user)
    scopes = [arg for scope in sorted(grants_for(role)) for arg in ("--scope", scope)]
    issued = served.cli("token", "create", "--name", f"fuzz-{role}", "--user", user, *scopes)
    found = re.search(r"secret \(shown only now\): (\S+)", issued.stdout)
    assert found, issued.stdout
    return found.group(1)


@pytest.mark.parametrize("role", ["technician", "admin"])
def test_every_operation_answers_as_described(served: Served, role: str) -> None:
    headers = {"Authorization": f"Bearer {_token(served, role)}"}
    schema = schemathesis.openapi.from_url(f"{served.url}/api/v1/openapi.json")
    failures: list[str] = []
    ran = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in LEFT_OUT[role]:
            continue
        strategy = st.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=served.url, headers=headers, checks=CHECKS)

        ran += 1
        try:
            fuzz()
        # Every operation's failure is reported, not just the first; schemathesis raises its
        # findings as a BaseExceptionGroup.
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label}: {str(exc)[:2000]}")
    assert ran >= 50, ran
    assert not failures, "\n\n".join(failures)
