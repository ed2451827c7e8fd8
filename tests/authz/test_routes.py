"""The matrix covers the app's API exactly: a new route without a row fails here, and so
does a row whose route is gone. Every row states a status for every principal, and the fast
run's sample keeps every route, every principal and every answer a kind of caller gets."""

from __future__ import annotations

from pathlib import Path

from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from pydantic import SecretStr

from broker.app import create_app
from broker.config import Settings
from tests.authz.matrix import CLASSES, ROWS, sampled
from tests.authz.world import PRINCIPALS


def api_routes(tmp_path: Path) -> set[str]:
    settings = Settings(
        environment="test",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",
        data_dir=tmp_path,
        secret_key=SecretStr("test-secret-key-" + "x" * 16),
        log_format="console",
    )
    app = create_app(settings)  # not started: only its routes are read
    keys: set[str] = set()
    for context in iter_route_contexts(app.routes):
        route, path = context.original_route, context.path or ""
        if not path.startswith("/api/v1/"):
            continue
        if isinstance(route, APIWebSocketRoute):
            keys.add(f"WS {path}")
        elif isinstance(route, APIRoute):
            keys.update(f"{method} {path}" for method in sorted(context.methods or ()))
    return keys


def test_every_api_route_has_a_row(tmp_path: Path) -> None:
    missing = api_routes(tmp_path) - {row.key for row in ROWS}
    assert not missing, f"routes without a row in tests/authz/matrix.py: {sorted(missing)}"


def test_every_row_names_a_route_that_exists(tmp_path: Path) -> None:
    stale = {row.key for row in ROWS} - api_routes(tmp_path)
    assert not stale, f"rows for routes the app no longer has: {sorted(stale)}"


def test_rows_are_unique_and_complete() -> None:
    keys = [row.key for row in ROWS]
    assert len(keys) == len(set(keys)), "a route has two rows"
    for row in ROWS:
        assert set(row.expect) == set(PRINCIPALS), row.key
        assert set(row.bugs) <= set(PRINCIPALS), row.key


def test_the_route_list_is_not_empty(tmp_path: Path) -> None:
    # The coverage checks above would pass vacuously if route discovery broke.
    keys = api_routes(tmp_path)
    assert "POST /api/v1/sessions" in keys
    assert "WS /api/v1/gateway/terminal" in keys
    assert len(keys) >= 50


def test_the_classes_split_the_principals() -> None:
    members = [name for members in CLASSES for name in members]
    assert sorted(members) == sorted(PRINCIPALS), "a principal is in no class, or in two"


def test_the_sample_keeps_each_answer_of_each_kind_of_caller() -> None:
    called: set[str] = set()
    for index, row in enumerate(ROWS):
        sample = sampled(index, row)
        assert sample <= set(PRINCIPALS), row.key
        assert set(row.bugs) <= sample, row.key
        for members in CLASSES:
            expected = {row.expect[name] for name in members}
            kept = {row.expect[name] for name in members if name in sample}
            assert kept == expected, f"{row.key}: {members} lost an answer"
        called |= sample
    assert called == set(PRINCIPALS), f"never called: {sorted(set(PRINCIPALS) - called)}"
    cells = sum(len(sampled(i, row)) for i, row in enumerate(ROWS))
    assert cells < len(ROWS) * len(PRINCIPALS)
