"""Scorecard load: the traffic of travel agencies on Skybook's public API (Locust).

    locust -f bench/scorecard/locustfile.py --headless -H http://127.0.0.1:8080 -u 40 -r 10 -t 60s

The mix (task weights below) is what an airline API sees from agencies: mostly searches, on a
skewed (Zipf) choice of route and departure date, then holds (some abandoned and released),
bookings with payment, seat selection, cancellations and "manage my booking" look-ups.

Several tenants call it, each with API keys on the ``enterprise`` plan. At test start the
file provisions them over the API as the demo platform admin (``make cluster`` seeds the demo
accounts in development), unless ``SCORECARD_KEYS`` names a JSON file of keys from an earlier
run: ``{"keys": ["sbk_...", ...]}``.

Answers the API is meant to give (``sold_out``, a declined card, a class that closed between
search and hold, an order already cancelled, a rate limit) are *not* failures: they count as
success for Locust and are tallied by code in ``expected_4xx``. Every other 4xx, every 5xx and
every transport error is a failure. At the end the tallies are written as JSON to
``SCORECARD_RESULT`` (default ``var/scorecard/locust-extra.json``).

Retries, as a careful client makes them: every POST carries an ``Idempotency-Key``, so a request
that met a transport error, a 502 or a 504 (the gateway lost the upstream mid-request) is sent
again with the same key, and so is a GET; a 409 ``idempotency_in_progress`` (the first attempt's
reservation is still held, e.g. by a process that was killed) is retried after its Retry-After.
Each attempt is a Locust request; the tallies keep failures per attempt (``attempt_errors``:
before retries) and per operation (``unexpected``: what the client finally saw). A timeline of
attempts (per ``TIMELINE_STEP`` seconds) and the time of every failed attempt let the scorecard
compare error rates inside and outside fault windows. ``SCORECARD_RETRIES=0`` turns retries off.

Environment: ``SCORECARD_TENANTS`` (4), ``SCORECARD_KEYS_PER_TENANT`` (3), ``SCORECARD_DAYS``
(14: departure dates from tomorrow), ``SCORECARD_ZIPF`` (1.1: skew of routes and dates),
``SCORECARD_SCHEDULE`` (the demo schedule file, for the route list), ``SCORECARD_ADMIN_EMAIL`` /
``SCORECARD_ADMIN_PASSWORD`` (the demo platform admin).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import gevent
import requests
from locust import FastHttpUser, between, events, task
from locust.env import Environment

ROOT = Path(__file__).resolve().parents[2]
SCHEDULE = Path(os.environ.get("SCORECARD_SCHEDULE", ROOT / "src/skybook/seed/data/schedule.json"))
TENANTS = int(os.environ.get("SCORECARD_TENANTS", "4"))
KEYS_PER_TENANT = int(os.environ.get("SCORECARD_KEYS_PER_TENANT", "3"))
DAYS = int(os.environ.get("SCORECARD_DAYS", "14"))
ZIPF_S = float(os.environ.get("SCORECARD_ZIPF", "1.1"))
RESULT = Path(os.environ.get("SCORECARD_RESULT", ROOT / "var/scorecard/locust-extra.json"))
ADMIN_EMAIL = os.environ.get("SCORECARD_ADMIN_EMAIL", "admin@skybook.example.com")
ADMIN_PASSWORD = os.environ.get("SCORECARD_ADMIN_PASSWORD", "skybook-demo-password")  # pragma: allowlist secret
TENANT_PASSWORD = "scorecard-tenant-" + uuid.uuid4().hex  # pragma: allowlist secret
RETRIES = int(os.environ.get("SCORECARD_RETRIES", "4"))
RETRY_BUDGET_SECONDS = float(os.environ.get("SCORECARD_RETRY_BUDGET", "70"))  # > the 60 s key reservation
TIMELINE_STEP = 0.25
# Answers after which the same request, with the same Idempotency-Key, is safe and worth sending again.
RETRYABLE_STATUS = frozenset({0, 502, 504})

CARD_OK = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2035, "cvc": "123", "holder": "Anna Jensen"}
CARD_DECLINED = {**CARD_OK, "number": "4000000000000002"}
GIVEN = ["Anna", "Bo", "Clara", "David", "Emma", "Frederik", "Ida", "Jonas", "Karen", "Lars"]
FAMILY = ["Jensen", "Nielsen", "Hansen", "Pedersen", "Andersen", "Larsen", "Smith", "Garcia", "Rossi", "Novak"]

# Problem codes the API answers on purpose under load; anything else in 4xx is a failure.
EXPECTED_CODES = frozenset(
    {
        "sold_out",  # the seats went between search and hold
        "booking_class_closed",
        "flight_not_bookable",
        "hold_limit_reached",  # the plan's cap on unpaid seats
        "payment_declined",
        "payment_in_progress",
        "invalid_state",  # e.g. a booking another agent of the tenant cancelled meanwhile
        "hold_expired",
        "seat_unavailable",  # another passenger took the seat between seat map and request
        "rate_limited",
        "busy",  # 503 under lock contention, with Retry-After
    }
)

expected_4xx: Counter[str] = Counter()
unexpected: Counter[str] = Counter()
attempt_errors: Counter[str] = Counter()
business: Counter[str] = Counter()
retries: Counter[str] = Counter()  # "sent again|<request> <why>"
# Attempts per time step: {step index: [answered as meant, failed]}; failed attempts and failed
# operations with their time (epoch seconds) and what they were.
timeline: dict[int, list[int]] = {}
failed_attempts: list[tuple[float, str]] = []
failed_operations: list[tuple[float, str]] = []
# Operations that needed a retry: (request, seconds from the first attempt to the final answer,
# attempts, final outcome, whether a reserved key made it wait).
retried_operations: list[tuple[str, float, int, str, bool]] = []
_lock = threading.Lock()


def _zipf_weights(n: int, s: float) -> list[float]:
    return [1.0 / (rank**s) for rank in range(1, n + 1)]


class Catalogue:
    """Routes of the demo schedule, ranked by a fixed shuffle, and departure dates from tomorrow."""

    def __init__(self, schedule: Path, days: int, s: float) -> None:
        flights = json.loads(schedule.read_text(encoding="utf-8"))["flights"]
        routes = sorted({(f["origin"], f["destination"]) for f in flights})
        random.Random(42).shuffle(routes)  # which routes are popular: fixed between runs
        self.routes = routes
        self.route_weights = _zipf_weights(len(routes), s)
        tomorrow = datetime.now(UTC).date() + timedelta(days=1)
        self.dates = [tomorrow + timedelta(days=i) for i in range(days)]
        # Near dates are searched most, as in real traffic.
        self.date_weights = _zipf_weights(days, s * 0.7)

    def pick(self, rng: random.Random) -> tuple[str, str, date]:
        origin, destination = rng.choices(self.routes, self.route_weights)[0]
        return origin, destination, rng.choices(self.dates, self.date_weights)[0]


CATALOGUE = Catalogue(SCHEDULE, DAYS, ZIPF_S)
_keys: list[str] = []
_key_cycle: Any = None
_booked: list[dict[str, Any]] = []  # shared across users: look-ups hit other agents' bookings too


def _token(host: str, username: str, password: str) -> str:
    r = requests.post(
        f"{host}/v1/auth/token",
        data={"grant_type": "password", "username": username, "password": password},
        timeout=30,
    )
    r.raise_for_status()
    token: str = r.json()["access_token"]
    return token


def provision(host: str, tenants: int, keys_per_tenant: int) -> list[str]:
    """Agency tenants on the enterprise plan, each with API keys; returns the keys."""
    admin = {"Authorization": f"Bearer {_token(host, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
    run = uuid.uuid4().hex[:8]
    keys: list[str] = []
    for i in range(tenants):
        email = f"admin-{run}-{i}@scorecard.example.com"
        r = requests.post(
            f"{host}/v1/tenants",
            json={"name": f"Scorecard Agency {run} {i}", "plan": "enterprise", "admin_email": email},
            headers=admin,
            timeout=30,
        )
        r.raise_for_status()
        accepted = requests.post(
            f"{host}/v1/auth/invitations/accept",
            json={"token": r.json()["invitation_token"], "password": TENANT_PASSWORD},
            timeout=30,
        )
        accepted.raise_for_status()
        tenant_admin = {"Authorization": f"Bearer {_token(host, email, TENANT_PASSWORD)}"}
        for k in range(keys_per_tenant):
            created = requests.post(
                f"{host}/v1/api-keys",
                json={"name": f"scorecard {k}", "scopes": ["search", "bookings:read", "bookings:write"]},
                headers=tenant_admin,
                timeout=30,
            )
            created.raise_for_status()
            keys.append(created.json()["key"])
    return keys


@events.test_start.add_listener
def _on_start(environment: Environment, **_: Any) -> None:
    global _key_cycle
    source = os.environ.get("SCORECARD_KEYS")
    if source:
        _keys.extend(json.loads(Path(source).read_text())["keys"])
    else:
        host = (environment.host or "http://127.0.0.1:8080").rstrip("/")
        _keys.extend(provision(host, TENANTS, KEYS_PER_TENANT))
    if not _keys:
        raise RuntimeError("no API keys to load the API with")
    _key_cycle = itertools.cycle(_keys)


@events.test_stop.add_listener
def _on_stop(environment: Environment, **_: Any) -> None:
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(
        json.dumps(
            {
                "expected_4xx": dict(expected_4xx),
                "unexpected": dict(unexpected),
                "business": dict(business),
                "attempt_errors": dict(attempt_errors),
                "retries": dict(retries),
                "retry_policy": {
                    "max_retries": RETRIES,
                    "budget_seconds": RETRY_BUDGET_SECONDS,
                    "retried": [*sorted(str(s) for s in RETRYABLE_STATUS), "409 idempotency_in_progress"],
                },
                "timeline": {"step": TIMELINE_STEP, "attempts": {str(k): v for k, v in sorted(timeline.items())}},
                "failed_attempts": failed_attempts,
                "failed_operations": failed_operations,
                "retried_operations": retried_operations,
                "tenants": TENANTS,
                "api_keys": len(_keys),
                "zipf_s": ZIPF_S,
                "routes": len(CATALOGUE.routes),
                "days": DAYS,
            },
            indent=2,
        )
    )


def _count(counter: Counter[str], key: str) -> None:
    with _lock:
        counter[key] += 1


def _tick(*, ok: bool) -> None:
    step = int(time.time() / TIMELINE_STEP)
    with _lock:
        row = timeline.setdefault(step, [0, 0])
        row[0 if ok else 1] += 1


class Agent(FastHttpUser):
    """One agency integration, calling with one of its tenant's API keys."""

    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.headers = {"X-API-Key": next(_key_cycle)}
        self.mine: list[dict[str, Any]] = []

    # -- helpers -------------------------------------------------------------------------------

    def _call(self, method: str, path: str, name: str, ok: tuple[int, ...], **kw: Any) -> dict[str, Any] | None:
        """One operation: a request, sent again while that is safe and useful (see the module doc).

        Expected problems count apart; everything else unexpected is a failure of the attempt,
        and of the operation when no retry mends it.
        """
        headers = {**self.headers, **kw.pop("headers", {})}
        if method == "POST":
            headers.setdefault("Idempotency-Key", uuid.uuid4().hex)  # one key for every attempt
        first = time.monotonic()
        deadline = first + RETRY_BUDGET_SECONDS
        attempt = 0
        waited_on_key = False

        def done(final: str) -> None:
            if attempt:
                with _lock:
                    retried_operations.append(
                        (name, round(time.monotonic() - first, 2), attempt + 1, final, waited_on_key)
                    )

        while True:
            outcome, body, (status, code, retry_after) = self._attempt(method, path, name, ok, headers, kw)
            if outcome in ("ok", "expected"):
                done(outcome)
                return body
            if attempt and status == 409 and code == "already_paid":
                # The attempt that went missing had paid: what a client learns on reading the order.
                _count(expected_4xx, f"{name} {status} {code} (a retry: the lost attempt had paid)")
                done("expected")
                return None
            safe = method == "GET" or "Idempotency-Key" in headers
            in_progress = status == 409 and code == "idempotency_in_progress"
            retryable = safe and (in_progress or status in RETRYABLE_STATUS)
            wait = retry_after if in_progress else min(0.25 * 2**attempt, 4.0)
            waited_on_key = waited_on_key or in_progress
            if not retryable or time.monotonic() + wait > deadline or (not in_progress and attempt >= RETRIES):
                done(outcome)
                _count(unexpected, outcome)
                with _lock:
                    failed_operations.append((time.time(), outcome))
                return None
            attempt += 1
            _count(retries, f"{name} {status} {code}".strip())
            gevent.sleep(wait)

    def _attempt(
        self, method: str, path: str, name: str, ok: tuple[int, ...], headers: dict[str, str], kw: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None, tuple[int, str, float]]:
        """One request: ("ok" | "expected" | "<kind>|<name> <status> [code]", body, (status, code, Retry-After))."""
        with self.client.request(method, path, name=name, headers=headers, catch_response=True, **kw) as r:
            status = r.status_code or 0
            if status in ok:
                r.success()
                _tick(ok=True)
                try:
                    body: dict[str, Any] = r.json()
                except Exception:
                    body = {}
                return "ok", body, (status, "", 0.0)
            code = ""
            if 400 <= status < 500 or status == 503:
                try:
                    code = str(r.json().get("code", ""))
                except Exception:
                    code = ""
                if code in EXPECTED_CODES:
                    r.success()
                    _tick(ok=True)
                    _count(expected_4xx, f"{name} {status} {code}")
                    return "expected", None, (status, code, 0.0)
            kind = "unexpected_4xx" if 400 <= status < 500 else "errors"
            outcome = f"{kind}|{name} {status} {code}".strip()
            try:
                retry_after = float(r.headers.get("Retry-After") or 1)
            except (TypeError, ValueError):
                retry_after = 1.0
            _tick(ok=False)
            _count(attempt_errors, outcome)
            with _lock:
                failed_attempts.append((time.time(), outcome))
            r.failure(f"{status} {code}".strip())
            return outcome, None, (status, code, min(max(retry_after, 0.1), 5.0))

    def _search(self, adults: int = 1) -> dict[str, Any] | None:
        origin, destination, day = CATALOGUE.pick(self.rng)
        page = self._call(
            "GET",
            f"/v1/offers?origin={origin}&destination={destination}&departure_date={day}&adults={adults}",
            "search",
            (200,),
        )
        items = (page or {}).get("items") or []
        return self.rng.choice(items) if items else None

    def _hold(self, adults: int) -> dict[str, Any] | None:
        offer = self._search(adults)
        if offer is None:
            return None
        body = {
            "segments": [{"flight_id": s["flight_id"], "booking_class": s["booking_class"]} for s in offer["segments"]],
            "passengers": {"adults": adults, "children": 0, "infants": 0},
        }
        return self._call("POST", "/v1/holds", "hold", (201,), json=body)

    def _book(self, card: dict[str, Any] = CARD_OK) -> dict[str, Any] | None:
        adults = self.rng.choices([1, 2, 3, 4], [60, 25, 10, 5])[0]
        hold = self._hold(adults)
        if hold is None:
            return None
        family = self.rng.choice(FAMILY)
        passengers = [
            {
                "type": "ADT",
                "given_name": self.rng.choice(GIVEN),
                "family_name": family,
                "date_of_birth": f"{self.rng.randint(1950, 2000)}-0{self.rng.randint(1, 9)}-1{self.rng.randint(0, 9)}",
            }
            for _ in range(adults)
        ]
        order = self._call(
            "POST",
            "/v1/orders",
            "confirm",
            (201,),
            json={"hold_id": hold["id"], "passengers": passengers, "contact": {"email": "agent@scorecard.example.com"}},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        if order is None:
            return None
        paid = self._call(
            "POST",
            f"/v1/orders/{hold['id']}/payments",
            "pay",
            (200, 202),  # 202: paid, the e-tickets follow (ticketing runs in a worker)
            json={"card": card},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        if paid is None:
            return None
        _count(business, "bookings" if paid.get("status") == "ticketed" else "paid, tickets pending (202)")
        booking = {"id": paid["id"], "locator": paid["record_locator"], "family": family, "order": paid}
        self.mine.append(booking)
        with _lock:
            _booked.append(booking)
            if len(_booked) > 5000:
                del _booked[: len(_booked) - 5000]
        return booking

    # -- the mix ---------------------------------------------------------------------------------

    @task(60)
    def search(self) -> None:
        """Look for flights; most traffic, most of it on a few popular routes and near dates."""
        self._search(self.rng.choices([1, 2, 3], [70, 20, 10])[0])

    @task(12)
    def book(self) -> None:
        """Search, hold, name the passengers, pay: e-tickets issued."""
        self._book()

    @task(5)
    def hold_and_release(self) -> None:
        """A hold the customer gives up on."""
        hold = self._hold(1)
        if hold is not None:
            self._call("POST", f"/v1/holds/{hold['id']}/release", "release", (200,))
            _count(business, "released")

    @task(1)
    def declined_card(self) -> None:
        """A booking whose card is declined (402 payment_declined is an answer, not an error)."""
        self._book(CARD_DECLINED)

    @task(4)
    def choose_seats(self) -> None:
        """Seat selection on one of this agent's bookings."""
        if not self.mine:
            return
        booking = self.rng.choice(self.mine)
        order = booking["order"]
        flight_id = order["segments"][0]["flight_id"]
        seat_map = self._call("GET", f"/v1/flights/{flight_id}/seat-map", "seat map", (200,))
        if not seat_map:
            return
        cabin = order["segments"][0]["cabin"]
        free = [s["number"] for c in seat_map["cabins"] if c["cabin"] == cabin for s in c["seats"] if s["available"]]
        people = [p for p in order["passengers"] if p["type"] != "INF"]
        if len(free) < len(people):
            return
        seats = self.rng.sample(free, len(people))
        body = {
            "seats": [
                {"passenger_id": p["id"], "flight_id": flight_id, "seat": s} for p, s in zip(people, seats, strict=True)
            ]
        }
        if self._call("POST", f"/v1/orders/{booking['id']}/seats", "seats", (200,), json=body) is not None:
            _count(business, "seated")

    @task(2)
    def cancel(self) -> None:
        """Cancel one of this agent's bookings (void the same day, refund later)."""
        if not self.mine:
            return
        booking = self.mine.pop(self.rng.randrange(len(self.mine)))
        if self._call("POST", f"/v1/orders/{booking['id']}/cancel", "cancel", (200,)) is not None:
            _count(business, "cancelled")

    @task(8)
    def manage_booking(self) -> None:
        """'Manage my booking': find a booking by record locator and family name, then read it."""
        with _lock:
            booking = self.rng.choice(_booked) if _booked else None
        if booking is None:
            return
        found = self._call(
            "POST",
            "/v1/orders/lookup",
            "lookup",
            (200, 404),  # another tenant's booking is not found, by design
            json={"record_locator": booking["locator"], "family_name": booking["family"]},
        )
        if found and booking in self.mine:
            self._call("GET", f"/v1/orders/{booking['id']}", "get order", (200,))
