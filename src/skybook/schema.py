"""Every table of every context on one MetaData, for migrations and test set-up."""

from skybook.booking import tables as _booking  # noqa: F401
from skybook.identity import tables as _identity  # noqa: F401
from skybook.inventory import tables as _inventory  # noqa: F401
from skybook.notifications.webhooks import tables as _webhooks  # noqa: F401
from skybook.payments import tables as _payments  # noqa: F401
from skybook.platform import idempotency as _idempotency  # noqa: F401
from skybook.platform import outbox as _outbox  # noqa: F401
from skybook.platform.db import metadata

__all__ = ["metadata"]
