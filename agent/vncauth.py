"""The agent's side of an RFB handshake with the local VNC server (RFC 6143 §7.1-7.2).

The agent authenticates to the server with the session's one-time password (VNC
authentication, §7.2.2: DES over a 16-byte challenge) so the secret never leaves the device.
What the broker receives on the channel starts after the SecurityResult: ClientInit from the
broker, ServerInit and everything else from the server.
"""

from __future__ import annotations

import asyncio
import struct

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from agent.errors import AgentError

SECURITY_NONE = 1
SECURITY_VNC = 2
HANDSHAKE_SECONDS = 10.0
MAX_REASON = 4096


class VncHandshakeError(AgentError):
    """The local VNC server refused us or spoke something other than RFB 3.x."""


def _reverse_bits(byte: int) -> int:
    return int(f"{byte:08b}"[::-1], 2)


def vnc_response(password: str, challenge: bytes) -> bytes:
    """DES-encrypt ``challenge`` with the password as VNC does: first 8 bytes, zero-padded,
    each byte's bits reversed (a quirk of the original implementation every server keeps)."""
    key = bytes(_reverse_bits(b) for b in password.encode("latin-1")[:8].ljust(8, b"\0"))
    # Single DES is three-key TripleDES with one key repeated (EDE collapses to E).
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # noqa: S305 (the protocol's)
    return encryptor.update(challenge) + encryptor.finalize()


async def _reason(reader: asyncio.StreamReader) -> str:
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    return (await reader.readexactly(min(length, MAX_REASON))).decode("utf-8", "replace")


async def _handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, password: str | None
) -> None:
    version = await reader.readexactly(12)
    if not version.startswith(b"RFB 003.") or version[11:] != b"\n":
        raise VncHandshakeError(f"the local VNC server is not RFB 3.x ({version[:12]!r})")
    if int(version[8:11]) < 8:
        raise VncHandshakeError(
            f"the local VNC server speaks {version.decode().strip()}; 3.8 needed"
        )
    writer.write(b"RFB 003.008\n")
    (count,) = await reader.readexactly(1)
    if count == 0:
        raise VncHandshakeError(f"the local VNC server refused: {await _reason(reader)}")
    offered = set(await reader.readexactly(count))
    if password is not None and SECURITY_VNC in offered:
        writer.write(bytes([SECURITY_VNC]))
        challenge = await reader.readexactly(16)
        writer.write(vnc_response(password, challenge))
    elif password is None and SECURITY_NONE in offered:
        writer.write(bytes([SECURITY_NONE]))
    else:
        raise VncHandshakeError(
            f"the local VNC server offers security types {sorted(offered)}, "
            f"none the agent can use ({'VNC password' if password else 'none'})"
        )
    await writer.drain()
    (result,) = struct.unpack(">I", await reader.readexactly(4))
    if result != 0:
        raise VncHandshakeError(
            f"the local VNC server refused the password: {await _reason(reader)}"
        )


async def open_authenticated(
    port: int, password: str | None, host: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the VNC server at ``host:port``, authenticated, before ClientInit."""
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    except OSError as exc:
        raise VncHandshakeError(f"cannot reach the local VNC server on port {port}: {exc}") from exc
    try:
        await asyncio.wait_for(_handshake(reader, writer, password), HANDSHAKE_SECONDS)
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
        writer.close()
        raise VncHandshakeError(f"the local VNC server broke off the handshake: {exc!r}") from exc
    except VncHandshakeError:
        writer.close()
        raise
    return reader, writer
