"""Notifications: confirmation e-mails (and, later, tenant webhooks)."""

from skybook.notifications.email import EmlWriter, render_confirmation
from skybook.notifications.smtp import SmtpSender, SmtpServer

__all__ = ["EmlWriter", "SmtpSender", "SmtpServer", "render_confirmation"]
