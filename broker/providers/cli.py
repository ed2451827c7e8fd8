"""``supportbroker provider check NAME`` and ``supportbroker provider sync NAME``."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from broker.providers import registry
from broker.providers.service import sync_devices


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("provider", help="remote-access providers")
    sub = parser.add_subparsers(dest="provider_command", required=True, metavar="ACTION")

    check = sub.add_parser("check", help="is the provider reachable and are we authorised?")
    check.add_argument("name", help=f"one of: {', '.join(sorted(registry.available()))}")
    check.set_defaults(handler=_check)

    sync = sub.add_parser("sync", help="import the provider's device groups and devices")
    sync.add_argument("name")
    sync.set_defaults(handler=_sync)


async def _check(db: AsyncSession, args: argparse.Namespace) -> int:
    provider = registry.get(args.name)
    try:
        health = await provider.check()
    finally:
        await registry.reset()
    status = "ok" if health.ok else "FAILED"
    print(f"{health.provider}: {status}: {health.detail}")
    return 0 if health.ok else 1


async def _sync(db: AsyncSession, args: argparse.Namespace) -> int:
    try:
        changed = await sync_devices(db, args.name)
    finally:
        await registry.reset()
    print(f"{args.name}: {changed} device(s) created or updated")
    return 0
