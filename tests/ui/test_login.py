"""Login through the pages: password, the forced password change, the TOTP second factor
(RFC 6238 test vectors, enrollment, login, replay, lockout audit) and logout."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from broker.auth import throttle, totp
from broker.auth.service import create_user_with_password
from broker.evidence.service import SYSTEM_ACTOR
from tests.factories import audit_events, make_user
from tests.ui.browsers import client_for, hidden

SHA1_KEY = b"12345678901234567890"
SHA256_KEY = b"12345678901234567890123456789012"
SHA512_KEY = b"1234567890123456789012345678901234567890123456789012345678901234"
# RFC 6238, appendix B: (time, sha1, sha256, sha512), 8 digits.
RFC6238 = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


@pytest.mark.parametrize(("at", "sha1", "sha256", "sha512"), RFC6238)
def test_rfc6238_vectors(at: int, sha1: str, sha256: str, sha512: str) -> None:
    assert totp.totp(SHA1_KEY, at, digits=8, digest="sha1") == sha1
    assert totp.totp(SHA256_KEY, at, digits=8, digest="sha256") == sha256
    assert totp.totp(SHA512_KEY, at, digits=8, digest="sha512") == sha512


def test_rfc4226_vectors_and_window() -> None:
    # RFC 4226 appendix D, counters 0..9
    expected = [
        *("755224", "287082", "359152", "969429", "338314"),
        *("254676", "287922", "162583", "399871", "520489"),
    ]
    assert [totp.hotp(SHA1_KEY, c) for c in range(10)] == expected
    now = 1_700_000_000.0
    step = totp.time_step(now)
    assert totp.matching_step(SHA1_KEY, totp.hotp(SHA1_KEY, step - 1), now) == step - 1
    assert totp.matching_step(SHA1_KEY, totp.hotp(SHA1_KEY, step + 2), now) is None
    assert totp.matching_step(SHA1_KEY, "12345", now) is None
    uri = totp.provisioning_uri(SHA1_KEY, "erika")
    assert uri.startswith(
        "otpauth://totp/supportbroker%3Aerika?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    )


async def _login_page(c: httpx.AsyncClient, next_url: str = "") -> str:
    page = await c.get("/ui/login" + (f"?next={next_url}" if next_url else ""))
    assert page.status_code == 200
    return hidden(page.text, "csrf_token")


async def test_password_login_wrong_password_and_next(app: Any) -> None:
    user, password = await make_user(app, "auditor")
    async with client_for(app) as c:
        token = await _login_page(c)
        wrong = await c.post(
            "/ui/login", data={"username": user.username, "password": "nope", "csrf_token": token}
        )
        assert wrong.status_code == 401
        assert "wrong username or password" in wrong.text
        assert 'aria-invalid="true"' in wrong.text
        token = await _login_page(c, "%2Fui%2Faudit%2Fcheckpoint")
        ok = await c.post(
            "/ui/login",
            data={
                "username": user.username,
                "password": password,
                "csrf_token": token,
                "next": "/ui/audit/checkpoint",
            },
        )
        assert ok.status_code == 303
        assert ok.headers["location"] == "/ui/audit/checkpoint"
        evil = await c.get("/ui/login?next=https://evil.test/x")
        assert evil.headers["location"] == "/ui/audit/sessions"  # never an open redirect
        account = await c.get("/ui/account")
        logout = await c.post("/ui/logout", data={"csrf_token": hidden(account.text, "csrf_token")})
        assert logout.status_code == 303
        assert (await c.get("/ui/account")).status_code == 303
    events = [t for t, _ in await audit_events(app, "_system")]
    assert "auth.login_failed" in events
    assert "auth.login" in events
    assert "auth.logout" in events


async def test_a_waiting_login_form_says_when_to_come_back(app: Any) -> None:
    user, password = await make_user(app, "auditor")
    async with client_for(app) as c:
        for _ in range(throttle.PAIR_FREE):
            token = await _login_page(c)
            data = {"username": user.username, "password": "nope", "csrf_token": token}
            assert (await c.post("/ui/login", data=data)).status_code == 401
        token = await _login_page(c)
        data = {"username": user.username, "password": password, "csrf_token": token}
        waiting = await c.post("/ui/login", data=data)
        assert waiting.status_code == 429
        assert int(waiting.headers["retry-after"]) >= 1
        assert "too many failed logins" in waiting.text


async def test_forced_password_change(app: Any) -> None:
    async with app.state.sessionmaker() as db:
        _user, password = await create_user_with_password(
            db, actor=SYSTEM_ACTOR, username="newtech", role="technician"
        )
        await db.commit()
    async with client_for(app) as c:
        token = await _login_page(c)
        login = await c.post(
            "/ui/login", data={"username": "newtech", "password": password, "csrf_token": token}
        )
        assert login.headers["location"] == "/ui/password"
        console = await c.get("/ui/console")
        assert console.headers["location"] == "/ui/password"
        page = await c.get("/ui/password")
        assert "Choose your own" in page.text
        csrf = hidden(page.text, "csrf_token")
        differ = await c.post(
            "/ui/password",
            data={
                "current": password,
                "new": "a-new-pass-1",
                "confirm": "other",
                "csrf_token": csrf,
            },
        )
        assert differ.status_code == 422
        done = await c.post(
            "/ui/password",
            data={
                "current": password,
                "new": "a-new-pass-1",
                "confirm": "a-new-pass-1",
                "csrf_token": csrf,
            },
        )
        assert done.status_code == 303
        assert done.headers["location"] == "/ui/console"
        assert (await c.get("/ui/console")).status_code == 200


async def _enable_totp(app: Any, c: httpx.AsyncClient) -> bytes:
    page = await c.get("/ui/account")
    csrf = hidden(page.text, "csrf_token")
    started = await c.post("/ui/account/totp/start", data={"csrf_token": csrf})
    assert started.status_code == 200
    key_text = started.text.split('id="totp-key">')[1].split("<")[0]
    key = __import__("base64").b32decode(key_text + "=" * (-len(key_text) % 8))
    wrong = await c.post("/ui/account/totp/confirm", data={"code": "000000", "csrf_token": csrf})
    if wrong.status_code == 200:  # 000000 happened to be right: astronomically unlikely
        return key
    assert wrong.status_code == 422
    ok = await c.post(
        "/ui/account/totp/confirm",
        data={"code": totp.totp(key, time.time()), "csrf_token": csrf},
    )
    assert ok.status_code == 200
    assert "The second factor is on." in ok.text
    return key


async def test_totp_enroll_then_login_needs_the_code(app: Any) -> None:
    user, password = await make_user(app, "technician")
    async with client_for(app) as c:
        token = await _login_page(c)
        await c.post(
            "/ui/login", data={"username": user.username, "password": password, "csrf_token": token}
        )
        key = await _enable_totp(app, c)
    async with app.state.sessionmaker() as db:
        row = await db.get(totp.UserTotp, user.id)
        assert row is not None
        assert key not in row.secret_box  # kept encrypted
        used_step = row.last_step

    async with client_for(app) as c:
        token = await _login_page(c)
        step1 = await c.post(
            "/ui/login", data={"username": user.username, "password": password, "csrf_token": token}
        )
        assert step1.headers["location"] == "/ui/login/totp"
        assert c.cookies.get("sb_session") is None  # no session before the second factor
        assert (await c.get("/ui/console")).status_code == 303
        page = await c.get("/ui/login/totp")
        csrf = hidden(page.text, "csrf_token")
        wrong = await c.post("/ui/login/totp", data={"code": "abcdef", "csrf_token": csrf})
        assert wrong.status_code == 401
        # the code of the step already used to confirm is refused (no replay)
        replay = totp.hotp(key, used_step or 0)
        again = await c.post("/ui/login/totp", data={"code": replay, "csrf_token": csrf})
        assert again.status_code == 401
        fresh = totp.hotp(key, (used_step or 0) + 1)
        ok = await c.post("/ui/login/totp", data={"code": fresh, "csrf_token": csrf})
        assert ok.status_code == 303
        assert ok.headers["location"] == "/ui/console"
        assert (await c.get("/ui/console")).status_code == 200
    failed = [
        p["data"]["why"] for t, p in await audit_events(app, "_system") if t == "auth.login_failed"
    ]
    assert failed == ["second factor: wrong or reused code"] * 2
    types = [t for t, _ in await audit_events(app, "_system")]
    assert "auth.totp_enabled" in types


async def test_totp_step_without_password_goes_back_to_login(app: Any) -> None:
    async with client_for(app, {"sb_mfa": "forged.value"}) as c:
        page = await c.get("/ui/login/totp")
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/login"
