"""Request and response bodies of the auth API: login, users and tokens.

Bodies are closed (``extra="forbid"``) and strict per field; text is refused when it holds
control characters (the rules shared with sessions and consent). Password fields are never
echoed back, logged or audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from broker.auth.models import ApiToken, Role, User
from broker.auth.permissions import Scope
from broker.types import TicketSystem, clean_text, non_blank

PASSWORD_MIN_LENGTH = 10
USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._@-]{0,63}$"

CleanText = Annotated[str, AfterValidator(clean_text)]
Username = Annotated[str, Field(pattern=USERNAME_PATTERN)]
DisplayName = Annotated[
    str, Field(min_length=1, max_length=200), AfterValidator(clean_text), AfterValidator(non_blank)
]
Email = Annotated[str, Field(max_length=320, pattern=r"^[^@\s]{1,64}@[^@\s]{1,255}$")]
Password = Annotated[str, Field(max_length=1000)]
NewPassword = Annotated[str, Field(min_length=PASSWORD_MIN_LENGTH, max_length=1000)]
Strict = ConfigDict(extra="forbid")


class LoginIn(BaseModel):
    model_config = Strict

    # The login form takes what is typed: an impossible username simply fails to log in.
    # Control characters are refused outright (no username holds one; they are not audited).
    username: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(clean_text)]
    password: Password
    # Needed only when the account has the TOTP second factor enabled.
    totp_code: Annotated[str, Field(min_length=1, max_length=20)] | None = None


class UserOut(BaseModel):
    id: str
    username: str
    display_name: str
    email: str | None
    role: str
    is_active: bool
    must_change_password: bool
    max_concurrent_sessions: int | None
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            username=user.username,
            display_name=user.display_name,
            email=user.email,
            role=user.role,
            is_active=user.is_active,
            must_change_password=user.must_change_password,
            max_concurrent_sessions=user.max_concurrent_sessions,
            created_at=user.created_at,
        )


class UserList(BaseModel):
    items: list[UserOut]


class LoginOut(BaseModel):
    user: UserOut
    csrf_token: str
    must_change_password: bool


class MeOut(BaseModel):
    """Who is calling: a logged-in user (with the CSRF token) or an API token."""

    kind: str
    role: str
    name: str
    scopes: list[str]
    user: UserOut | None
    token_id: str | None
    ticket_system: str | None
    csrf_token: str | None
    must_change_password: bool


class PasswordChangeIn(BaseModel):
    model_config = Strict

    current_password: Password
    new_password: NewPassword


class UserCreate(BaseModel):
    model_config = Strict

    username: Username
    display_name: DisplayName | None = None
    email: Email | None = None
    role: Role
    max_concurrent_sessions: Annotated[int, Field(strict=True, ge=1, le=100)] | None = None


class UserUpdate(BaseModel):
    """Only the fields sent are changed; ``null`` clears email or the session limit."""

    model_config = Strict

    display_name: DisplayName | None = None
    email: Email | None = None
    role: Role | None = None
    is_active: Annotated[bool, Field(strict=True)] | None = None
    max_concurrent_sessions: Annotated[int, Field(strict=True, ge=1, le=100)] | None = None


class UserUnlocked(BaseModel):
    """An account whose failed-login counters an admin cleared, and how many there were."""

    user: UserOut
    cleared: int


class UserWithPassword(BaseModel):
    """A created or reset account with its one-time password, shown this once."""

    user: UserOut
    one_time_password: str


class TokenCreate(BaseModel):
    model_config = Strict

    name: Annotated[
        str,
        Field(min_length=1, max_length=100),
        AfterValidator(clean_text),
        AfterValidator(non_blank),
    ]
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=len(Scope))]
    owner_id: Annotated[str, Field(min_length=1, max_length=36)] | None = None
    system: TicketSystem | None = None
    expires_in_days: Annotated[int, Field(strict=True, ge=1, le=3650)] | None = None


class TokenOut(BaseModel):
    id: str
    name: str
    prefix: str
    owner_id: str | None
    system: str | None
    scopes: list[str]
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None  # to the minute (broker.auth.deps.LAST_USED_PRECISION)
    created_at: datetime
    created_by: str | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenOut:
        return cls(
            id=token.id,
            name=token.name,
            prefix=token.prefix,
            owner_id=token.owner_id,
            system=token.system,
            scopes=list(token.scopes),
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
            last_used_at=token.last_used_at,
            created_at=token.created_at,
            created_by=token.created_by,
        )


class TokenCreated(TokenOut):
    """The new token with its secret, shown this once."""

    secret: str


class TokenList(BaseModel):
    items: list[TokenOut]
