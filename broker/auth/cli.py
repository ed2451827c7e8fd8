"""``supportbroker user create|reset-password|list`` and ``token create|list|revoke``.

Input goes through the API's schemas (the same rules) and changes through the same service
functions (the same audit events), acting as the console operator. A one-time password or a
token secret is printed once, on stdout, and nowhere else.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth import service, tokens
from broker.auth.models import Role
from broker.auth.permissions import Scope
from broker.auth.schemas import TokenCreate, TokenOut, UserCreate, UserOut
from broker.db.base import utcnow
from broker.errors import ValidationFailed
from broker.evidence.service import Actor

CLI_ACTOR = Actor(kind="system", name="cli")

ModelT = TypeVar("ModelT", bound=BaseModel)


def _parse(model: type[ModelT], values: dict[str, Any], flags: dict[str, str]) -> ModelT:
    """Validate like the API does; errors name the command-line flag, not the field."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first.get("loc") else ""
        raise ValidationFailed(f"{flags.get(field, field)}: {first.get('msg', 'invalid')}") from exc


def register(subparsers: Any) -> None:
    user = subparsers.add_parser("user", help="user accounts")
    usub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    create = usub.add_parser("create", help="create an account with a one-time password")
    create.add_argument("username")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--display-name")
    create.add_argument("--email")
    create.set_defaults(handler=create_user)

    reset = usub.add_parser("reset-password", help="give an account a new one-time password")
    reset.add_argument("username")
    reset.set_defaults(handler=reset_password)

    lst = usub.add_parser("list", help="list accounts by username")
    lst.add_argument("--json", action="store_true", help="one JSON document on stdout")
    lst.set_defaults(handler=list_users)

    token = subparsers.add_parser("token", help="API tokens")
    tsub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    tcreate = tsub.add_parser("create", help="create an API token (its secret is shown once)")
    tcreate.add_argument("--name", required=True)
    owner = tcreate.add_mutually_exclusive_group(required=True)
    owner.add_argument("--user", metavar="USERNAME", help="the token acts as this user")
    owner.add_argument("--system", help="the token acts for this ticket system")
    tcreate.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=[s.value for s in Scope],
        help="repeat for several scopes",
    )
    tcreate.add_argument("--expires-in-days", type=int)
    tcreate.set_defaults(handler=create_token)

    tlist = tsub.add_parser("list", help="list API tokens (never their secrets)")
    tlist.add_argument("--json", action="store_true", help="one JSON document on stdout")
    tlist.set_defaults(handler=list_tokens)

    revoke = tsub.add_parser("revoke", help="revoke an API token")
    revoke.add_argument("token_id", metavar="TOKEN_ID")
    revoke.set_defaults(handler=revoke_token)


async def create_user(db: AsyncSession, args: argparse.Namespace) -> int:
    body = _parse(
        UserCreate,
        {
            "username": args.username,
            "role": args.role,
            "display_name": args.display_name,
            "email": args.email,
        },
        {"username": "USERNAME", "display_name": "--display-name", "email": "--email"},
    )
    user, password = await service.create_user_with_password(
        db, actor=CLI_ACTOR, **body.model_dump(mode="json")
    )
    print(f"created {user.role} {user.username} ({user.id})")
    print(f"one-time password: {password}  (to be changed at the first login)")
    return 0


async def reset_password(db: AsyncSession, args: argparse.Namespace) -> int:
    user = await service.get_user_by_name(db, args.username)
    password = await service.reset_password(db, CLI_ACTOR, user)
    print(f"new one-time password for {user.username}: {password}")
    print("(their browser sessions have ended; they must change it at the next login)")
    return 0


async def list_users(db: AsyncSession, args: argparse.Namespace) -> int:
    rows = [UserOut.of(u).model_dump(mode="json") for u in await service.list_users(db)]
    if args.json:
        print(json.dumps({"items": rows}, indent=2))
        return 0
    if not rows:
        print("no users")
        return 0
    print(f"{'USERNAME':24}  {'ROLE':10}  {'STATE':8}  DISPLAY NAME")
    for row in rows:
        state = "active" if row["is_active"] else "disabled"
        if row["must_change_password"] and row["is_active"]:
            state = "new-pw"
        print(f"{row['username'][:24]:24}  {row['role']:10}  {state:8}  {row['display_name']}")
    return 0


async def create_token(db: AsyncSession, args: argparse.Namespace) -> int:
    owner_id = (await service.get_user_by_name(db, args.user)).id if args.user else None
    body = _parse(
        TokenCreate,
        {
            "name": args.name,
            "scopes": args.scope,
            "owner_id": owner_id,
            "system": args.system,
            "expires_in_days": args.expires_in_days,
        },
        {
            "name": "--name",
            "scopes": "--scope",
            "system": "--system",
            "expires_in_days": "--expires-in-days",
        },
    )
    token, secret = await tokens.create_token(db, actor=CLI_ACTOR, **body.model_dump(mode="json"))
    holder = f"user {args.user}" if args.user else f"ticket system {token.system}"
    expires = token.expires_at.isoformat() if token.expires_at else "never"
    print(f"created token {token.name} ({token.id}) for {holder}")
    print(f"scopes: {', '.join(token.scopes)}; expires: {expires}")
    print(f"secret (shown only now): {secret}")
    return 0


async def list_tokens(db: AsyncSession, args: argparse.Namespace) -> int:
    found = await tokens.list_tokens(db)
    if args.json:
        rows = [TokenOut.of(t).model_dump(mode="json") for t in found]
        print(json.dumps({"items": rows}, indent=2))
        return 0
    if not found:
        print("no tokens")
        return 0
    now = utcnow()
    print(f"{'ID':36}  {'NAME':20}  {'PREFIX':10}  {'STATE':8}  SCOPES")
    for t in found:
        state = "active"
        if t.revoked_at is not None:
            state = "revoked"
        elif t.expires_at is not None and t.expires_at <= now:
            state = "expired"
        print(f"{t.id:36}  {t.name[:20]:20}  {t.prefix:10}  {state:8}  {','.join(t.scopes)}")
    return 0


async def revoke_token(db: AsyncSession, args: argparse.Namespace) -> int:
    token = await tokens.revoke_token(db, actor=CLI_ACTOR, token_id=args.token_id)
    print(f"revoked token {token.name} ({token.id})")
    return 0
