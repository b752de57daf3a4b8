"""Structured logs: one JSON object (or one readable line) per record, with the correlation id.

Every record, from Skybook's own ``logging.getLogger`` calls, from libraries (uvicorn,
SQLAlchemy) and from ``structlog.get_logger``, goes through the same processors. A record
written while an HTTP request is served carries ``request_id`` and ``correlation_id`` (the
``X-Request-ID``, which :class:`~skybook.platform.uow.UnitOfWork` also stamps on every event the
request raises); a record written while a consumer handles an event carries that event's
``correlation_id``, ``event_id``, ``event_type`` and ``consumer`` (see :func:`handling_event`), so
``grep <request id>`` follows a booking from the HTTP call through the outbox to the worker.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, MutableMapping
from typing import IO, Any, Literal

import structlog

from skybook.platform.context import correlation_id
from skybook.platform.events import Event

LogFormat = Literal["json", "console"]


def _add_correlation(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    cid = correlation_id.get()
    if cid is not None:
        event_dict.setdefault("correlation_id", cid)
        if "event_id" not in event_dict:
            # Outside a consumer the correlation id is the id of the request being served.
            event_dict.setdefault("request_id", cid)
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        _add_correlation,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(fmt: LogFormat = "console", level: str = "INFO", *, stream: IO[str] | None = None) -> None:
    """Route every log record of the process through structlog, rendered as JSON or for a console.

    Replaces the root logger's handlers (call it once, at process start-up: the CLI commands and
    the app factory when it bootstraps from the environment do).
    """
    shared = _shared_processors()
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's loggers write through the root handler instead of their own plain-text ones. Its
    # access log is left as uvicorn set it (off in `skybook serve`: the gateway logs requests).
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


@contextlib.contextmanager
def handling_event(event: Event, consumer: str) -> Iterator[None]:
    """Log context of a consumer handling ``event``: its ids on every record, and the event's
    correlation id as the current one, so events the consumer raises in turn keep the chain."""
    token = correlation_id.set(event.correlation_id)
    with structlog.contextvars.bound_contextvars(event_id=str(event.id), event_type=event.type, consumer=consumer):
        try:
            yield
        finally:
            correlation_id.reset(token)
