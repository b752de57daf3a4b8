"""Confirmation e-mails: rendered from the ``order.ticketed`` event and written as .eml files."""

from __future__ import annotations

import asyncio
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from skybook.platform.events import Event
from skybook.platform.uow import UnitOfWork

_env = Environment(
    loader=PackageLoader("skybook.notifications", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
)


def _money(total: dict[str, Any]) -> str:
    return f"{total['currency']} {total['amount'] // 100}.{total['amount'] % 100:02d}"


def render_confirmation(event: Event, *, sender: str) -> EmailMessage:
    """The e-ticket confirmation for a ticketed order."""
    data = event.data
    context = {
        "record_locator": data["record_locator"],
        "passengers": data["passengers"],
        "segments": [
            {
                **s,
                "departure": datetime.fromisoformat(s["departure_at"]).strftime("%d %b %Y %H:%M UTC"),
            }
            for s in data["segments"]
        ],
        "total": _money(data["total"]),
    }
    msg = EmailMessage()
    msg["Subject"] = f"Your e-tickets - booking {data['record_locator']}"
    msg["From"] = sender
    msg["To"] = data["contact_email"]
    msg["Date"] = format_datetime(event.occurred_at)
    msg["Message-ID"] = make_msgid(idstring=str(event.id), domain="skybook.invalid")
    msg.set_content(_env.get_template("confirmation.txt").render(context))
    msg.add_alternative(_env.get_template("confirmation.html").render(context), subtype="html")
    return msg


class EmlWriter:
    """Writes confirmation e-mails as .eml files (the embedded default's outbox for mail)."""

    name = "notifications.confirmation_email"
    event_types = frozenset({"order.ticketed"})

    def __init__(self, mail_dir: Path, sender: str) -> None:
        self.mail_dir = mail_dir
        self.sender = sender

    async def __call__(self, event: Event, uow: UnitOfWork) -> None:
        msg = render_confirmation(event, sender=self.sender)
        # The file name is fixed by the event, so a redelivery rewrites the same file.
        path = self.mail_dir / f"{event.data['record_locator']}-{event.id}.eml"
        await asyncio.to_thread(_write, path, bytes(msg))


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(content)
    tmp.replace(path)
