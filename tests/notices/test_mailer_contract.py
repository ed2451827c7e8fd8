"""The mail port's contract, run against each implementation: the SMTP mailer against a real
SMTP server on loopback (aiosmtpd, with a login), and the null mailer. A mail is taken whole
or ``MailError`` is raised; nothing else escapes."""

from __future__ import annotations

import email
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from broker.config import Settings
from broker.notices.mailer import Mail, Mailer, MailError, NullMailer, SmtpMailer, mailer_for

MAIL = Mail("owner@example.test", "Remote support on pc-1", "Technician: Tess\nReason: patching\n")


class Sink:
    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def _login(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"sb", b"s3cret")
    return AuthResult(success=ok)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Sink, int]]:
    sink, port = Sink(), _free_port()
    controller = Controller(
        sink, hostname="127.0.0.1", port=port, authenticator=_login, auth_require_tls=False
    )
    controller.start()
    yield sink, port
    controller.stop()


def _smtp_mailer(port: int, password: str = "s3cret") -> SmtpMailer:
    settings = Settings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_from="broker@example.test",
        smtp_username="sb",
        smtp_password=password,  # type: ignore[arg-type]
        # smtplib falls from a refused PLAIN to LOGIN, where it and aiosmtpd wait on each
        # other until the timeout: a short one keeps the refused-login case quick.
        smtp_timeout_seconds=1,
    )
    mailer = mailer_for(settings)
    assert isinstance(mailer, SmtpMailer)
    return mailer


@pytest.fixture(params=["smtp", "null"])
def mailer_and_inbox(request: pytest.FixtureRequest, smtp: tuple[Sink, int]) -> tuple[Mailer, Any]:
    sink, port = smtp
    if request.param == "null":
        null = NullMailer()
        return null, lambda: [(m.recipient, m.subject, m.body) for m in null.kept]

    def inbox() -> list[tuple[str, str, str]]:
        out = []
        for _, rcpt, content in sink.received:
            message = email.message_from_bytes(content)
            body = message.get_payload(decode=True).decode().replace("\r\n", "\n")
            out.append((rcpt[0], str(message["Subject"]), body))
        return out

    return _smtp_mailer(port), inbox


async def test_a_sent_mail_arrives_whole(mailer_and_inbox: tuple[Mailer, Any]) -> None:
    mailer, inbox = mailer_and_inbox
    await mailer.send(MAIL)
    assert inbox() == [(MAIL.recipient, MAIL.subject, MAIL.body)]


async def test_smtp_refusals_and_absence_are_mail_errors(smtp: tuple[Sink, int]) -> None:
    sink, port = smtp
    with pytest.raises(MailError, match=r"SMTP 127\.0\.0\.1"):
        await _smtp_mailer(port, password="wrong").send(MAIL)
    with pytest.raises(MailError, match=r"SMTP 127\.0\.0\.1"):
        await _smtp_mailer(_free_port()).send(MAIL)
    assert sink.received == []


def test_no_host_means_the_null_mailer() -> None:
    assert isinstance(mailer_for(Settings()), NullMailer)
    assert mailer_for(Settings()).transport == "null"


def _self_signed(tmp: Any) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key (the test's own CA: itself)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "smtp.pem", tmp / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


async def test_starttls_with_a_login(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that demands STARTTLS before anything else: the mailer upgrades, checks the
    server's certificate against the trusted ones (here the test's own, via SSL_CERT_FILE)
    and logs in over the encrypted channel."""
    import ssl

    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sink, port = Sink(), _free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=_login,
    )
    controller.start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", cert)
        mailer = _smtp_mailer(port)
        with pytest.raises(MailError):  # without STARTTLS the server refuses
            await mailer.send(MAIL)
        mailer.starttls = True
        await mailer.send(MAIL)
    finally:
        controller.stop()
    [(sender, rcpt, _)] = sink.received
    assert (sender, rcpt) == ("broker@example.test", [MAIL.recipient])
