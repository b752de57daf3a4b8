"""`make cluster` (deploy/cluster/cluster.sh): the platform scaled out on one machine, on loopback,
started and stopped on ports, a database, a Redis database and a broker prefix of this test alone."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.backbone.conftest import ROOT
from tests.conftest import IN_CI, PG_ADMIN_URL, free_port

pytestmark = pytest.mark.postgres

SCRIPT = ROOT / "deploy/cluster/cluster.sh"


def _free_run(length: int) -> int:
    """The first of ``length`` consecutive free loopback ports (the metrics ports: relay, workers)."""
    for _ in range(50):
        first = free_port()
        try:
            for port in range(first, first + length):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    pytest.fail(f"no {length} consecutive free ports")


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_a_started_cluster_answers_through_its_gateway_and_its_workers_use_the_mock_as_it_needs(
    prefix: str, tmp_path: Path
) -> None:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        msg = "nginx is not installed (make test installs it where apt-get can)"
        if IN_CI:
            pytest.fail(f"{msg}; CI=true, so this test must not skip")
        pytest.skip(msg)
    cluster_dir, database = tmp_path / "cluster", f"skybook_cluster_{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYBOOK_")}
    env.update(
        PYTHON=sys.executable,
        PATH=f"/usr/sbin:{env.get('PATH', '')}",
        CLUSTER_DIR=str(cluster_dir),
        CLUSTER_DB=database,
        PG_ADMIN_URL=PG_ADMIN_URL,
        REDIS_URL="redis://127.0.0.1:6379/15",
        SKYBOOK_BROKER_PREFIX=prefix,
        GATEWAY_PORT=str(free_port()),
        API_PORTS=f"{free_port()} {free_port()}",
        METRICS_PORT_BASE=str(_free_run(3)),
        AMQP_PROXY_PORT=str(free_port()),
        SEED_DAYS="2",
    )

    def cluster(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=180, check=False
        )

    pids: dict[str, int] = {}
    try:
        started = cluster("start")
        assert started.returncode == 0, started.stderr
        pids = {p.stem: int(p.read_text()) for p in cluster_dir.glob("*.pid")}
        assert {"relay", "worker-1", "worker-2", "nginx", "kafka", "amqp-proxy"} <= set(pids)
        gateway = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
        assert httpx.get(f"{gateway}/ready", timeout=10).status_code == 200
        assert httpx.get(f"{gateway}/metrics", timeout=10).status_code == 404  # not public

        # Every backbone process reads the mock this start launched, and the workers fetch without
        # the mock's hold of fetch.wait.max.ms (100 ms by default; the first start after a stop
        # used to miss this setting, so each stream hop took up to 100 ms more).
        address = (cluster_dir / "kafka.address").read_text().strip()
        for name in ("relay", "worker-1", "worker-2"):
            settings = _environ(pids[name])
            assert settings["SKYBOOK_KAFKA_BOOTSTRAP_SERVERS"] == address, name
            assert settings["SKYBOOK_KAFKA_FETCH_WAIT_MAX_MS"] == "5", name
    finally:
        stopped = cluster("stop")
        subprocess.run(
            ["psql", PG_ADMIN_URL, "-qc", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'],
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert stopped.returncode == 0, stopped.stderr
    assert not list(cluster_dir.glob("*.pid")), "stop ends every process it started"
    assert [name for name, pid in pids.items() if Path(f"/proc/{pid}").exists()] == []
