"""``supportbroker session list``: the sessions an operator sees, as a table or JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.permissions import grants_for
from broker.auth.principal import Principal
from broker.errors import ValidationFailed
from broker.providers import offers
from broker.sessions import service
from broker.sessions.repository import SessionFilter
from broker.sessions.states import SessionState

# The operator at the console reads like an auditor: everything, changing nothing.
OPERATOR = Principal(kind="user", role="auditor", name="cli operator", scopes=grants_for("auditor"))


def register(subparsers: Any) -> None:
    session = subparsers.add_parser("session", help="remote sessions")
    sub = session.add_subparsers(dest="session_command", required=True, metavar="ACTION")
    lst = sub.add_parser("list", help="list sessions, newest first")
    lst.add_argument("--state", choices=[s.value for s in SessionState])
    lst.add_argument("--ticket", metavar="SYSTEM:ID", help="only sessions of this ticket")
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--json", action="store_true", help="one JSON document on stdout")
    lst.set_defaults(handler=list_sessions)


def _ticket_filter(value: str | None) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    system, sep, external_id = value.partition(":")
    if not sep or not system or not external_id:
        raise ValidationFailed(f"--ticket must look like SYSTEM:ID, not {value!r}")
    return system, external_id


async def list_sessions(db: AsyncSession, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 500:
        raise ValidationFailed("--limit must be between 1 and 500")
    system, external_id = _ticket_filter(args.ticket)
    filters = SessionFilter(
        system=system,
        external_id=external_id,
        state=SessionState(args.state) if args.state else None,
    )
    records = await service.list_sessions(db, OPERATOR, filters, limit=args.limit, offset=0)
    items = [offers.session_out(r).model_dump(mode="json") for r in records]
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    if not items:
        print("no sessions")
        return 0
    print(f"{'ID':36}  {'STATE':16}  {'TICKET':24}  {'TECHNICIAN':20}  REQUESTED")
    for item in items:
        ticket = f"{item['ticket']['system']}:{item['ticket']['external_id']}"
        print(
            f"{item['id']:36}  {item['state']:16}  {ticket[:24]:24}  "
            f"{item['technician']['name'][:20]:20}  {item['requested_at']}"
        )
    return 0
