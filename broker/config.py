"""One Settings class for the broker, read from the environment (prefix ``SUPPORTBROKER_``).

Everything has a working default so ``make run`` needs zero configuration; outside the
``development`` environment placeholder secrets are refused at start-up.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRET = "dev-only-change-me"  # noqa: S105 - a marker we refuse outside development
# OWASP's password storage cheat sheet: argon2id with at least 19 MiB and 2 passes.
OWASP_MEMORY_KIB = 19456
OWASP_TIME_COST = 2

# A SIEM target (docs/SIEM.md), one entry of ``SUPPORTBROKER_SIEM_TARGETS`` (a JSON list):
# each gets its own exporter loop and its own cursor, named by ``name``.
SiemKind = Literal["https", "relp", "syslog-tls"]


class SiemTarget(BaseModel):
    """One receiver. ``https``: JSON lines POSTed to ``url``; ``relp``: RFC 5424 over RELP to
    ``host:port`` (TLS when ``tls``); ``syslog-tls``: RFC 5424 over TLS (RFC 5425) framing."""

    # The cursor's key: renaming a target starts it again from the beginning of the log.
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    kind: SiemKind
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


class Settings(BaseSettings):
    """Broker settings. See docs/ARCHITECTURE.md for what each part controls."""

    model_config = SettingsConfigDict(env_prefix="SUPPORTBROKER_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    # Empty: a SQLite file in data_dir, so SUPPORTBROKER_DATA_DIR moves all of the data.
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""  # how users reach us; derived from host/port when empty
    log_format: Literal["console", "json"] | None = None  # None: console in development

    # Secret material lives in files outside the database.
    data_dir: Path = Path("var")
    secret_key: SecretStr = SecretStr(PLACEHOLDER_SECRET)  # signs cookies and consent-code HMACs
    kek_path: Path | None = None  # audit key-encryption key file; default data_dir/keys/kek.json
    signing_key_path: Path | None = None  # Ed25519 checkpoint key; default data_dir/keys/...
    checkpoint_publish_dir: Path | None = None  # where signed checkpoints are published
    audit_log_id: str = "supportbroker.local/audit"
    # Checkpoints are signed on this cadence (and at shutdown), not per append: every record
    # is covered by a signed checkpoint within this many seconds (docs/AUDIT.md).
    checkpoint_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    # Whole-log verification in the background (0: only on demand); its worker processes.
    verify_interval_seconds: float = Field(default=86400.0, ge=0)
    verify_processes: int = Field(default=1, ge=1, le=64)
    # RFC 3161 timestamps of published checkpoints (docs/AUDIT.md, "Timestamps"): the TSA's
    # URL (empty: none), the PEM file of the certificates its tokens must chain to, and how
    # often the latest published checkpoint is sent to it.
    tsa_url: str = ""
    tsa_certs: Path | None = None
    timestamp_interval_seconds: float = Field(default=3600.0, gt=0)

    # Policies.
    reason_min_length: int = Field(default=10, ge=1, le=2000)
    max_concurrent_sessions: int = Field(default=2, ge=1, le=100)
    consent_timeout_seconds: int = Field(default=600, ge=30, le=86400)
    # Dual-control playback (docs/OVERSIGHT.md): how long a second auditor's approval opens a
    # replay or a plaintext export to the auditor who asked.
    playback_approval_minutes: int = Field(default=30, ge=1, le=1440)
    max_session_minutes: int = Field(default=480, ge=1, le=10080)
    consent_max_attempts: int = Field(default=5, ge=1, le=100)
    consent_lockout_seconds: int = Field(default=900, ge=1)
    # The first wait after ``consent_max_attempts`` wrong codes (per client and per code);
    # each further wrong code doubles it.
    consent_backoff_seconds: int = Field(default=60, ge=1, le=3600)
    # How long after a consent request its history link (every session on the device, with
    # the consent receipts) keeps working; after that it answers 410 (README, "History").
    consent_link_retention_days: int = Field(default=90, ge=1, le=3650)

    # Mail to device owners (an unattended session's notice). No host: nothing is sent and
    # the notices stay queued for when a server is set (broker.notices.mailer).
    smtp_host: str = ""
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "supportbroker@localhost"
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Wrong logins for one account from all addresses together before addresses it never
    # signed in from must wait (broker.auth.throttle, the account's guard).
    login_guard_failures: int = Field(default=50, ge=5, le=10000)
    # argon2id's cost for passwords (docs/SECURITY.md, "Password hashes"). Outside the test
    # environment no less than OWASP's floor (19 MiB, 2 passes); raising it re-hashes each
    # password at its owner's next login.
    password_hash_time_cost: int = Field(default=3, ge=1, le=100)
    password_hash_memory_kib: int = Field(default=65536, ge=8, le=4 * 1024 * 1024)
    password_hash_parallelism: int = Field(default=4, ge=1, le=64)
    sweep_interval_seconds: float = Field(default=5.0, gt=0)
    # How often each managed MeshCentral/AnyDesk device's connections are read for outside
    # connections, whether or not a session runs there (0: never).
    provider_sweep_seconds: float = Field(default=300.0, ge=0)
    web_session_hours: int = Field(default=12, ge=1, le=720)
    trusted_proxies: list[str] = []  # X-Forwarded-For is honoured only from these
    max_body_bytes: int = 1_000_000
    # The largest file moved through the broker, for groups that set no limit of their own.
    files_max_bytes: int = Field(default=1 << 30, ge=1)

    # SSH gateway (built-in agent provider).
    gateway_enabled: bool = True
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 2222
    # The gateway's SSH key (agents pin it); default data_dir/keys/gateway_ed25519. Replicas
    # behind one load balancer share it, like the KEK and the checkpoint key (docs/DEPLOY.md).
    gateway_key_path: Path | None = None

    # Replicas (docs/DEPLOY.md): several ``supportbroker serve`` on one PostgreSQL database.
    # Empty id: host name, process id and a random suffix. The address is where the other
    # replicas reach this one (recorded for peering; default: the base URL).
    replica_id: str = Field(default="", pattern=r"^[A-Za-z0-9._:-]{0,120}$")
    replica_address: str = ""
    # Each replica writes its heartbeat this often; a replica (and every agent link it holds)
    # counts as gone, and its lease on the background jobs may be taken over, once its last
    # heartbeat is older than ``replica_lease_seconds``.
    replica_heartbeat_seconds: float = Field(default=5.0, gt=0, le=600)
    replica_lease_seconds: float = Field(default=20.0, gt=0, le=3600)
    # The gateway re-reads open sessions this often even without a signal. Signals come from
    # this process and, on PostgreSQL, from the other replicas (LISTEN/NOTIFY); None: 1 s on
    # SQLite (other processes, e.g. the command line, cannot signal), 30 s on PostgreSQL.
    signal_fallback_seconds: float | None = Field(default=None, gt=0, le=3600)
    # /readyz answers 503 when the database has not answered its probe within this long: a
    # replica cut off from PostgreSQL (a dropped route hangs rather than fails) leaves the
    # load balancer's rotation (docs/DEPLOY.md, "Failures").
    readiness_timeout_seconds: float = Field(default=2.0, gt=0, le=60)

    # SIEM export (docs/SIEM.md): one exporter loop and one durable cursor per target.
    siem_targets: list[SiemTarget] = []
    siem_batch_size: int = Field(default=500, ge=1, le=10000)
    siem_poll_seconds: float = Field(default=1.0, gt=0, le=3600)  # idle: look for new records
    # After a failed delivery wait this long, doubling per failure up to the maximum.
    siem_retry_seconds: float = Field(default=1.0, gt=0, le=3600)
    siem_retry_max_seconds: float = Field(default=300.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _database_in_data_dir(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'supportbroker.db'}"
        return self

    @model_validator(mode="after")
    def _lease_outlives_heartbeat(self) -> Settings:
        # A lease renewed every heartbeat must not lapse between two of them.
        if self.replica_lease_seconds <= self.replica_heartbeat_seconds:
            raise ValueError(
                "SUPPORTBROKER_REPLICA_LEASE_SECONDS must be longer than "
                "SUPPORTBROKER_REPLICA_HEARTBEAT_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def _siem_names_unique(self) -> Settings:
        names = [t.name for t in self.siem_targets]
        if len(names) != len(set(names)):
            raise ValueError("SUPPORTBROKER_SIEM_TARGETS: two targets share a name (a cursor)")
        return self

    @model_validator(mode="after")
    def _password_cost_floor(self) -> Settings:
        if self.password_hash_memory_kib < 8 * self.password_hash_parallelism:
            raise ValueError(
                "SUPPORTBROKER_PASSWORD_HASH_MEMORY_KIB must be at least 8 KiB per lane "
                "(SUPPORTBROKER_PASSWORD_HASH_PARALLELISM)"
            )
        # Cheaper hashes only where no real password lives: test suites hash thousands.
        if self.environment != "test" and (
            self.password_hash_memory_kib < OWASP_MEMORY_KIB
            or self.password_hash_time_cost < OWASP_TIME_COST
        ):
            raise ValueError(
                f"the password hash cost is below OWASP's floor for argon2id "
                f"({OWASP_MEMORY_KIB} KiB, {OWASP_TIME_COST} passes), refused in the "
                f"{self.environment!r} environment"
            )
        return self

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        # "test" counts as outside development too: a staging box started with
        # SUPPORTBROKER_ENVIRONMENT=test must not sign cookies with a published key.
        if (
            self.environment != "development"
            and self.secret_key.get_secret_value() == PLACEHOLDER_SECRET
        ):
            raise ValueError(
                f"SUPPORTBROKER_SECRET_KEY is the development placeholder, refused in the "
                f"{self.environment!r} environment; set a real secret, "
                "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        if len(self.secret_key.get_secret_value()) < 16:
            raise ValueError("SUPPORTBROKER_SECRET_KEY must be at least 16 characters")
        return self

    @model_validator(mode="after")
    def _tsa_needs_certs(self) -> Settings:
        # A token is checked before it is kept: without trusted certificates it could not be.
        if self.tsa_url and self.tsa_certs is None:
            raise ValueError("SUPPORTBROKER_TSA_URL needs SUPPORTBROKER_TSA_CERTS (a PEM file)")
        if self.tsa_url and self.tsa_certs is not None and not self.tsa_certs.is_file():
            raise ValueError(f"SUPPORTBROKER_TSA_CERTS: no file at {self.tsa_certs}")
        return self

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def resolved_kek_path(self) -> Path:
        return self.kek_path or self.keys_dir / "kek.json"

    @property
    def resolved_signing_key_path(self) -> Path:
        return self.signing_key_path or self.keys_dir / "checkpoint-ed25519.pem"

    @property
    def resolved_gateway_key_path(self) -> Path:
        return self.gateway_key_path or self.keys_dir / "gateway_ed25519"

    @property
    def resolved_signal_fallback_seconds(self) -> float:
        if self.signal_fallback_seconds is not None:
            return self.signal_fallback_seconds
        return 1.0 if self.is_sqlite else 30.0

    @property
    def resolved_publish_dir(self) -> Path:
        return self.checkpoint_publish_dir or self.data_dir / "checkpoints"

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests build their own and pass them to create_app)."""
    return Settings()
