"""Shared pieces of the SIEM tests: a real rsyslog with imrelp, a local TLS certificate
authority, waiting for the exporter, writing events through the broker's audit path."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.db.aftercommit import transaction
from broker.evidence.events import EventType
from broker.evidence.service import SYSTEM_ACTOR, record_event


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rsyslog:
    """``rsyslogd -n`` receiving RELP on ``port`` and writing each message's structured data
    and text, one line each, to ``out``."""

    def __init__(self, workdir: Path, port: int, tls: dict[str, Path] | None = None) -> None:
        self.workdir = workdir
        self.port = port
        self.out = workdir / "received.log"
        self.conf = workdir / "rsyslog.conf"
        # TLS as librelp does it: the server's certificate, and the client's checked
        # against the same CA ("certvalid").
        tls_options = (
            f' tls="on" tls.cacert="{tls["ca"]}" tls.mycert="{tls["server_cert"]}"'
            f' tls.myprivkey="{tls["server_key"]}" tls.authmode="certvalid"'
            if tls
            else ""
        )
        self.conf.write_text(
            f'global(workDirectory="{workdir}")\n'
            # One worker: messages reach the file in the order they arrived.
            'main_queue(queue.workerThreads="1")\n'
            'module(load="imrelp")\n'
            'template(name="line" type="string" string="%structured-data% %msg%\\n")\n'
            f'input(type="imrelp" port="{port}" address="127.0.0.1"{tls_options})\n'
            f'action(type="omfile" file="{self.out}" template="line")\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["/usr/sbin/rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.workdir / "pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("rsyslogd exited at start-up") from None
                time.sleep(0.05)
        raise RuntimeError("rsyslogd did not listen")

    def stop(self) -> None:
        """SIGTERM: rsyslog flushes its queue to the file before it exits."""
        if self.proc is None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.proc = None


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    """Wait for ``check`` to hold (no timing is asserted: the deadline only ends a hang)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def write_events(
    maker: async_sessionmaker[AsyncSession], count: int, *, per_transaction: int = 1000
) -> None:
    """``count`` ticket updates through the broker's audit path, in a few transactions."""
    done = 0
    while done < count:
        async with transaction(maker) as db:
            for i in range(done, min(count, done + per_transaction)):
                await record_event(
                    db,
                    EventType.ticket_updated,
                    ticket=f"local:T-{i % 7}",
                    actor=SYSTEM_ACTOR,
                    data={"i": i},
                )
        done = min(count, done + per_transaction)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(
    ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name, common_name: str
) -> tuple[bytes, bytes]:
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make_certificates(where: Path) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate it
    signed, as PEM files: ``ca``, ``server_cert``, ``server_key``, ``client_cert``,
    ``client_key``."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SIEM test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = {"ca": ca.public_bytes(serialization.Encoding.PEM)}
    files["server_cert"], files["server_key"] = _issue(ca_key, ca_name, "127.0.0.1")
    files["client_cert"], files["client_key"] = _issue(ca_key, ca_name, "supportbroker")
    out = {}
    for name, data in files.items():
        out[name] = where / f"{name}.pem"
        out[name].write_bytes(data)
    return out


class TlsServer(ThreadingHTTPServer):
    """A threading server speaking TLS with the local CA's server certificate, each handshake
    in its connection's own thread. Wrapping the listening socket instead does the handshake
    inside ``accept``: one client that connects and never finishes it (an exporter cancelled
    mid-connect) stalls the accept loop, and ``shutdown()`` waits on that loop forever."""

    daemon_threads = True
    HANDSHAKE_SECONDS = 10.0

    def __init__(self, handler: Any, pem: dict[str, Path]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.load_cert_chain(pem["server_cert"], pem["server_key"])

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        wrapped = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(self.HANDSHAKE_SECONDS)
        try:
            request.do_handshake()
        except OSError:  # a client that does not trust our CA, or one that left
            return
        request.settimeout(None)
        super().finish_request(request, client_address)
