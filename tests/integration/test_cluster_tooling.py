"""The cluster's pieces outside Skybook: the nginx gateway config and the Kafka mock script."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
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
