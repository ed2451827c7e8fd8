"""``supportbroker-agent``: ``enroll --broker HOST:PORT --token T`` and ``run``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from agent.config import AgentSettings
from agent.consent import TerminalConsole
from agent.errors import AgentError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supportbroker-agent", description="supportbroker end-user agent"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    enroll = sub.add_parser("enroll", help="enroll this device with a one-time token")
    enroll.add_argument("--broker", required=True, help="gateway address HOST:PORT")
    enroll.add_argument("--token", required=True, help="one-time enrollment token")
    enroll.add_argument(
        "--fingerprint",
        default=None,
        help="expected broker key fingerprint (SHA256:...), if published",
    )
    sub.add_parser("run", help="connect to the broker and serve approved sessions")
    return parser


async def _main(args: argparse.Namespace, settings: AgentSettings) -> int:
    from agent import runner
    from agent.config import load_enrollment
    from agent.identity import load_or_create_key
    from agent.server import AgentCore

    if args.command == "enroll":
        console = TerminalConsole(notify=False)
        config = await runner.enroll(
            settings, args.broker, args.token, console, expect_fingerprint=args.fingerprint
        )
        print(f"enrolled as device {config.device_id}")
        print(f"broker key pinned: {config.broker_fingerprint}")
        return 0
    interactive = {"auto": None, "terminal": True, "web": False}[settings.consent_prompt]
    console = TerminalConsole(notify=settings.notify, interactive=interactive)
    core_holder: list[AgentCore] = []

    async def _end() -> None:
        for core in core_holder:
            await core.end_all()

    console.on_end = _end
    console.start()
    config = load_enrollment(settings)
    key = load_or_create_key(settings.key_path)
    core = AgentCore(
        key,
        console,
        pinned=config.broker_fingerprint,
        device_id=config.device_id,
        consent_timeout=settings.consent_timeout_seconds,
        shell_command=settings.shell_command,
        desktop=settings.desktop_config(),
    )
    core_holder.append(core)
    await runner.run(settings, console, runner.RunHandle(core, asyncio.Event()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = AgentSettings()
        return asyncio.run(_main(args, settings))
    except ValidationError as exc:
        print(f"supportbroker-agent: configuration error: {exc}", file=sys.stderr)
    except AgentError as exc:
        print(f"supportbroker-agent: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
