"""Every ``/api/v1`` route, every principal: each cell asserts the exact status.

The table is ``tests.authz.matrix.ROWS``; ``test_routes.py`` proves it covers every route
of the app and nothing else. Allowed cells act on real fixtures and must answer with the
route's success status (not merely "not 401/403"); refused cells must answer 401 or 403
with the ``{"error", "detail"}`` body and leave the broker's tables as they were (only the
audit log records the refusal). Cells marked by a row's ``bugs`` are strict xfails.

The whole matrix runs on SQLite and on PostgreSQL; the world (users, tokens, groups, the
shared session and its recording) is built once per database, and every cell that changes
state creates and cleans up its own resources.

``make test`` runs every cell. ``make test-fast`` (the edit loop) runs the sample that
``tests.authz.matrix.sampled`` picks: every route, one caller per kind of caller and answer;
the other cells are marked ``slow``, which the fast run leaves out.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.authz.calls import Call
from tests.authz.matrix import ROWS, Row, sampled
from tests.authz.state import TABLES, fingerprint
from tests.authz.world import PRINCIPALS, Cell, World
from tests.authz.ws import ws_call

pytestmark = pytest.mark.asyncio(loop_scope="module")

REFUSAL_CODES = {401: {"not_authenticated"}, 403: {"forbidden", "policy_denied"}}


def _cells() -> list[Any]:
    cells = []
    for index, row in enumerate(ROWS):
        sample = sampled(index, row)
        for principal in PRINCIPALS:
            marks = [] if principal in sample else [pytest.mark.slow]
            if principal in row.bugs:
                marks.append(pytest.mark.xfail(strict=True, reason=row.bugs[principal]))
            cells.append(pytest.param(row, principal, marks=marks, id=f"{row.key}-{principal}"))
    return cells


async def _perform(cell: Cell, call: Call) -> tuple[int, Any]:
    caller = cell.caller
    headers = caller.headers(call.method) if call.auth else {}
    headers.update(call.headers)
    if call.ws:
        outcome = await ws_call(
            cell.app, call.path, dict(call.params or {}), headers, first=call.first
        )
        return outcome.status, outcome.error or {"texts": outcome.texts}
    response = await caller.client.request(
        call.method,
        call.path,
        json=call.json,
        content=call.content,
        params=call.params,
        headers=headers,
    )
    if call.creates_session and response.status_code == 201:
        await cell.revoke_later(response.json()["id"])
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.status_code, response.json()
    return response.status_code, response.text[:200]


@pytest.mark.parametrize(("row", "principal"), _cells())
async def test_cell(world: World, row: Row, principal: str) -> None:
    cell = Cell(world, principal, row.method)
    expected = row.expect[principal]
    try:
        call = await row.build(cell)
        before = await fingerprint(world.app) if expected in REFUSAL_CODES else None
        status, body = await _perform(cell, call)
        after = await fingerprint(world.app) if expected in REFUSAL_CODES else None
    finally:
        for cleanup in reversed(cell.cleanups):
            await cleanup()
    assert status == expected, f"{row.key} as {principal}: got {status}, want {expected}: {body}"
    if row.check is not None and expected not in REFUSAL_CODES:
        row.check(cell, body)
    if expected in REFUSAL_CODES:
        assert isinstance(body, dict), body
        assert set(body) == {"error", "detail"}, body
        assert body["error"] in REFUSAL_CODES[expected], body
        assert body["detail"], body
        changed = sorted(t for t in TABLES if before and after and before[t] != after[t])
        assert not changed, f"a refused call changed {changed}"
