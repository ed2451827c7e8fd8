"""MeshCentral provider settings (env prefix ``SUPPORTBROKER_PROVIDER_MESHCENTRAL_``).

Authentication is either the server's login cookie key (``LOGIN_KEY``, the 160 hex characters
of ``loginCookieEncryptionKey``: we mint a short-lived AES-GCM cookie per connection) or the
account password (``PASSWORD``, sent in ``x-meshauth``). Both are ``SecretStr`` and never logged.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.providers.base import ConsentMode


class MeshCentralSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SUPPORTBROKER_PROVIDER_MESHCENTRAL_", extra="ignore"
    )

    url: str = "http://127.0.0.1:4430"  # the server as the broker reaches it
    # The server as the technician reaches it; share links are rewritten onto this base.
    public_url: str = ""
    domain: str = ""
    username: str = "broker"
    password: SecretStr | None = None
    login_key: SecretStr | None = None
    request_timeout: float = Field(default=10.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    events_limit: int = Field(default=1000, ge=1, le=100000)
    # How long to look for the ticket note in the device's event log after writing it:
    # MeshCentral does not answer setDeviceEvent, and drops what it will not store.
    note_confirm_timeout: float = Field(default=5.0, gt=0, le=60)
    # Per device group (our group name): "prompt" makes MeshCentral ask on the device too;
    # "notify" only shows who is connected (our consent already happened on that device).
    consent_by_group: dict[str, ConsentMode] = {}
    default_consent: ConsentMode = "prompt"
    show_toolbar: bool = True
    # Where sync_devices files MeshCentral devices whose group has no name (never in practice).
    fallback_group: str = "meshcentral"

    @field_validator("url", "public_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("login_key")
    @classmethod
    def _hex_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value().strip()
        try:
            key = bytes.fromhex(raw)
        except ValueError as exc:
            raise ValueError("login_key must be the hex loginCookieEncryptionKey") from exc
        if len(key) < 32:
            raise ValueError("login_key must be at least 32 bytes (64 hex characters)")
        return SecretStr(raw)

    @model_validator(mode="after")
    def _one_credential(self) -> MeshCentralSettings:
        if self.password is None and self.login_key is None:
            raise ValueError("set SUPPORTBROKER_PROVIDER_MESHCENTRAL_LOGIN_KEY or _PASSWORD")
        return self

    def consent_mode(self, group_name: str) -> ConsentMode:
        return self.consent_by_group.get(group_name, self.default_consent)

    @property
    def control_url(self) -> str:
        base = self.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        prefix = f"/{self.domain}" if self.domain else ""
        return f"{base}{prefix}/control.ashx"
