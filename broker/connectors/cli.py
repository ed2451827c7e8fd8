"""``supportbroker connector rejected``: the inbound deliveries that were refused, as kept.

One JSON object per line, newest first (headers with credentials redacted, the body as
received): what the admin looks at when a help desk's webhook does not seem to arrive.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from broker.connectors import service


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("connector", help="ticket-system connectors")
    sub = parser.add_subparsers(dest="connector_command", required=True, metavar="ACTION")
    rejected = sub.add_parser("rejected", help="list refused inbound webhook deliveries")
    rejected.add_argument("--system", default=None, help="only this ticket system")
    rejected.add_argument("--limit", type=_limit, default=20, help="how many (1-500)")
    rejected.add_argument("--no-body", action="store_true", help="leave the bodies out")
    rejected.set_defaults(handler=_rejected)


def _limit(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 500:
        raise argparse.ArgumentTypeError("between 1 and 500")
    return number


async def _rejected(db: AsyncSession, args: argparse.Namespace) -> int:
    rows = await service.rejected_deliveries(db, args.system, limit=args.limit)
    for row in rows:
        if args.no_body:
            row.pop("body")
        print(json.dumps(row, ensure_ascii=False, sort_keys=True))
    if not rows:
        print("no refused deliveries kept" + (f" for {args.system}" if args.system else ""))
    return 0
