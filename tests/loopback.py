"""Servers of the tests on 127.0.0.1: any asyncio handler on a free port, and a tenant's webhook receiver
that records what it gets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any

import orjson


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """A tiny HTTP/1.1 server on 127.0.0.1 answering with the queued statuses (200 once they run out)."""

    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    server_names: list[str | None] = field(default_factory=list)  # TLS SNI of each handshake

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/skybook"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            request_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
            body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout=5)
            self.received.append(Received(request_line.split(" ")[1], headers, body))
            self.arrived.set()
            status = self.statuses.pop(0) if self.statuses else 200
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def on_loopback(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]], ssl: SSLContext | None = None
) -> AsyncIterator[int]:
    """An asyncio server running ``handle`` per connection on a free 127.0.0.1 port (yielded) until
    the block ends: the test's side of a webhook endpoint, an SMTP server, ..."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl)
    async with server:
        yield server.sockets[0].getsockname()[1]


@contextlib.asynccontextmanager
async def listening() -> AsyncIterator[Receiver]:
    """A plain-HTTP receiver listening on a free loopback port until the block ends."""
    r = Receiver()
    async with on_loopback(r.handle) as r.port:
        yield r
