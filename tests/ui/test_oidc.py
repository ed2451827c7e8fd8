"""Single sign-on against a small fake OpenID Connect provider (discovery, JWKS, authorization
code with PKCE, token endpoint with client authentication issuing a signed ID token)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from broker.auth.oidc import OidcSettings
from tests.factories import audit_events, make_user
from tests.ui.browsers import client_for

ISSUER = "https://idp.example.test"
CLIENT_ID, CLIENT_SECRET = "supportbroker", "client-secret-123"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class FakeIssuer:
    """Issues codes for authorization requests the test 'approves' and checks every rule of
    the token request (client secret, redirect URI, PKCE verifier, single-use code)."""

    def __init__(self) -> None:
        self.codes: dict[str, dict[str, Any]] = {}
        self.nonce_override: str | None = None
        self.claims_override: dict[str, Any] = {}
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
        self.signing_key = self.key  # a test swaps it to sign with a key not in the JWKS
        self.jwks_fetches = 0
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/jwks", self.jwks),
                Route("/token", self.token, methods=["POST"]),
            ]
        )

    async def jwks(self, _: Request) -> JSONResponse:
        self.jwks_fetches += 1
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    async def discovery(self, _: Request) -> JSONResponse:
        return JSONResponse(
            {
                "issuer": ISSUER,
                "authorization_endpoint": f"{ISSUER}/authorize",
                "token_endpoint": f"{ISSUER}/token",
                "jwks_uri": f"{ISSUER}/jwks",
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    def authorize(self, url: str, username: str) -> dict[str, str]:
        """The user signs in at the issuer: returns the callback's query (code, state)."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert query["response_type"] == "code"
        assert query["client_id"] == CLIENT_ID
        assert query["code_challenge_method"] == "S256"
        code = secrets.token_urlsafe(16)
        self.codes[code] = {**query, "username": username}
        return {"code": code, "state": query["state"]}

    async def token(self, request: Request) -> JSONResponse:
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        form = await request.form()
        grant = self.codes.pop(str(form.get("code")), None)
        if grant is None or form.get("grant_type") != "authorization_code":
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        verifier = str(form.get("code_verifier", ""))
        if _b64(hashlib.sha256(verifier.encode()).digest()) != grant["code_challenge"]:
            return JSONResponse({"error": "invalid_grant", "why": "pkce"}, status_code=400)
        claims = {
            "iss": ISSUER,
            "aud": CLIENT_ID,
            "sub": f"sub-{grant['username']}",
            "preferred_username": grant["username"],
            "exp": int(time.time()) + 300,
            "iat": int(time.time()),
            "nonce": self.nonce_override or grant["nonce"],
            **self.claims_override,
        }
        header = {"alg": "RS256", "typ": "JWT", "kid": self.signing_key.kid}
        id_token = jwt.encode(header, claims, self.signing_key)
        return JSONResponse({"access_token": "at", "token_type": "Bearer", "id_token": id_token})


@pytest.fixture
def issuer(app: Any) -> FakeIssuer:
    fake = FakeIssuer()
    app.state.oidc_settings = OidcSettings(
        issuer=ISSUER, client_id=CLIENT_ID, client_secret=SecretStr(CLIENT_SECRET)
    )
    app.state.oidc_transport = httpx.ASGITransport(app=fake.app)
    return fake


async def _start(c: httpx.AsyncClient, next_url: str = "") -> str:
    response = await c.get("/ui/login/oidc" + (f"?next={next_url}" if next_url else ""))
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(f"{ISSUER}/authorize?")
    return location


async def test_sso_logs_in_an_existing_account(app: Any, issuer: FakeIssuer) -> None:
    user, _ = await make_user(app, "auditor", username="erika")
    async with client_for(app) as c:
        login = await c.get("/ui/login")
        assert "Sign in with single sign-on" in login.text
        url = await _start(c, "%2Fui%2Freports")
        back = await c.get("/ui/login/oidc/callback", params=issuer.authorize(url, "erika"))
        assert back.status_code == 303, back.text
        assert back.headers["location"] == "/ui/reports"
        assert c.cookies.get("sb_session")
        assert (await c.get("/ui/account")).status_code == 200
    events = await audit_events(app, "_system")
    verified = [p for t, p in events if t == "auth.sso_verified"]
    assert verified[0]["data"] == {"issuer": ISSUER, "subject": "sub-erika"}
    assert verified[0]["actor"]["id"] == user.id


