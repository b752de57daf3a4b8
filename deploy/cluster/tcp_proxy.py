"""A loopback TCP proxy that can be cut: the scorecard's way to make a broker unreachable.

Independent of Skybook (standard library only). The cluster's processes reach RabbitMQ through it
(deploy/cluster/cluster.sh starts it and points SKYBOOK_RABBITMQ_URL at it), so a fault script
can take the broker away from them without touching the broker itself, which is a shared service:

    python deploy/cluster/tcp_proxy.py --listen 127.0.0.1:5673 --target 127.0.0.1:5672 --port-file p

* SIGUSR1 cuts: every live connection is aborted (both sides get a reset) and the listening
  socket is closed, so new connections are refused, as with a broker host that went away.
* SIGUSR2 restores: it listens again on the same port and forwards as before.
* SIGTERM / SIGINT: stop (the port file is removed).

Each state change is one line on stdout (``cut``, ``restored``, with the connections dropped),
which the cluster log keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from pathlib import Path

_CHUNK = 65536


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise argparse.ArgumentTypeError(f"{value}: loopback addresses only")
    return host, int(port)


class Proxy:
    """Forwards every accepted connection to the target; ``cut`` and ``restore`` switch it off and on."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.host, self.port = listen
        self.target = target
        self._server: asyncio.Server | None = None
        self._live: set[asyncio.StreamWriter] = set()
        self.cut_count = 0

    async def open(self) -> int:
        """Listen (again); returns the port (the one picked by the system when asked for 0)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def cut(self) -> int:
        """Refuse new connections and drop the live ones; returns how many were dropped."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        dropped = len(self._live) // 2  # each forwarded connection is two sockets
        for writer in list(self._live):
            _abort(writer)
        self._live.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=1)
        self.cut_count += 1
        return dropped

    @property
    def is_open(self) -> bool:
        return self._server is not None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted in the instant of a cut
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), timeout=5)
        except (OSError, TimeoutError):
            _abort(writer)
            return
        if self._server is None:  # cut while connecting upstream
            _abort(writer)
            _abort(up_writer)
            return
        pair = (writer, up_writer)
        self._live.update(pair)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in pair:
                self._live.discard(w)
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    # A reset, not a polite FIN: the peer learns at once that the connection is gone.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


async def main_async(args: argparse.Namespace) -> int:
    proxy = Proxy(args.listen, args.target)
    port = await proxy.open()
    if args.port_file:
        args.port_file.write_text(f"{port}\n")
    print(f"listening on {proxy.host}:{port} -> {args.target[0]}:{args.target[1]}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    busy = asyncio.Lock()  # signals arrive in order; one state change at a time

    async def cut() -> None:
        async with busy:
            dropped = await proxy.cut()
            print(f"cut: refusing connections, dropped {dropped} live", flush=True)

    async def restore() -> None:
        async with busy:
            await proxy.open()
            print("restored", flush=True)

    loop.add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(cut()))
    loop.add_signal_handler(signal.SIGUSR2, lambda: asyncio.ensure_future(restore()))
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        await stop.wait()
        await proxy.cut()
    finally:
        if args.port_file:
            args.port_file.unlink(missing_ok=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=_hostport, required=True, help="127.0.0.1:PORT (0: any free port)")
    parser.add_argument("--target", type=_hostport, required=True, help="127.0.0.1:PORT to forward to")
    parser.add_argument("--port-file", type=Path, help="write the listening port here once it listens")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
