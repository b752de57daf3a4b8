"""Confirmation e-mails sent through an SMTP server (``SKYBOOK_SMTP_URL``)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from skybook.notifications.email import render_confirmation
from skybook.platform.events import Event
from skybook.platform.uow import UnitOfWork

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where and how to submit mail, parsed from ``smtp://{user}:{password}@host:port?starttls=true``."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    """Implicit TLS from the first byte (``smtps://``, port 465)."""
    start_tls: bool | None = None
    """STARTTLS: True requires it, False never tries, None uses it when the server offers it."""

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError("SKYBOOK_SMTP_URL must look like smtp://{user}:{password}@host:587?starttls=true")
        implicit = parts.scheme == "smtps"
        start_tls: bool | None = None
        raw = parse_qs(parts.query).get("starttls", [""])[-1].lower()
        if raw in _TRUE:
            start_tls = True
        elif raw in _FALSE:
            start_tls = False
        elif raw not in {"", "auto"}:
            raise ValueError("starttls must be true, false or auto")
        if implicit and start_tls:
            raise ValueError("smtps:// is TLS already; starttls applies to smtp:// only")
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit else 587),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=implicit,
            start_tls=False if implicit else start_tls,
        )


class SmtpSender:
    """Sends confirmation e-mails through SMTP; the same consumer as ``EmlWriter``, another transport.

    It shares ``EmlWriter``'s consumer name, so switching a deployment from files to SMTP does not
    send the mails of already handled events again. Delivery is at least once: the inbox entry
    commits after the server accepted the message, so a crash in between sends it again with the
    same Message-ID (derived from the event id), which receiving systems use to drop duplicates.
    """

    name = "notifications.confirmation_email"
    event_types = frozenset({"order.ticketed"})

    def __init__(self, server: SmtpServer, sender: str, *, timeout: float = 10.0) -> None:
        self.server = server
        self.sender = sender
        self.timeout = timeout

    async def __call__(self, event: Event, uow: UnitOfWork) -> None:
        msg = render_confirmation(event, sender=self.sender)
        s = self.server
        await aiosmtplib.send(
            msg,
            hostname=s.host,
            port=s.port,
            username=s.username,
            password=s.password,
            use_tls=s.use_tls,
            start_tls=s.start_tls,
            timeout=self.timeout,
        )
