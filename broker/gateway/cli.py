"""``supportbroker agent token create --group G`` and ``supportbroker connect SESSION_ID``.

``connect`` talks to a running broker over HTTP (a one-time terminal ticket, then the
terminal WebSocket), so it works from a technician's machine with an API token
(``SUPPORTBROKER_URL``, ``SUPPORTBROKER_TOKEN``). It says on stderr when it is connected
("connected to pc-042 for HD-4711 — recorded") and, when the terminal closes, who ended the
session and why (or that the session still runs). ``--forward LOCAL:REMOTE`` instead opens a
local port whose connections are relayed to the device's port. A refusal (the broker's or the
device's: a port not allowed, a right not approved) is printed and the command exits 1.
``--get REMOTE LOCAL`` / ``--put LOCAL REMOTE`` move one file through the broker
(:mod:`broker.gateway.files_cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from broker.evidence.service import Actor

if TYPE_CHECKING:
    import httpx


async def _token_create(db: AsyncSession, args: argparse.Namespace) -> int:
    from broker.gateway.service import create_enrollment_token

    issued = await create_enrollment_token(
        db, group=args.group, actor=Actor(kind="system", name="cli"), hours=args.hours
    )
    print(f"enrollment token for group {issued.group} (valid until {issued.expires_at}):")
    print(issued.token)
    return 0


def register(sub: Any) -> None:
    agent = sub.add_parser("agent", help="built-in agent administration")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True, metavar="COMMAND")
    token = agent_sub.add_parser("token", help="enrollment tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    create = token_sub.add_parser("create", help="create a one-time enrollment token")
    create.add_argument("--group", required=True, help="device group name or id")
    create.add_argument("--hours", type=float, default=24.0)
    create.set_defaults(handler=_token_create)

    connect = sub.add_parser("connect", help="open an approved session's terminal or a forward")
    connect.add_argument("session_id")
    connect.add_argument(
        "--url", default=os.environ.get("SUPPORTBROKER_URL", "http://127.0.0.1:8080")
    )
    connect.add_argument("--token", default=os.environ.get("SUPPORTBROKER_TOKEN"))
    connect.add_argument("--mode", default="control", choices=["control", "join", "watch"])
    moves = connect.add_mutually_exclusive_group()
    moves.add_argument("--forward", default=None, metavar="LOCAL:REMOTE")
    moves.add_argument("--get", nargs=2, metavar=("REMOTE", "LOCAL"), help="download a file")
    moves.add_argument("--put", nargs=2, metavar=("LOCAL", "REMOTE"), help="upload a file")
    connect.set_defaults(plain=_cmd_connect)


def _cmd_connect(args: argparse.Namespace) -> int:
    if not args.token:
        print("supportbroker: error: set --token or SUPPORTBROKER_TOKEN", file=sys.stderr)
        return 1
    if args.get or args.put:  # one file, with blocking I/O: no event loop needed
        from broker.gateway import files_cli

        return files_cli.run(args)
    return asyncio.run(_connect(args))


async def ticket_info(
    url: str, token: str, session_id: str, mode: str, client: httpx.AsyncClient | None = None
) -> dict[str, Any]:
    """The one-time ticket and what the banner says of the session (device, ticket, recorded).

    ``client``: one kept open by the caller (a forward asks for a ticket per connection); a
    new client costs tens of milliseconds of CPU (it loads the CA bundle)."""
    import httpx

    if client is None:
        async with httpx.AsyncClient(timeout=10) as own:
            return await ticket_info(url, token, session_id, mode, own)
    resp = await client.post(
        f"{url}/api/v1/gateway/sessions/{session_id}/terminal-ticket",
        json={"mode": mode},
        headers={"Authorization": f"Bearer {token}"},
    )
    if resp.status_code != 200:
        raise SystemExit(f"supportbroker: error: {resp.json().get('detail', resp.text)}")
    body: dict[str, Any] = resp.json()
    return body


async def ticket(
    url: str, token: str, session_id: str, mode: str, client: httpx.AsyncClient | None = None
) -> str:
    return str((await ticket_info(url, token, session_id, mode, client))["ticket"])


ENDINGS = {"revoked": "was revoked", "denied": "was denied"}  # else: ended, expired, failed


def _say(text: str) -> None:
    """A banner line on stderr (the terminal's bytes own stdout); \r\n for a raw terminal."""
    sys.stderr.write(f"[supportbroker] {text}\r\n")
    sys.stderr.flush()


def _where(info: dict[str, Any], session_id: str) -> str:
    about = info.get("session") or {}
    if not about:
        return f"session {session_id}"
    return f"{about.get('device', '?')} for {about.get('ticket', '?')}"


async def _after(url: str, token: str, session_id: str, where: str, closed: str) -> str:
    """Who ended the session and why; or, when it still runs, why this terminal closed."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        resp = await client.get(
            f"/api/v1/sessions/{session_id}", headers={"Authorization": f"Bearer {token}"}
        )
    if resp.status_code != 200:  # an expert or watcher may not read the session itself
        return f"disconnected from {where}: {closed or 'the terminal closed'}"
    s = resp.json()
    state = str(s["state"])
    if state in ("approved", "active"):
        closed = closed or "the terminal closed"
        return f"disconnected from {where}: {closed}; the session is still {state}"
    why = f" — {s['end_reason']}" if s.get("end_reason") else ""
    by = f" (by {s['ended_by']})" if s.get("ended_by") else ""
    return f"disconnected from {where}: the session {ENDINGS.get(state, state)}{why}{by}"


def ws_url(url: str, path: str) -> str:
    return url.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + path


class Refused(Exception):
    """The broker closed the socket with an error: its ``{"error", "detail"}`` frame."""


def _refusal(frame: str) -> Refused:
    """The refusal in a text frame (the gateway's sockets send text only for errors)."""
    try:
        detail = str(json.loads(frame).get("detail", frame))
    except (ValueError, AttributeError):
        detail = frame
    return Refused(detail or "refused by the broker")


def _fail(exc: BaseException) -> int:
    print(f"supportbroker: error: {exc}", file=sys.stderr)
    return 1


async def _connect(args: argparse.Namespace) -> int:
    if args.forward:
        local, _, remote = args.forward.partition(":")
        return await serve_forward(args.url, args.token, args.session_id, int(local), int(remote))
    import websockets

    info = await ticket_info(args.url, args.token, args.session_id, args.mode)
    uri = ws_url(args.url, f"/api/v1/gateway/terminal?ticket={info['ticket']}")
    where = _where(info, args.session_id)
    recorded = (info.get("session") or {}).get("recorded")
    banner = f"connected to {where}" + (" — recorded" if recorded else "")
    if args.mode != "control":  # the shell already runs
        banner = f"{'watching' if args.mode == 'watch' else 'joined'} {where}" + (
            " — recorded" if recorded else ""
        )
    try:
        async with websockets.connect(uri, max_size=None) as ws:
            if args.mode == "control":
                _say(f"waiting for {where} (the session starts once the user has approved)…")
            await _terminal(ws, banner, at_once=args.mode != "control")
            closed = ws.close_reason or ""
    except Refused as exc:
        return _fail(exc)
    except websockets.ConnectionClosedError as exc:
        return _fail(Refused(exc.rcvd.reason if exc.rcvd else "the broker closed the terminal"))
    _say(await _after(args.url, args.token, args.session_id, where, closed))
    return 0


async def _terminal(ws: Any, banner: str = "", *, at_once: bool = False) -> None:
    """Relay the terminal; ``banner`` is said with its first output (the shell is there),
    or at once (``at_once``: joining or watching a shell that already runs)."""
    import shutil
    import termios
    import tty

    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    cols, rows = shutil.get_terminal_size()
    await ws.send(json.dumps({"type": "resize", "cols": cols, "rows": rows}))
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    loop.add_reader(fd, lambda: queue.put_nowait(os.read(fd, 4096)))
    if saved is not None:
        tty.setraw(fd)

    async def up() -> None:
        while data := await queue.get():
            await ws.send(data)

    sender = asyncio.create_task(up())
    if banner and at_once:
        _say(banner)
        banner = ""
    try:
        async for frame in ws:
            if isinstance(frame, str):
                raise _refusal(frame)
            if banner:
                _say(banner)
                banner = ""
            sys.stdout.buffer.write(frame)
            sys.stdout.buffer.flush()
    finally:
        sender.cancel()
        loop.remove_reader(fd)
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


FORWARD_HEAP_PAD = 16 << 20


def _keep_heap(pad: int = FORWARD_HEAP_PAD) -> None:
    """Keep ``pad`` bytes of free heap at each trim (glibc's ``M_TOP_PAD``), as the agent does
    (``agent.channels.keep_relay_heap``): the relay's 256 KiB - 4 MiB buffers otherwise fault
    their pages in again after each trim (measured: ~12,000 -> ~2,300 faults, a fifth less
    CPU over 384 MiB forwarded). glibc on Linux only; elsewhere nothing changes."""
    import ctypes
    import platform

    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).mallopt(-2, pad)  # -2: M_TOP_PAD


async def serve_forward(url: str, token: str, session_id: str, local: int, remote: int) -> int:
    """Listen on 127.0.0.1:local; relay each connection to the device's port ``remote``.

    Runs until cancelled (0); a refused forward stops it: the reason is printed, 1 returned.
    One HTTP client asks for every connection's ticket (a new one per connection cost
    ~50 ms of CPU inside each connection's start, most of it loading the CA bundle)."""
    import httpx

    _keep_heap()
    async with httpx.AsyncClient(timeout=10) as client:
        return await _serve_forward(client, url, token, session_id, local, remote)


async def _serve_forward(
    client: httpx.AsyncClient, url: str, token: str, session_id: str, local: int, remote: int
) -> int:
    import websockets

    refused: asyncio.Future[Refused] = asyncio.get_running_loop().create_future()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        secret = await ticket(url, token, session_id, "control", client)
        uri = ws_url(url, f"/api/v1/gateway/forward?ticket={secret}&port={remote}")
        # No permessage-deflate: forwarded bytes are mostly encrypted or compressed already.
        # Nor a 32 KiB write limit: each large send would wait for the socket to drain.
        async with websockets.connect(
            uri, max_size=None, compression=None, write_limit=4 << 20
        ) as ws:

            async def up() -> None:
                while data := await reader.read(262144):
                    await ws.send(data)

            task = asyncio.create_task(up())
            try:
                async for frame in ws:
                    if isinstance(frame, str):
                        raise _refusal(frame)
                    writer.write(frame)
                    await writer.drain()
            except websockets.ConnectionClosedError as exc:
                raise Refused(exc.rcvd.reason if exc.rcvd else "the broker closed") from exc
            finally:
                task.cancel()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await relay(reader, writer)
        except (Refused, SystemExit) as exc:  # SystemExit: no ticket (its message says why)
            if not refused.done():
                refused.set_result(exc if isinstance(exc, Refused) else Refused(str(exc)))
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", local)
    print(f"forwarding 127.0.0.1:{local} -> device port {remote}; Ctrl-C to stop")
    async with server:  # serving until a refusal, or Ctrl-C
        try:
            reason = await refused
        except asyncio.CancelledError:
            return 0
    return _fail(Refused(str(reason).removeprefix("supportbroker: error: ")))
