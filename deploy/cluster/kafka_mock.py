"""A Kafka-protocol broker for one machine: librdkafka's mock cluster, kept alive until SIGTERM.

Independent of Skybook (only confluent-kafka). librdkafka starts the mock cluster inside the
client that asks for one (``test.mock.num.brokers``) and listens on loopback ports it picks; the
client reports the address in its ``mock`` debug log ("Mock cluster enabled: original
bootstrap.servers and security.protocol ignored and replaced with HOST:PORT,..."), which is the
only place the Python binding exposes it. This script reads it from there, prints it on stdout
(and writes it to ``--address-file``), and keeps the holding client polling so the brokers stay up.

    python deploy/cluster/kafka_mock.py --brokers 1 --address-file var/cluster/kafka.address

Topics are created on first produce; the mock keeps everything in memory (no persistence).
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import confluent_kafka

_ADDRESS = re.compile(r"Mock cluster enabled.*replaced with (\S+)")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def start(brokers: int, timeout: float = 15.0) -> tuple[confluent_kafka.Producer, str]:
    """A client holding a mock cluster of ``brokers`` brokers, and the cluster's bootstrap address."""
    capture = _Capture()
    logger = logging.getLogger("kafka-mock.client")
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    holder = confluent_kafka.Producer({"test.mock.num.brokers": brokers, "logger": logger, "debug": "mock"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder.poll(0.1)
        for line in capture.lines:
            if m := _ADDRESS.search(line):
                # Stop collecting debug lines; the cluster lives as long as the holder.
                capture.lines.clear()
                logger.removeHandler(capture)
                return holder, m.group(1)
    raise RuntimeError(f"the mock cluster did not report its address within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", type=int, default=1, help="Brokers in the mock cluster.")
    parser.add_argument("--address-file", type=Path, help="Also write the bootstrap address here.")
    args = parser.parse_args()
    holder, address = start(args.brokers)
    if args.address_file:
        args.address_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.address_file.with_suffix(".tmp")
        tmp.write_text(address + "\n")
        tmp.replace(args.address_file)
    print(address, flush=True)

    stopping = False

    def stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        holder.poll(0.5)
    holder.flush(1)
    if args.address_file:
        args.address_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
