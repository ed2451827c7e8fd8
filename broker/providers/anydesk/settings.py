"""AnyDesk provider settings (env prefix ``SUPPORTBROKER_PROVIDER_ANYDESK_``).

``LICENSE_ID`` and ``API_PASSWORD`` come from the AnyDesk customer portal; the password signs
every request and is never sent or logged.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class AnyDeskSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SUPPORTBROKER_PROVIDER_ANYDESK_", extra="ignore")

    api_url: str = "https://v1.api.anydesk.com:8081"
    license_id: str
    api_password: SecretStr
    timeout: float = Field(default=10.0, gt=0)
    page_size: int = Field(default=100, ge=1, le=1000)
    # AnyDesk clients have no groups: sync_devices files them under this device group.
    import_group: str = "AnyDesk"
    # Clock tolerance when matching a connection's start to an approved window.
    grace_seconds: int = Field(default=60, ge=0, le=3600)

    @field_validator("api_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.rstrip("/")
