"""FastAPI dependencies shared by every context's routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection

if TYPE_CHECKING:
    from skybook.bootstrap import Container


async def get_container(request: Request) -> Container:
    """The process's composition root, stored on the app at start-up.

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, which cost
    every request a thread hand-off.
    """
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated["Container", Depends(get_container)]


async def read_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """A connection for queries; no write lock, no outbox."""
    async with request.app.state.container.engine.connect() as conn:
        yield conn


ReadConn = Annotated[AsyncConnection, Depends(read_connection)]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. Access control arrives with the identity context; today everyone is anonymous."""

    id: str
    tenant_id: str | None = None


ANONYMOUS = Principal(id="anonymous")


async def current_principal() -> Principal:
    """Resolve the caller. The single place where authentication will plug in."""
    return ANONYMOUS
