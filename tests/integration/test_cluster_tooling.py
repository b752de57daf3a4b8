"""The cluster's pieces outside Skybook: the nginx gateway config and the Kafka mock script."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from skybook.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "deploy/nginx/nginx.conf"


def test_the_gateway_refuses_the_same_bodies_as_the_api_and_passes_a_request_id() -> None:
    conf = NGINX_CONF.read_text()
    size = re.search(r"client_max_body_size (\d+);", conf)
    assert size is not None
    assert int(size.group(1)) == Settings.model_fields["max_body_bytes"].default
    assert "proxy_set_header X-Request-ID $skybook_request_id;" in conf
    assert re.search(r"location = /metrics \{\s*return 404;", conf), "metrics must not be public"
    assert re.search(r"keepalive \d+;", conf)


def test_the_gateway_config_is_accepted_by_nginx(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx); the static checks above still ran")
    for d in ("conf", "logs", "tmp"):
        (tmp_path / d).mkdir()
    shutil.copy(NGINX_CONF, tmp_path / "conf/nginx.conf")
    done = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", "conf/nginx.conf"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr


def test_the_kafka_mock_prints_an_address_that_accepts_messages(tmp_path: Path) -> None:
    import confluent_kafka

    address_file = tmp_path / "kafka.address"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "deploy/cluster/kafka_mock.py"), "--address-file", str(address_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert re.fullmatch(r"127\.0\.0\.1:\d+(,127\.0\.0\.1:\d+)*", address), address
        assert address_file.read_text().strip() == address
        producer = confluent_kafka.Producer({"bootstrap.servers": address, "message.timeout.ms": 10_000})
        delivered: list[str | None] = []
        producer.produce("skybook.test", b"ping", on_delivery=lambda err, _msg: delivered.append(err and str(err)))
        producer.flush(15)
        assert delivered == [None]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert proc.returncode == 0
    assert not address_file.exists()


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    """A loopback echo server on a free port, serving each connection in a thread, until closed."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_one(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    return listener, thread


def _echo(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_the_broker_proxy_forwards_cuts_and_restores(tmp_path: Path) -> None:
    """What the fault run relies on: through the proxy a client reaches the target; a cut drops its
    live connection and refuses new ones; a restore serves new connections on the same port."""
    listener, _ = _echo_server()
    target = listener.getsockname()[1]
    port_file = tmp_path / "proxy.port"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "deploy/cluster/tcp_proxy.py"),
            "--listen",
            "127.0.0.1:0",
            "--target",
            f"127.0.0.1:{target}",
            "--port-file",
            str(port_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("listening on 127.0.0.1:")
        port = int(port_file.read_text())
        payload = bytes(range(256)) * 1000  # larger than one read: the proxy streams
        assert _echo(port, payload) == payload

        live = socket.create_connection(("127.0.0.1", port), timeout=5)
        live.sendall(b"before")
        assert live.recv(16) == b"before"
        proc.send_signal(signal.SIGUSR1)
        assert proc.stdout.readline().strip() == "cut: refusing connections, dropped 1 live"
        try:
            dropped = live.recv(16) == b""
        except ConnectionResetError:
            dropped = True
        live.close()
        assert dropped, "the live connection survived the cut"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()

        proc.send_signal(signal.SIGUSR2)
        assert proc.stdout.readline().strip() == "restored"
        assert _echo(port, b"after") == b"after"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        listener.close()
    assert proc.returncode == 0
    assert not port_file.exists()
