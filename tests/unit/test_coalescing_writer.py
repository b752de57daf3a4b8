"""The relay's RabbitMQ writer sends a run of frames in one system call, in order, losing nothing.

aiormq lets one publish through per event-loop turn and writes each message on its own; the
writer holds the bytes until a turn passes without a new write (or enough bytes wait), so a
batch of messages costs one ``send`` instead of one per message.
"""

from __future__ import annotations

import asyncio
from typing import Any

from skybook.platform.messaging.rabbitmq import CoalescingWriter


class RecordingTransport(asyncio.Transport):
    """Keeps every ``write`` call (what the socket would have been sent)."""

    def __init__(self) -> None:
        super().__init__()
        self.sends: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.sends.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.sends.append(b"<eof>")


def _writer() -> tuple[CoalescingWriter, RecordingTransport]:
    loop = asyncio.get_running_loop()
    transport = RecordingTransport()
    reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    protocol.connection_made(transport)
    return CoalescingWriter(transport, protocol, reader, loop), transport


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_frames_written_in_consecutive_turns_go_out_in_one_send_in_order() -> None:
    writer, transport = _writer()
    for n in range(50):  # one frame per turn, as aiormq's channel lock lets them through
        writer.write(b"frame-%d;" % n)
        await _turns(1)
    assert transport.sends == []  # still coming: held
    await _turns(3)
    assert transport.sends == [b"".join(b"frame-%d;" % n for n in range(50))]


async def test_a_lone_frame_goes_out_after_one_quiet_turn() -> None:
    writer, transport = _writer()
    writer.write(b"heartbeat")
    await _turns(2)
    assert transport.sends == [b"heartbeat"]


async def test_a_large_run_is_sent_as_soon_as_enough_bytes_wait() -> None:
    writer, transport = _writer()
    chunk = b"x" * 1000
    count = CoalescingWriter.FLUSH_BYTES // len(chunk) + 1
    for _ in range(count):
        writer.write(chunk)
    assert transport.sends == [chunk * count]  # without waiting for a turn


async def test_drain_and_close_send_what_waits_first() -> None:
    writer, transport = _writer()
    writer.write(b"a")
    await writer.drain()
    assert transport.sends == [b"a"]
    writer.write(b"b")
    writer.write_eof()
    writer.write(b"c")
    writer.close()
    assert transport.sends == [b"a", b"b", b"<eof>", b"c"]
