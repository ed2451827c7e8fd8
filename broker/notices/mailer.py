"""The mail port: a :class:`Mailer` sends one plain-text message, or raises ``MailError``.

- :class:`SmtpMailer`: SMTP to ``smtp_host:smtp_port``, optionally STARTTLS and a login
  (``smtp_username``/``smtp_password``). The standard library's client runs in a worker
  thread, so the event loop never waits on the mail server.
- :class:`NullMailer`: no SMTP host configured. It keeps what it was given in memory and
  logs ``mail.not_sent``: the notice is then recorded as handed to no transport
  (``owner.notified`` says ``transport: "null"``), so an auditor can see no mail left.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol

import structlog

from broker.config import Settings
from broker.errors import BrokerError

log = structlog.get_logger("broker.notices")


class MailError(BrokerError):
    """The mail server refused or could not be reached (the notice is tried again)."""

    code = "mail_error"


@dataclass(frozen=True)
class Mail:
    recipient: str
    subject: str
    body: str


class Mailer(Protocol):
    transport: str

    async def send(self, mail: Mail) -> None:
        """Hand ``mail`` to the transport; raise :class:`MailError` when it was not taken."""
        ...


@dataclass
class NullMailer:
    transport: str = "null"
    kept: list[Mail] = field(default_factory=list)

    async def send(self, mail: Mail) -> None:
        self.kept.append(mail)
        log.warning("mail.not_sent", reason="no SMTP host configured", subject=mail.subject)


@dataclass
class SmtpMailer:
    host: str
    port: int
    sender: str
    starttls: bool = False
    username: str = ""
    password: str = ""
    timeout: float = 10.0
    transport: str = "smtp"

    async def send(self, mail: Mail) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = mail.recipient
        message["Subject"] = mail.subject
        message.set_content(mail.body)
        try:
            await asyncio.to_thread(self._send, message)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"SMTP {self.host}:{self.port}: {exc}") from exc

    def _send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password)
            smtp.send_message(message)


def mailer_for(settings: Settings) -> Mailer:
    """The SMTP mailer when a host is configured, else the null one."""
    if not settings.smtp_host:
        return NullMailer()
    return SmtpMailer(
        host=settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.smtp_from,
        starttls=settings.smtp_starttls,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value(),
        timeout=settings.smtp_timeout_seconds,
    )
