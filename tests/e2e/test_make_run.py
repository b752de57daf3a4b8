"""What `make run` does, as separate processes: migrate, seed the demo, serve, book, get the e-mail."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from skybook.seed.demo import DEMO_PASSWORD

SKYBOOK = str(Path(sys.executable).with_name("skybook"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYBOOK_")}
    env.update({"SKYBOOK_DATA_DIR": str(tmp_path), "SKYBOOK_HOLD_SWEEP_INTERVAL_SECONDS": "0.5"})
    for cmd in (["db", "upgrade"], ["seed", "demo"]):
        done = subprocess.run([SKYBOOK, *cmd], env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    return env


def test_demo_seed_is_a_realistic_network_and_safe_to_rerun(demo_env: dict[str, str]) -> None:
    again = subprocess.run(
        [SKYBOOK, "seed", "demo"], env=demo_env, capture_output=True, text=True, timeout=120, check=False
    )
    assert again.returncode == 0
    assert '"flights_created": 0' in again.stdout  # idempotent import


def test_served_platform_books_and_writes_the_confirmation_email(demo_env: dict[str, str], tmp_path: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [SKYBOOK, "serve", "--port", str(port)], env=demo_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(100):  # bounded wait for start-up
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                pytest.fail("server did not become ready")
            assert client.get("/v1/airports").status_code == 401  # nothing without a principal
            login = client.post(
                "/v1/auth/token",
                data={"grant_type": "password", "username": "agent@skybook.example.com", "password": DEMO_PASSWORD},
            )
            assert login.status_code == 200, login.text
            client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
            airports = client.get("/v1/airports", params={"page_size": 100}).json()
            assert airports["page_info"]["total"] >= 20
            day = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
            last_day = (datetime.now(UTC) + timedelta(days=14)).date().isoformat()
            assert client.get("/v1/flights", params={"departure_date": last_day}).json()["page_info"]["total"] > 0
            offers = client.get(
                "/v1/offers", params={"origin": "CPH", "destination": "LHR", "departure_date": day, "adults": 1}
            ).json()["items"]
            assert offers, "the demo network flies CPH-LHR daily"
            seg = offers[0]["segments"][0]
            hold = client.post(
                "/v1/holds",
                json={
                    "segments": [{"flight_id": seg["flight_id"], "booking_class": seg["booking_class"]}],
                    "passengers": {"adults": 1},
                },
            ).json()
            order = client.post(
                "/v1/orders",
                json={
                    "hold_id": hold["id"],
                    "contact": {"email": "traveller@example.com"},
                    "passengers": [
                        {"type": "ADT", "given_name": "Ada", "family_name": "Lovelace", "date_of_birth": "1990-12-10"}
                    ],
                },
            ).json()
            paid = client.post(
                f"/v1/orders/{hold['id']}/payments",
                json={
                    "card": {
                        "number": "4242424242424242",
                        "exp_month": 12,
                        "exp_year": 2035,
                        "cvc": "123",
                        "holder": "Ada Lovelace",
                    }
                },
            ).json()
            assert paid["status"] == "ticketed"
            mail = tmp_path / "mail"
            for _ in range(100):  # the in-process dispatcher writes it after commit
                found = list(mail.glob(f"{order['record_locator']}-*.eml")) if mail.exists() else []
                if found:
                    break
                time.sleep(0.1)
            assert found, "confirmation e-mail was not written"
            assert paid["tickets"][0]["number"] in found[0].read_text()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
