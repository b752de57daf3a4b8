"""The scorecard's fault run: crashes and a broker outage at set times, while the load runs.

    python bench/scorecard/faults.py --duration 180   # prints the schedule it would follow

Every action goes through ``deploy/cluster/cluster.sh`` (which signals only the PIDs it started):

* ``kill`` one API process, one worker and the relay with SIGKILL (a crash: no drain, no goodbye),
  then after ``restart_delay`` seconds (a supervisor's restart delay) ``revive`` it with the same
  settings, and note when it is ready again (``/ready`` for the API, its metrics port answering
  for the relay and the worker);
* ``amqp-cut`` the loopback proxy every cluster process reaches RabbitMQ through (live connections
  dropped, new ones refused) and ``amqp-restore`` it ``cut_seconds`` later.

The faults are spread evenly: the i-th of four starts at i/5 of the run, so each has a fifth of
the run to recover before the next one and the last one before the load ends. Whatever happens,
``stop()`` leaves the cluster whole: a killed process is revived and a cut proxy restored.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = ROOT / "deploy/cluster/cluster.sh"


@dataclass
class Fault:
    """One fault: what, when (seconds after the load started), and what was seen."""

    action: str  # "kill" or "amqp-cut"
    target: str  # cluster process name, or "rabbitmq"
    offset: float
    ready_url: str | None = None
    injected_at: float | None = None  # epoch seconds
    back_at: float | None = None  # restarted / restored
    ready_at: float | None = None  # the restarted process answers again
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.action} {self.target}"


def schedule(duration: float, api_port: int, metrics_port_base: int) -> list[Fault]:
    """The four faults of the issue, at 1/5, 2/5, 3/5 and 4/5 of the run."""
    step = duration / 5
    return [
        Fault("kill", f"api-{api_port}", step, f"http://127.0.0.1:{api_port}/ready"),
        Fault("kill", "worker-1", 2 * step, f"http://127.0.0.1:{metrics_port_base + 1}/metrics"),
        Fault("kill", "relay", 3 * step, f"http://127.0.0.1:{metrics_port_base}/metrics"),
        Fault("amqp-cut", "rabbitmq", 4 * step),
    ]


class FaultDriver(threading.Thread):
    """Runs a schedule from ``start()``; ``stop()`` ends it early and repairs what it broke."""

    def __init__(
        self,
        faults: list[Fault],
        *,
        env: dict[str, str],
        restart_delay: float = 2.0,
        cut_seconds: float = 10.0,
        log_path: Path | None = None,
    ) -> None:
        super().__init__(name="faults", daemon=True)
        self.faults = faults
        self.env = env
        self.restart_delay = restart_delay
        self.cut_seconds = cut_seconds
        self.log_path = log_path
        self._stop_event = threading.Event()
        self._broken: Fault | None = None
        self._watchers: list[threading.Thread] = []
        self.load_started_at = 0.0

    def _cluster(self, *args: str) -> None:
        out = subprocess.run(
            [str(CLUSTER_SH), *args], env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        if self.log_path is not None:
            with self.log_path.open("a") as f:
                f.write(out.stdout + out.stderr)
        if out.returncode != 0:
            raise RuntimeError(f"cluster.sh {' '.join(args)} failed: {out.stderr.strip()}")

    def run(self) -> None:
        self.load_started_at = time.time()
        for fault in self.faults:
            if self._wait_until(self.load_started_at + fault.offset):
                return
            try:
                self._inject(fault)
            except Exception as exc:  # noted in the report; the next fault still runs
                fault.notes.append(f"error: {exc}")

    def _inject(self, fault: Fault) -> None:
        if fault.action == "kill":
            fault.injected_at = time.time()
            self._broken = fault
            self._cluster("kill", fault.target)
            self._stop_event.wait(self.restart_delay)  # a stop still revives it, below
            self._repair(fault)
            if fault.ready_url:
                # Watched on the side, so a slow start does not shift the next fault.
                watcher = threading.Thread(target=self._watch, args=(fault,), daemon=True)
                watcher.start()
                self._watchers.append(watcher)
        elif fault.action == "amqp-cut":
            fault.injected_at = time.time()
            self._broken = fault
            self._cluster("amqp-cut")
            self._stop_event.wait(self.cut_seconds)
            self._repair(fault)  # no process to wait for: the clients reconnect on their own
        else:
            raise ValueError(fault.action)

    def _watch(self, fault: Fault) -> None:
        assert fault.ready_url is not None
        fault.ready_at = _wait_ready(fault.ready_url, 120)

    def _repair(self, fault: Fault) -> None:
        # The restart (or restore) is the moment it is asked for, as a supervisor would do it.
        fault.back_at = time.time()
        if fault.action == "kill":
            self._cluster("revive", fault.target)
        else:
            self._cluster("amqp-restore")
        self._broken = None

    def _wait_until(self, at: float) -> bool:
        """Sleep until ``at``; True when stopped first."""
        return self._stop_event.wait(max(0.0, at - time.time()))

    def stop(self) -> None:
        """End the schedule (readiness watchers get up to 60 s more), and repair what is still broken."""
        self._stop_event.set()
        self.join(timeout=120)
        broken = self._broken
        if broken is not None and broken.back_at is None:  # stopped between the fault and its repair
            self._repair(broken)
            broken.notes.append("repaired early: the run stopped")
        for watcher in self._watchers:
            watcher.join(timeout=60)

    def timeline(self) -> list[dict[str, Any]]:
        return [
            {**{k: v for k, v in asdict(f).items() if k != "ready_url"}, "fault": f.label}
            for f in self.faults
            if f.injected_at is not None
        ]


def _wait_ready(url: str, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.time()
        except OSError:
            pass
        time.sleep(0.1)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=180)
    parser.add_argument("--api-port", type=int, default=int(os.environ.get("API_PORTS", "8001").split()[0]))
    parser.add_argument("--metrics-port-base", type=int, default=int(os.environ.get("METRICS_PORT_BASE", "9100")))
    args = parser.parse_args()
    faults = schedule(args.duration, args.api_port, args.metrics_port_base)
    print(json.dumps([{"fault": f.label, "at_seconds": round(f.offset, 1)} for f in faults], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
