"""CPU cost of MetricsMiddleware per request, measured around a no-op ASGI app; prints JSON.

    PYTHONPATH=src .venv/bin/python bench/metrics_overhead.py [--requests 200000]

The inner app answers at once, so the difference between the wrapped and the bare call is the
middleware's own work (clock reads, one dict lookup, counter and histogram updates).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from skybook.platform.observability import MetricsMiddleware


class _Route:
    path = "/v1/holds/{order_id}"


async def _inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["route"] = _Route
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _run(app: Any, n: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(_: Any) -> None:
        return None

    start = time.process_time()
    for _ in range(n):
        scope = {"type": "http", "method": "GET", "path": "/v1/holds/x", "headers": []}
        await app(scope, receive, send)
    return time.process_time() - start


async def main(n: int) -> None:
    wrapped = MetricsMiddleware(_inner)
    await _run(wrapped, 1000)
    await _run(_inner, 1000)
    bare = min([await _run(_inner, n) for _ in range(3)])
    with_metrics = min([await _run(wrapped, n) for _ in range(3)])
    print(
        json.dumps(
            {
                "requests": n,
                "bare_us_per_request": round(bare / n * 1e6, 3),
                "with_metrics_us_per_request": round(with_metrics / n * 1e6, 3),
                "overhead_us_per_request": round((with_metrics - bare) / n * 1e6, 3),
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().requests))
