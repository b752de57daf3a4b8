"""RFC 9457 problem details, and small ASGI helpers shared by the middlewares."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import Message, Receive, Send

PROBLEM_JSON = "application/problem+json"


def problem(*, status: int, code: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    """A problem document; ``code`` is the stable machine-readable error code."""
    return {
        "type": f"https://skybook.dev/problems/{code.replace('_', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }


def problem_bytes(*, status: int, code: str, title: str, detail: str, **extra: Any) -> bytes:
    """A problem document serialized to JSON."""
    return orjson.dumps(problem(status=status, code=code, title=title, detail=detail, **extra))


async def send_problem(
    send: Send,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer with a problem document directly at the ASGI level."""
    body = problem_bytes(status=status, code=code, title=title, detail=detail)
    out = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": out + (headers or [])})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    chunks = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(chunks)
        chunks += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields an already-read body, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
