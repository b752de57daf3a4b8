"""Property-based fuzzing of the app's own OpenAPI document with Schemathesis (OWASP API8, API9).

Every operation of the document is generated against (valid and invalid data, the schema's
examples, boundary values), in-process over ASGI, and each answer is checked by every built-in
Schemathesis check: no server error, the status code is declared, the content type is declared,
the body matches the declared schema, invalid data is refused, valid data is not, and an
operation that declares security refuses the same request without credentials.

The run is bounded and reproducible: a fixed seed, derandomized generation, no example database,
no deadline, ``MAX_EXAMPLES`` per operation. It runs on SQLite only, against the small test
network with one published flight, authenticated with real access tokens from
``POST /v1/auth/token`` (tenant A's admin; see ``CALLER_FOR`` for the exceptions).

The document is read from ``/openapi.json`` over ASGI when the module is collected; each
operation's cases go to an app with its own container on the test database. Schemathesis drives
that app from its own event loop, so it must not share pooled connections with the fixtures'.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi.routing import APIRoute
from schemathesis.config import SchemathesisConfig

from skybook.app import create_app
from skybook.bootstrap import Container, bootstrap
from skybook.payments import SandboxPaymentProvider
from skybook.platform.clock import FakeClock
from skybook.platform.migrate import upgrade
from tests.conftest import PASSWORD, Database, Identities, Network
from tests.security.conftest import Clients
from tests.security.openapi import document_app, operations
from tests.security.recipes import OPERATOR_ONLY_WRITES

MAX_EXAMPLES = 20
SEED = 20261127

CONFIG = f"""
seed = {SEED}

[generation]
max-examples = {MAX_EXAMPLES}
deterministic = true

[checks]
enabled = true

# Valid data may still be refused for what JSON Schema cannot state: a rule across fields
# (infants <= adults, origin != destination, an unexpired card, a deliverable e-mail domain),
# answered with the documented 422; or the size of the whole body (SKYBOOK_MAX_BODY_BYTES, 256 KiB
# by default, which 2000 schedule lines at maxItems exceed), answered with the documented 413.
# Every other check is as Schemathesis ships it.
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "413", "422", "429", "5xx"]