async def test_sso_refuses_unknown_accounts_and_audits(app: Any, issuer: FakeIssuer) -> None:
    async with client_for(app) as c:
        url = await _start(c)
        back = await c.get("/ui/login/oidc/callback", params=issuer.authorize(url, "mallory"))
        assert back.status_code == 401
        assert "no local account" in back.text
        assert c.cookies.get("sb_session") is None
    failed = [p for t, p in await audit_events(app, "_system") if t == "auth.login_failed"]
    assert failed[0]["data"]["method"] == "oidc"
    assert failed[0]["data"]["username"] == "mallory"


async def test_sso_refuses_a_foreign_state_or_nonce(app: Any, issuer: FakeIssuer) -> None:
    await make_user(app, "auditor", username="erika")
    async with client_for(app) as c:
        url = await _start(c)
        query = issuer.authorize(url, "erika")
        forged = await c.get(
            "/ui/login/oidc/callback", params={**query, "state": "someone-elses-state"}
        )
        assert forged.status_code == 401
        assert "not started here" in forged.text
    async with client_for(app) as c:
        url = await _start(c)
        issuer.nonce_override = "replayed-token-nonce"
        back = await c.get("/ui/login/oidc/callback", params=issuer.authorize(url, "erika"))
        assert back.status_code == 401
        assert "nonce" in back.text
    async with client_for(app) as started, client_for(app) as other:
        query = issuer.authorize(await _start(started), "erika")
        back = await other.get("/ui/login/oidc/callback", params=query)  # not the same browser
        assert back.status_code == 401


async def test_sso_is_off_unless_configured(app: Any) -> None:
    async with client_for(app) as c:
        assert "single sign-on" not in (await c.get("/ui/login")).text
        assert (await c.get("/ui/login/oidc")).status_code == 404


async def _callback_as(app: Any, issuer: FakeIssuer, username: str = "erika") -> httpx.Response:
    async with client_for(app) as c:
        url = await _start(c)
        return await c.get("/ui/login/oidc/callback", params=issuer.authorize(url, username))


async def test_sso_refuses_an_id_token_not_signed_by_the_issuer(
    app: Any, issuer: FakeIssuer
) -> None:
    await make_user(app, "auditor", username="erika")
    # Same key id as the published key, different key: only the signature check can tell.
    issuer.signing_key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    back = await _callback_as(app, issuer)
    assert back.status_code == 401
    assert "signature" in back.text
    assert "sb_session" not in back.cookies


async def test_sso_fetches_the_jwks_again_when_the_issuer_rotates_its_key(
    app: Any, issuer: FakeIssuer
) -> None:
    await make_user(app, "auditor", username="erika")
    assert (await _callback_as(app, issuer)).status_code == 303
    issuer.key = RSAKey.generate_key(2048, parameters={"kid": "k2"})
    issuer.signing_key = issuer.key
    back = await _callback_as(app, issuer)
    assert back.status_code == 303, back.text
    assert issuer.jwks_fetches >= 2


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ({"exp": int(time.time()) - 3600}, "exp"),
        ({"aud": "another-client"}, "aud"),
        ({"iss": "https://evil.example.test"}, "iss"),
    ],
)
async def test_sso_refuses_expired_or_foreign_id_tokens(
    app: Any, issuer: FakeIssuer, override: dict[str, Any], why: str
) -> None:
    await make_user(app, "auditor", username="erika")
    issuer.claims_override = override
    back = await _callback_as(app, issuer)
    assert back.status_code == 401
    assert why in back.text
    failed_to_log_in = "sb_session" not in back.cookies
    assert failed_to_log_in


async def test_sso_sends_a_pkce_challenge_the_token_endpoint_checks(
    app: Any, issuer: FakeIssuer
) -> None:
    await make_user(app, "auditor", username="erika")
    async with client_for(app) as c:
        url = await _start(c)
        query = issuer.authorize(url, "erika")
        # The issuer remembers a different challenge: the broker's verifier no longer matches.
        issuer.codes[query["code"]]["code_challenge"] = _b64(hashlib.sha256(b"other").digest())
        back = await c.get("/ui/login/oidc/callback", params=query)
    assert back.status_code == 401
    assert "invalid_grant" in back.text
