"""``supportbroker siem status``: each SIEM target's cursor, the log's size and the lag."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from broker.siem.service import status


async def _status(db: AsyncSession, args: argparse.Namespace) -> int:
    settings = db.info["settings"]
    found = await status(db, settings)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "target": t.name,
                        "kind": t.kind,
                        "next_position": t.next_position,
                        "log_size": t.log_size,
                        "lag": t.lag,
                        "delivered": t.delivered,
                        "delivered_at": t.delivered_at.isoformat() if t.delivered_at else None,
                        "failures": t.failures,
                        "last_error": t.last_error,
                    }
                    for t in found
                ]
            )
        )
        return 0
    if not found:
        print("no SIEM targets configured (SUPPORTBROKER_SIEM_TARGETS)")
        return 0
    for t in found:
        print(
            f"{t.name} ({t.kind}): next position {t.next_position} of {t.log_size}, "
            f"lag {t.lag}, delivered {t.delivered}"
        )
        if t.failures:
            print(f"  failing ({t.failures} in a row) since {t.last_error_at}: {t.last_error}")
    return 0


def register(subparsers: Any) -> None:
    siem = subparsers.add_parser("siem", help="the SIEM export's cursors and lag")
    sub = siem.add_subparsers(dest="siem_command", required=True, metavar="ACTION")
    show = sub.add_parser("status", help="each target's cursor and how far it lags the log")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=_status)
