"""A lean HTTP/1.1 client for the load generator: keep-alive connections to one loopback server.

The benchmark's load generator shares the 2-core machine with the server and PostgreSQL, so every
microsecond it spends per request is taken from the system under test. aiohttp cost about 0.4 ms
of CPU per request at 500 requests/s (a fifth of a core); this client writes pre-built request
bytes and reads the status line, the Content-Length and the body, nothing else (about a tenth of
that). It speaks only what the benchmark needs: requests with a body or none, responses with a
Content-Length (uvicorn sends one for every JSON answer), one request in flight per connection.
"""

from __future__ import annotations

import asyncio
from collections import deque


class HttpError(Exception):
    """A connection-level failure: refused, closed mid-answer, malformed answer or timed out."""


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class RawHttpPool:
    """At most ``max_connections`` keep-alive connections to ``host:port`` (loopback only)."""

    def __init__(self, host: str, port: int, *, max_connections: int, timeout_s: float) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the benchmark client only talks to a loopback address")
        self.host, self.port = host, port
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self._idle: deque[_Conn] = deque()
        self._open = 0
        self._waiters: deque[asyncio.Future[_Conn | None]] = deque()
        self._prefix = f"Host: {host}:{port}\r\n".encode()

    async def _acquire(self) -> _Conn | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            # The server closed it while idle (uvicorn's keep-alive timeout is 5 s): never reuse it.
            conn.close()
            self._open -= 1
        if self._open < self.max_connections:
            self._open += 1
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                self._release(None)
                raise HttpError(f"{type(exc).__name__}: {exc}") from exc
            return _Conn(reader, writer)
        waiter: asyncio.Future[_Conn | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter  # a connection handed over, or None: open a new one (one was closed)

    def _release(self, conn: _Conn | None) -> None:
        if conn is None:
            self._open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                if conn is None:
                    self._open += 1  # the waiter opens its own in place of the closed one
                return
        if conn is not None:
            self._idle.append(conn)

    async def request(self, method: str, path: str, headers: bytes, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request (``headers``: pre-encoded ``Name: value\\r\\n`` lines); status and body."""
        conn = await self._acquire()
        if conn is None:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                self._release(None)
                raise HttpError(f"{type(exc).__name__}: {exc}") from exc
            conn = _Conn(reader, writer)
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._prefix + headers
        if body or method != "GET":
            head += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        try:
            async with asyncio.timeout(self.timeout_s):
                conn.writer.write(head + b"\r\n" + body)
                raw_head = await conn.reader.readuntil(b"\r\n\r\n")
                status, length, keep = _parse_head(raw_head)
                answer = await conn.reader.readexactly(length) if length else b""
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            conn.close()
            self._release(None)
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        if keep:
            self._release(conn)
        else:
            conn.close()
            self._release(None)
        return status, answer

    async def close(self) -> None:
        """Close every idle connection (the ones in use close when their request ends)."""
        while self._idle:
            conn = self._idle.pop()
            conn.close()
            self._open -= 1


def _parse_head(raw: bytes) -> tuple[int, int, bool]:
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(parts[1])
    length = 0
    keep = parts[0] == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection":
            keep = value.strip().lower() == b"keep-alive"
        elif name == b"transfer-encoding":
            raise ValueError("chunked answers are not supported by the benchmark client")
    return status, length, keep