# A body over the size limit (e.g. more schedule lines than maxItems allows, at 2000 lines) is
# refused before it is parsed, with the documented 413: a refusal like the others listed here.
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
"""

# Everything runs as tenant A's admin, except what a tenant admin may not do at all (its answer
# would always be 403, leaving the body unfuzzed): operator writes run as airline staff and
# onboarding a tenant as a platform admin. Operations that end the session they are called with
# get a throwaway session of agency B's agent, so the rest of the run stays logged in (their 401
# once that session has ended is declared).
CALLER_FOR = dict.fromkeys(OPERATOR_ONLY_WRITES, "staff") | {
    "createTenant": "admin",
    "logOut": "b_agent",
    "changePassword": "b_agent",
}
DEFAULT_CALLER = "a_admin"

schema = schemathesis.openapi.from_asgi("/openapi.json", document_app(), config=SchemathesisConfig.from_str(CONFIG))


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def database(migrated_template: Path, tmp_path: Path) -> Database:
    """SQLite only (the fuzzing is about the HTTP contract, which does not depend on the backend),
    and a database file of each test's own, copied from one migrated template.

    The fuzzed app runs on Schemathesis's own event-loop thread, with its lifespan (dispatcher,
    periodic jobs, webhook sender), and is shut down from there. On a loaded machine the cleanup of
    the shared session database twice met "database is locked" right after a fuzzed
    operation (in CI and in a local run), with no transaction of this process open by the time it
    failed; the holder was not found. With a file of its own, nothing a fuzzed app leaves behind
    can reach another test.
    """
    path = tmp_path / "fuzz.db"
    with (
        contextlib.closing(sqlite3.connect(migrated_template)) as source,
        contextlib.closing(sqlite3.connect(path)) as target,
    ):
        source.backup(target)  # a consistent copy, whatever is still in the template's WAL
    return Database("sqlite", f"sqlite+aiosqlite:///{path}")


@dataclass
class FuzzTarget:
    app: Any
    container: Container
    tokens: dict[str, str]

    def headers_for(self, operation_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[CALLER_FOR.get(operation_id, DEFAULT_CALLER)]}"}


@pytest.fixture
async def fuzz_target(
    network: Network,
    identities: Identities,
    clients: Clients,
    container: Container,
    clock: FakeClock,
    payments: SandboxPaymentProvider,
) -> AsyncIterator[FuzzTarget]:
    await network.flight()
    anon = clients(None)
    tokens = {}
    for name in {DEFAULT_CALLER, *CALLER_FOR.values()}:
        data = {"grant_type": "password", "username": getattr(identities, name).email, "password": PASSWORD}
        r = await anon.post("/v1/auth/token", data=data)
        assert r.status_code == 200, r.text
        tokens[name] = r.json()["access_token"]
    own = bootstrap(container.settings, clock=clock, payments=payments)
    yield FuzzTarget(app=create_app(own), container=own, tokens=tokens)
    # Closed here, in the test's loop, before the next test empties the database: left to the
    # garbage collector, its SQLite connections would be dropped without being closed.
    await own.engine.dispose()


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    print_blob=False,
)
def test_every_operation_honours_its_documented_contract(case: Any, fuzz_target: FuzzTarget) -> None:
    case.call_and_validate(
        app=fuzz_target.app, headers=fuzz_target.headers_for(case.operation.definition.raw["operationId"])
    )


# What the fuzzing found, pinned as plain examples that run without it.


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif getattr(route, "original_router", None) is not None:  # an included router
            found += _api_routes(route.original_router.routes)
    return found


def _guards(dependant: Any) -> set[str]:
    names = set()
    for dep in dependant.dependencies:
        qualname = getattr(dep.call, "__qualname__", "")
        if qualname.startswith(("require_roles.", "require_scope.")):
            names.add(qualname)
        names |= _guards(dep)
    return names


def test_every_guarded_operation_documents_401_429_and_403_where_a_role_or_scope_is_needed(
    spec: dict[str, Any],
) -> None:
    declared = {op.operation_id: set(spec["paths"][op.path][op.method]["responses"]) for op in operations(spec)}
    secured = {op.operation_id for op in operations(spec) if op.secured}
    guarded = {route.operation_id for route in _api_routes(document_app().routes) if _guards(route.dependant)}
    assert guarded >= {"createFlight", "getOrder", "searchOffers", "listUsers"}, guarded
    missing = [f"{op}: 401/429" for op in sorted(secured) if not {"401", "429"} <= declared[op]]
    missing += [f"{op}: 403" for op in sorted(guarded) if "403" not in declared[op]]
    assert not missing, missing


async def test_a_405_names_every_method_of_the_resource(clients: Clients, identities: Identities) -> None:
    client = clients(identities.a_agent)
    for method, path, allowed in (
        ("DELETE", "/v1/orders", {"GET", "HEAD", "POST"}),
        ("PUT", "/v1/airports", {"GET", "HEAD", "POST"}),
        ("GET", "/v1/orders/lookup", {"POST"}),
        ("DELETE", "/v1/orders/lookup", {"POST"}),
    ):
        r = await client.request(method, path)
        assert (r.status_code, r.json()["code"]) == (405, "method_not_allowed"), (method, path, r.text)
        assert set(r.headers["allow"].split(", ")) == allowed, (method, path, r.headers["allow"])


async def test_a_date_query_parameter_takes_only_yyyy_mm_dd(clients: Clients, identities: Identities) -> None:
    client = clients(identities.a_agent)
    for value in ("0", "1700000000", "2026-1-1", "2026-01-01T00:00:00"):
        for path, name in (("/v1/orders", "created_to"), ("/v1/flights", "departure_date")):
            r = await client.get(path, params={name: value})
            assert (r.status_code, r.json()["code"]) == (422, "validation_error"), (path, value, r.text)
    assert (await client.get("/v1/orders", params={"created_to": "2026-01-01"})).status_code == 200
    offers = await client.get("/v1/offers", params={"origin": "CPH", "destination": "LHR", "departure_date": "0"})
    assert offers.status_code == 422
