"""Confirmation e-mails go through SMTP when ``SKYBOOK_SMTP_URL`` is set (.eml files otherwise).

The SMTP server is a minimal receiver started by the test on 127.0.0.1: enough of RFC 5321
(EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT) to accept what a real server would.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage

import pytest

from skybook.bootstrap import Container, bootstrap
from skybook.notifications import EmlWriter, SmtpSender, SmtpServer
from skybook.payments import SandboxPaymentProvider
from skybook.platform.clock import FakeClock
from tests.conftest import CARD_OK, Network, adult
from tests.loopback import on_loopback

USER, PASSWORD = "skybook", "smtp-test-password"  # pragma: allowlist secret


@dataclass
class Receiver:
    """Messages and credentials a test SMTP server received."""

    port: int = 0
    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(*lines: str) -> None:
            for i, text in enumerate(lines):
                sep = " " if i == len(lines) - 1 else "-"
                writer.write(f"{text[:3]}{sep}{text[4:]}\r\n".encode())

        sender, recipients = "", []
        say("220 test ESMTP")
        while line := await asyncio.wait_for(reader.readline(), timeout=10):
            command = line.decode().rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                say("250 test", "250 AUTH PLAIN", "250 8BITMIME")
            elif verb == "AUTH":
                _, mechanism, *initial = command.split(" ")
                assert mechanism.upper() == "PLAIN"
                _, user, password = base64.b64decode(initial[0]).decode().split("\0")
                self.logins.append((user, password))
                say("235 ok" if (user, password) == (USER, PASSWORD) else "535 bad credentials")
            elif verb == "MAIL":
                sender, recipients = command.split(":", 1)[1].strip().split(" ")[0].strip("<>"), []
                say("250 ok")
            elif verb == "RCPT":
                recipients.append(command.split(":", 1)[1].strip().strip("<>"))
                say("250 ok")
            elif verb == "DATA":
                say("354 go ahead")
                lines = []
                while (chunk := await asyncio.wait_for(reader.readline(), timeout=10)) != b".\r\n":
                    lines.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                msg = email.message_from_bytes(b"".join(lines), policy=email.policy.default)
                assert isinstance(msg, EmailMessage)
                self.messages.append((sender, recipients, msg))
                say("250 queued")
            elif verb == "QUIT":
                say("221 bye")
                break
            else:  # RSET, NOOP
                say("250 ok")
            await writer.drain()
        await writer.drain()
        writer.close()


@pytest.fixture
async def smtp() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    async with on_loopback(receiver.session) as receiver.port:
        yield receiver


def test_the_smtp_url_is_parsed_with_its_tls_choice() -> None:
    plain = SmtpServer.from_url("smtp://mail.example.com")
    assert (plain.host, plain.port, plain.username, plain.use_tls, plain.start_tls) == (
        "mail.example.com",
        587,
        None,
        False,
        None,
    )
    user, secret = "ops%40example.com", "p%2Fss"  # pragma: allowlist secret
    required = SmtpServer.from_url(f"smtp://{user}:{secret}@mail.example.com:2525?starttls=true")
    assert (required.username, required.password, required.port, required.start_tls) == (
        "ops@example.com",
        "p/ss",
        2525,
        True,
    )
    implicit = SmtpServer.from_url("smtps://mail.example.com")
    assert (implicit.port, implicit.use_tls, implicit.start_tls) == (465, True, False)
    for bad in ("http://mail.example.com", "smtp://", "smtp://h?starttls=maybe", "smtps://h?starttls=true"):
        with pytest.raises(ValueError, match=r"SKYBOOK_SMTP_URL|starttls"):
            SmtpServer.from_url(bad)


async def test_bootstrap_sends_mail_by_smtp_only_when_a_server_is_configured(container: Container) -> None:
    def mailer(c: Container) -> object:
        return next(x.handle for x in c.consumers() if x.name == "notifications.confirmation_email")

    assert isinstance(mailer(container), EmlWriter)
    configured = container.settings.model_copy(update={"smtp_url": "smtp://127.0.0.1:2525"})
    other = bootstrap(configured)
    try:
        assert isinstance(mailer(other), SmtpSender)
    finally:
        await other.engine.dispose()


async def test_the_confirmation_is_sent_through_smtp_by_the_worker(
    network: Network, container: Container, smtp: Receiver, clock: FakeClock, payments: SandboxPaymentProvider
) -> None:
    flight = await network.flight()
    hold = (await network.hold(flight["id"])).json()
    r = await network.client.post(
        "/v1/orders",
        json={"hold_id": hold["id"], "passengers": [adult()], "contact": {"email": "anna@example.com"}},
    )
    locator = r.json()["record_locator"]
    # The API process does not deliver; a worker configured for SMTP does.
    container.settings.run_workers = False
    container.settings.ticketing_wait_seconds = 0
    assert (await network.client.post(f"/v1/orders/{hold['id']}/payments", json={"card": CARD_OK})).status_code == 202
    url = f"smtp://{USER}:{PASSWORD}@127.0.0.1:{smtp.port}?starttls=false"
    worker = bootstrap(container.settings.model_copy(update={"smtp_url": url}), clock=clock, payments=payments)
    try:
        await worker.dispatcher.drain()  # ticketing; its order.ticketed joins the same round
        await worker.dispatcher.drain()
    finally:
        await worker.engine.dispose()

    assert smtp.logins == [(USER, PASSWORD)]
    assert len(smtp.messages) == 1
    sender, recipients, msg = smtp.messages[0]
    assert recipients == ["anna@example.com"] and "tickets@skybook.invalid" in sender
    assert msg["Subject"] == f"Your e-tickets - booking {locator}"
    order = (await network.client.get(f"/v1/orders/{hold['id']}")).json()
    text = msg.get_body(("plain",))
    assert text is not None and order["tickets"][0]["number"] in text.get_content()
    assert not list(container.settings.mail_dir.glob("*.eml"))  # SMTP replaced the files
