"""OpenID Connect single sign-on: the authorization-code flow with PKCE, over httpx.

Off unless ``SUPPORTBROKER_OIDC_ISSUER`` and ``SUPPORTBROKER_OIDC_CLIENT_ID`` are set. The
broker sends the browser to the issuer's authorization endpoint with ``state``, ``nonce`` and
a PKCE challenge; the callback exchanges the code at the token endpoint (a direct TLS call,
so, per OpenID Connect Core 3.1.3.7, the ID token's issuer is validated by the TLS
connection and its signature need not be checked) and validates ``iss``, ``aud``, ``exp``
and ``nonce``. The claim named by ``username_claim`` must match an existing, active local
account: SSO logs people in, the admin still decides who has an account and which role.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.models import User
from broker.auth.repository import UserRepository
from broker.errors import NotAuthenticated, ProviderError
from broker.evidence.service import Actor, record_event

LEEWAY_SECONDS = 60
SSO_FAILED = "single sign-on did not log you in"


class OidcSettings(BaseSettings):
    """SSO settings (prefix ``SUPPORTBROKER_OIDC_``); empty issuer: SSO is off."""

    model_config = SettingsConfigDict(env_prefix="SUPPORTBROKER_OIDC_", extra="ignore")

    issuer: str = ""
    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    scopes: str = "openid profile email"
    username_claim: str = "preferred_username"
    label: str = "Sign in with single sign-on"
    timeout_seconds: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.issuer.strip() and self.client_id.strip())


@dataclass(frozen=True)
class AuthRequest:
    """Where to send the browser, and what the callback must find again (keep it secret)."""

    url: str
    state: str
    nonce: str
    verifier: str


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def pkce_challenge(verifier: str) -> str:
    return _b64url(hashlib.sha256(verifier.encode()).digest())


def decode_jwt_payload(token: str) -> dict[str, Any]:
    """The claims of a compact JWS (no signature check: see the module docstring)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise NotAuthenticated("the identity provider sent a malformed ID token")
    padded = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, json.JSONDecodeError) as exc:
        raise NotAuthenticated("the identity provider sent an unreadable ID token") from exc
    if not isinstance(claims, dict):
        raise NotAuthenticated("the identity provider sent an unreadable ID token")
    return claims


class OidcClient:
    """Talks to one issuer; ``transport`` is the seam tests use for a fake provider."""

    def __init__(
        self, settings: OidcSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.transport = transport
        self._metadata: dict[str, Any] | None = None

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport, timeout=self.settings.timeout_seconds)

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is not None:
            return self._metadata
        issuer = self.settings.issuer.rstrip("/")
        url = f"{issuer}/.well-known/openid-configuration"
        try:
            async with self._client() as client:
                response = await client.get(url)
                response.raise_for_status()
                data: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderError(f"the identity provider at {issuer} did not answer: {exc}") from exc
        if not isinstance(data, dict):
            raise ProviderError("the identity provider's metadata is not a JSON object")
        for key in ("authorization_endpoint", "token_endpoint"):
            if not isinstance(data.get(key), str):
                raise ProviderError(f"the identity provider's metadata lacks {key}")
        if str(data.get("issuer", "")).rstrip("/") != issuer:
            raise ProviderError("the identity provider's metadata names another issuer")
        self._metadata = data
        return data

    async def authorization_request(self, redirect_uri: str) -> AuthRequest:
        meta = await self.metadata()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": redirect_uri,
                "scope": self.settings.scopes,
                "state": state,
                "nonce": nonce,
                "code_challenge": pkce_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        return AuthRequest(f"{meta['authorization_endpoint']}?{query}", state, nonce, verifier)

    async def exchange(
        self, code: str, *, redirect_uri: str, verifier: str, nonce: str
    ) -> dict[str, Any]:
        """Trade the code for tokens and return the validated ID token's claims."""
        meta = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        auth = (self.settings.client_id, self.settings.client_secret.get_secret_value())
        try:
            async with self._client() as client:
                response = await client.post(meta["token_endpoint"], data=form, auth=auth)
        except httpx.HTTPError as exc:
            raise ProviderError(f"the identity provider's token endpoint failed: {exc}") from exc
        if response.status_code != 200:
            raise NotAuthenticated(
                f"the identity provider refused the code (HTTP {response.status_code})"
            )
        try:
            id_token = response.json().get("id_token")
        except ValueError as exc:
            raise NotAuthenticated("the identity provider's token answer is not JSON") from exc
        if not isinstance(id_token, str):
            raise NotAuthenticated("the identity provider sent no ID token")
        claims = decode_jwt_payload(id_token)
        self.validate(claims, nonce)
        return claims

    def validate(self, claims: dict[str, Any], nonce: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if str(claims.get("iss", "")).rstrip("/") != self.settings.issuer.rstrip("/"):
            raise NotAuthenticated("the ID token comes from another issuer")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self.settings.client_id not in audiences:
            raise NotAuthenticated("the ID token is meant for another client")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp + LEEWAY_SECONDS < now:
            raise NotAuthenticated("the ID token has expired")
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise NotAuthenticated("the ID token does not answer this login (nonce)")


async def user_for_claims(
    db: AsyncSession, settings: OidcSettings, claims: dict[str, Any], ip: str
) -> User:
    """The active local account the claims name; refusals are audited and kept."""
    name = claims.get(settings.username_claim)
    username = name.strip().lower() if isinstance(name, str) else ""
    user = await UserRepository(db).by_username(username) if username else None
    why = None
    if user is None:
        why = f"no local account for {settings.username_claim}={username or '(missing)'}"
    elif not user.is_active:
        why = "account disabled"
    if user is None or why is not None:
        await record_event(
            db,
            "auth.login_failed",
            ticket=None,
            actor=Actor(kind="anonymous", name=username[:64] or None, ip=ip),
            data={"username": username[:64], "why": why, "method": "oidc"},
        )
        raise NotAuthenticated(f"{SSO_FAILED}: {why}", keep_changes=True)
    await record_event(
        db,
        "auth.sso_verified",
        ticket=None,
        actor=Actor(kind="user", id=user.id, name=user.display_name, role=user.role, ip=ip),
        data={"issuer": settings.issuer, "subject": str(claims.get("sub", ""))[:200]},
    )
    return user
