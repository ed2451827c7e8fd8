"""The password hash's cost: production's by default, a floor outside tests, re-hashed at login
when it changes, and never on the event loop (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from argon2 import extract_parameters
from pydantic import SecretStr, ValidationError
from sqlalchemy import select

from broker.app import create_app
from broker.auth.models import User
from broker.config import Settings
from tests.factories import make_user

LOGIN = "/api/v1/auth/login"
PRODUCTION_COST = {
    "password_hash_time_cost": 3,
    "password_hash_memory_kib": 65536,
    "password_hash_parallelism": 4,
}


@asynccontextmanager
async def running(settings: Settings, **over: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The broker started with ``settings`` changed by ``over``: a restart with a new config."""
    app = create_app(settings.model_copy(update=over))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("198.51.100.10", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://broker.test") as c:
            yield app, c


async def stored_hash(app: Any, username: str) -> str:
    async with app.state.sessionmaker() as db:
        found: str | None = await db.scalar(
            select(User.password_hash).where(User.username == username)
        )
    assert found is not None
    return found


def test_the_default_cost_is_argon2id_at_rfc_9106s_low_memory_choice() -> None:
    settings = Settings()
    cost = (
        settings.password_hash_time_cost,
        settings.password_hash_memory_kib,
        settings.password_hash_parallelism,
    )
    assert cost == (3, 65536, 4)


async def test_a_password_set_at_the_default_cost_is_hashed_at_it(settings: Settings) -> None:
    async with running(settings, **PRODUCTION_COST) as (app, _):
        await make_user(app, "technician", username="fresh")
        params = extract_parameters(await stored_hash(app, "fresh"))
    assert (params.type.name, params.time_cost, params.memory_cost, params.parallelism) == (
        "ID",
        3,
        65536,
        4,
    )


async def test_a_raised_cost_rehashes_each_password_at_its_next_login(settings: Settings) -> None:
    async with running(settings) as (app, _):  # the suite's cheap cost: an older config
        _user, password = await make_user(app, "technician", username="kim")
        _other, other_password = await make_user(app, "technician", username="lee")
        before = await stored_hash(app, "kim")
    assert extract_parameters(before).memory_cost == 64

    async with running(settings, **PRODUCTION_COST) as (app, client):
        wrong = await client.post(LOGIN, json={"username": "kim", "password": "not-" + password})
        assert wrong.status_code == 401
        assert await stored_hash(app, "kim") == before  # a wrong password changes nothing

        right = await client.post(LOGIN, json={"username": "kim", "password": password})
        assert right.status_code == 200, right.text  # the old hash still verifies
        after = await stored_hash(app, "kim")
        assert extract_parameters(after).memory_cost == 65536
        assert extract_parameters(await stored_hash(app, "lee")).memory_cost == 64  # not yet

    async with running(settings, **PRODUCTION_COST) as (app, client):
        again = await client.post(LOGIN, json={"username": "kim", "password": password})
        assert again.status_code == 200
        assert await stored_hash(app, "kim") == after  # at the current cost: left alone
        assert other_password  # lee's turn comes at lee's own login


async def test_a_login_leaves_the_event_loop_free_while_argon2_works(
    settings: Settings,
) -> None:
    # A deliberately slow hash (20 passes, nearly 7x the default) so the order below cannot
    # depend on the machine.
    slow = {"password_hash_time_cost": 20, "password_hash_memory_kib": 65536}
    async with running(settings, **slow) as (app, client):
        _user, password = await make_user(app, "technician", username="slow")
        login = asyncio.create_task(
            client.post(LOGIN, json={"username": "slow", "password": password})
        )
        await asyncio.sleep(0.05)  # the login is inside argon2 now
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert not login.done()  # /healthz answered while the hash was still being computed
        assert (await login).status_code == 200


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"password_hash_memory_kib": 16384}, "below OWASP's floor"),
        ({"password_hash_time_cost": 1}, "below OWASP's floor"),
        ({"password_hash_memory_kib": 16, "password_hash_parallelism": 4}, "8 KiB per lane"),
    ],
)
def test_a_cost_below_the_floor_is_refused_outside_tests(
    over: dict[str, int], message: str
) -> None:
    real = SecretStr("a-real-secret-of-enough-length-42")
    with pytest.raises(ValidationError, match=message):
        Settings(environment="production", secret_key=real, **over)  # type: ignore[arg-type]
    # The suite's own cheap cost is for the test environment only.
    cheap: dict[str, Any] = {"password_hash_memory_kib": 64, "password_hash_parallelism": 1}
    Settings(environment="test", secret_key=real, password_hash_time_cost=1, **cheap)
    with pytest.raises(ValidationError):
        Settings(environment="development", password_hash_time_cost=1, **cheap)


def test_the_cli_says_which_setting_is_too_cheap(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from broker.cli import main

    monkeypatch.setenv("SUPPORTBROKER_ENVIRONMENT", "production")
    monkeypatch.setenv("SUPPORTBROKER_SECRET_KEY", "a-real-secret-of-enough-length-42")
    monkeypatch.setenv("SUPPORTBROKER_PASSWORD_HASH_MEMORY_KIB", "1024")
    assert main(["user", "list"]) != 0
    err = capsys.readouterr().err
    assert "below OWASP's floor" in err
    assert "Traceback" not in err
