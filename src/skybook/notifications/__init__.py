"""Notifications: confirmation e-mails (and, later, tenant webhooks)."""

from skybook.notifications.email import EmlWriter, render_confirmation

__all__ = ["EmlWriter", "render_confirmation"]
