"""OpenID Connect single sign-on through authlib: the authorization-code flow with PKCE.

Off unless ``SUPPORTBROKER_OIDC_ISSUER`` and ``SUPPORTBROKER_OIDC_CLIENT_ID`` are set. authlib
builds the authorization URL (``state``, ``nonce``, S256 PKCE challenge) and the token request
(client secret by HTTP Basic, the PKCE verifier); httpx carries them. authlib's own httpx
client is not used: its plain-httpx support is deprecated (it wants ``httpx2``), and the
broker's other clients and their test seam (``transport``) are httpx.

The ID token's signature is checked against the issuer's JWKS (``jwks_uri`` from discovery;
fetched again once when the token names an unknown key, since issuers rotate keys), then
authlib's ``CodeIDToken`` checks ``iss``, ``aud``, ``exp``, ``iat``, ``nonce``, ``azp``
and ``at_hash``.
The claim named by ``username_claim`` must match an existing, active local account: SSO logs
people in, the admin still decides who has an account and which role.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.oauth2.auth import ClientAuth  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.parameters import (  # type: ignore[import-untyped]
    prepare_grant_uri,
    prepare_token_request,
)
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from authlib.oidc.core import CodeIDToken  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.models import User
from broker.auth.repository import UserRepository
from broker.errors import NotAuthenticated, ProviderError
from broker.evidence.events import EventType
from broker.evidence.service import Actor, record_event

LEEWAY_SECONDS = 60
SSO_FAILED = "single sign-on did not log you in"
DEFAULT_ALGORITHMS = ["RS256"]  # what OpenID Connect Discovery says to assume when unlisted


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


class OidcClient:
    """Talks to one issuer; ``transport`` is the seam tests use for a fake provider."""

    def __init__(
        self, settings: OidcSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.transport = transport
        self._metadata: dict[str, Any] | None = None
        self._jwks: dict[str, Any] | None = None

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport, timeout=self.settings.timeout_seconds)

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with self._client() as client:
                response = await client.get(url)
                response.raise_for_status()
                data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderError(f"the identity provider's {what} did not answer: {exc}") from exc
        if not isinstance(data, dict):
            raise ProviderError(f"the identity provider's {what} is not a JSON object")
        return data

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is not None:
            return self._metadata
        issuer = self.settings.issuer.rstrip("/")
        data = await self._get_json(f"{issuer}/.well-known/openid-configuration", "metadata")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(data.get(key), str):
                raise ProviderError(f"the identity provider's metadata lacks {key}")
        if str(data.get("issuer", "")).rstrip("/") != issuer:
            raise ProviderError("the identity provider's metadata names another issuer")
        self._metadata = data
        return data

    async def _keys(self, *, refresh: bool = False) -> KeySet:
        if self._jwks is None or refresh:
            self._jwks = await self._get_json(str((await self.metadata())["jwks_uri"]), "JWKS")
        try:
            return KeySet.import_key_set(self._jwks)  # type: ignore[arg-type]
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise ProviderError(f"the identity provider's JWKS is unusable: {exc}") from exc

    async def authorization_request(self, redirect_uri: str) -> AuthRequest:
        meta = await self.metadata()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)  # RFC 7636: 43 to 128 characters
        url = prepare_grant_uri(
            meta["authorization_endpoint"],
            client_id=self.settings.client_id,
            response_type="code",
            redirect_uri=redirect_uri,
            scope=self.settings.scopes,
            state=state,
            nonce=nonce,
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
        )
        return AuthRequest(str(url), state, nonce, verifier)

    async def exchange(
        self, code: str, *, redirect_uri: str, verifier: str, nonce: str
    ) -> dict[str, Any]:
        """Trade the code for tokens and return the verified ID token's claims."""
        meta = await self.metadata()
        body = prepare_token_request(
            "authorization_code", code=code, redirect_uri=redirect_uri, code_verifier=verifier
        )
        secret = self.settings.client_secret.get_secret_value()
        auth = ClientAuth(self.settings.client_id, secret, "client_secret_basic")
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        url, headers, body = auth.prepare("POST", meta["token_endpoint"], headers, body)
        try:
            async with self._client() as client:
                response = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ProviderError(f"the identity provider's token endpoint failed: {exc}") from exc
        try:
            token = response.json()
        except ValueError:
            token = None
        if response.status_code != 200 or not isinstance(token, dict):
            error = token.get("error") if isinstance(token, dict) else None
            raise NotAuthenticated(
                f"the identity provider refused the code ({error or response.status_code})"
            )
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise NotAuthenticated("the identity provider sent no ID token")
        access = token.get("access_token")
        return await self.verify_id_token(
            id_token, nonce, access_token=access if isinstance(access, str) else None
        )

    async def verify_id_token(
        self, id_token: str, nonce: str, *, access_token: str | None = None
    ) -> dict[str, Any]:
        """The claims of ``id_token`` once its signature and claims are valid."""
        meta = await self.metadata()
        algorithms = meta.get("id_token_signing_alg_values_supported") or DEFAULT_ALGORITHMS
        registry = JWSRegistry(algorithms=[a for a in algorithms if a != "none"])
        try:
            try:
                decoded = jwt.decode(id_token, await self._keys(), registry=registry)
            except InvalidKeyIdError:
                decoded = jwt.decode(id_token, await self._keys(refresh=True), registry=registry)
        except (JoseError, ValueError) as exc:
            raise NotAuthenticated(
                f"the identity provider's ID token failed its signature check ({exc})"
            ) from exc
        params: dict[str, Any] = {"nonce": nonce, "client_id": self.settings.client_id}
        if access_token:
            params["access_token"] = access_token
        options = {
            "iss": {"essential": True, "values": [meta["issuer"], self.settings.issuer]},
            "aud": {"essential": True, "values": [self.settings.client_id]},
        }
        claims = CodeIDToken(decoded.claims, decoded.header, options, params)
        try:
            claims.validate(leeway=LEEWAY_SECONDS)
        except JoseError as exc:
            raise NotAuthenticated(f"the ID token does not answer this login ({exc})") from exc
        return dict(decoded.claims)


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
            EventType.auth_login_failed,
            ticket=None,
            actor=Actor(kind="anonymous", name=username[:64] or None, ip=ip),
            data={"username": username[:64], "why": why, "method": "oidc"},
        )
        raise NotAuthenticated(f"{SSO_FAILED}: {why}", keep_changes=True)
    await record_event(
        db,
        EventType.auth_sso_verified,
        ticket=None,
        actor=Actor(kind="user", id=user.id, name=user.display_name, role=user.role, ip=ip),
        data={"issuer": settings.issuer, "subject": str(claims.get("sub", ""))[:200]},
    )
    return user
