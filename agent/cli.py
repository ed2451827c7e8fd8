"""``supportbroker-agent``: ``enroll --broker HOST:PORT --token T``, ``run`` and
``service-unit`` (the systemd --user unit for this installation)."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from agent.config import AgentSettings
from agent.consent import Prompter, TerminalConsole
from agent.dialog import DesktopConsole, graphical_session
from agent.errors import AgentError

UNIT_NAME = "supportbroker-agent.service"
SHIPPED_EXEC = "%h/.local/bin/supportbroker-agent"  # where pipx / pip --user put it


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
    sub.add_parser(
        "service-unit",
        help="print the systemd --user unit, ExecStart pointing at this installation",
    )
    return parser


def service_unit(executable: str | None = None) -> str:
    """The packaged unit (agent/systemd/supportbroker-agent.service) with ExecStart naming
    ``executable`` (default: this installation's ``supportbroker-agent``)."""
    from importlib.resources import files

    unit = files("agent").joinpath("systemd", UNIT_NAME).read_text()
    exe = executable or _installed_executable()
    return unit.replace(SHIPPED_EXEC, exe)


def _installed_executable() -> str:
    found = shutil.which("supportbroker-agent")
    if found is None:  # run as ``python -m agent.cli``: the script sits next to python
        found = str(Path(sys.executable).with_name("supportbroker-agent"))
    return str(Path(found).resolve())


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
    from agent.channels import keep_relay_heap

    keep_relay_heap()  # the agent relays forwards from here on: fewer page faults per byte
    interactive = {"auto": None, "desktop": None, "terminal": True, "web": False}[
        settings.consent_prompt
    ]
    console = TerminalConsole(notify=settings.notify, interactive=interactive)
    prompter: Prompter = console
    zenity = graphical_session() if settings.consent_prompt in ("auto", "desktop") else None
    if zenity is not None:
        prompter = DesktopConsole(console, zenity)
    elif settings.consent_prompt == "desktop":
        console.notice("no graphical session here (DISPLAY, zenity): asking at the terminal")
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
        prompter,
        pinned=config.broker_fingerprint,
        device_id=config.device_id,
        consent_timeout=settings.consent_timeout_seconds,
        shell_command=settings.shell_command,
        desktop=settings.desktop_config(),
    )
    core_holder.append(core)
    try:
        await runner.run(settings, prompter, runner.RunHandle(core, asyncio.Event()))
    finally:
        if isinstance(prompter, DesktopConsole):
            await prompter.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "service-unit":
        print(service_unit(), end="")
        return 0
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
