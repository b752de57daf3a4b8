"""Tenant webhooks: signed, retried, logged and replayable deliveries of a tenant's events."""

from skybook.notifications.webhooks.handlers import WebhookFanout
from skybook.notifications.webhooks.sender import run_webhook_sender, send_due
from skybook.notifications.webhooks.signing import SignatureError, verify_signature

__all__ = ["SignatureError", "WebhookFanout", "run_webhook_sender", "send_due", "verify_signature"]
