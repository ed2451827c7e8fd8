"""What one SIEM target is: where its events go, how, and whether payloads go with them.

Targets are part of the broker's one ``Settings`` (``SUPPORTBROKER_SIEM_TARGETS``, a JSON
list); each target gets its own exporter loop and its own cursor, named by ``name``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

Kind = Literal["https", "relp", "syslog-tls"]


class SiemTarget(BaseModel):
    """One receiver. ``https``: JSON lines POSTed to ``url``; ``relp``: RFC 5424 over RELP to
    ``host:port`` (TLS when ``tls``); ``syslog-tls``: RFC 5424 over TLS (RFC 5425) framing."""

    # The cursor's key: renaming a target starts it again from the beginning of the log.
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    kind: Kind
    url: str = ""
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    tls: bool = False  # RELP only: the other kinds are TLS always
    ca_file: Path | None = None  # PEM bundle trusted instead of the system's
    cert_file: Path | None = None  # client certificate (mutual TLS), PEM
    key_file: Path | None = None
    token: SecretStr | None = None  # https: sent as ``Authorization: Bearer``
    # Decrypted payloads go out only where the policy allows it (default: metadata only).
    payloads: bool = False
    hostname: str = ""  # syslog HOSTNAME; empty: this machine's name
    facility: int = Field(default=13, ge=0, le=23)  # 13: log audit (RFC 5424, 6.2.1)
    timeout_seconds: float = Field(default=10.0, gt=0, le=600)

    @model_validator(mode="after")
    def _where(self) -> SiemTarget:
        if self.kind == "https" and not self.url.startswith("https://"):
            raise ValueError(f"SIEM target {self.name!r}: an https target needs an https:// url")
        if self.kind != "https" and not self.port:
            raise ValueError(f"SIEM target {self.name!r}: a {self.kind} target needs a port")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.kind != "relp" or self.tls
