"""OWASP API1 (broken object level authorization) and API5 (broken function level authorization).

The matrix is generated from the app's own OpenAPI document: every operation whose path names
an object by id is called on objects owned by tenant A's agent (a held, a confirmed and a
ticketed order; tenant A's API key; tenant A's agent as a user) and by a traveller of the direct
tenant (a held and a ticketed order), as principals who must not reach them: agency B's agent,
B's API key and B's admin, the direct tenant's traveller, and for the traveller's orders the other
traveller and tenant A's agent. A caller from another tenant must not be able to tell another tenant's object
from one that does not exist: the answer is the one a random id gets, status and body alike
(only the id in ``detail`` differs). Nothing may change while they try.

Operations whose path parameters name operator data (flights, airports, aircraft types) are
listed in ``EXEMPT`` with the reason; an operation with a path parameter that is neither an
object kind nor exempt fails ``test_every_operation_with_a_path_parameter_is_in_the_matrix``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from skybook.bootstrap import Container
from tests.conftest import CARD_OK, Identities
from tests.security.conftest import Clients, Scene, book, snapshot, state_changes
from tests.security.openapi import Operation, by_id, operations, random_id
from tests.security.recipes import JSON_BODIES, OPERATOR_ONLY_WRITES, body_for, path_values

# Path parameters that name tenant-owned objects, and the kind of object they name.
# A delivery is always addressed under its endpoint ({endpoint_id}/deliveries/{delivery_id}), so
# the endpoint is the object attacked; a delivery under another endpoint is tested in test_webhooks.
OBJECT_PARAMS = {"order_id": "order", "key_id": "api_key", "user_id": "user", "endpoint_id": "webhook_endpoint"}

# Operations with path parameters outside the matrix, and why.
EXEMPT = {
    "getFlight": "flights are operator data: every authenticated principal may read them (search sells them)",
    "getAirport": "airports are operator data every authenticated principal may read",
    "getAircraftType": "aircraft types are operator data every authenticated principal may read",
    "getSeatMap": (
        "a flight's seat map is operator data every booking principal needs to choose seats; "
        "test_a_seat_map_shows_the_same_to_every_tenant_and_nothing_of_their_orders proves it leaks nothing of orders"
    ),
    "cancelFlight": "operator-only write on operator data: test_operator_only_writes_refuse_every_tenant_principal",
    "updateBookingClass": "operator-only write on operator data: test_operator_only_writes_refuse_every_tenant_principal",
}

# Who attacks which object, and the status every attacker must get (the one a missing id gets).
# Users and API keys are managed by admins only: an agent, a key or a traveller is refused by
# role (403) before any look-up, for A's object and a random id alike; B's admin passes the role
# check and must find nothing (404).
ORDER_ATTACKERS = ("b_agent", "b_key", "traveller")
TRAVELLER_ORDER_ATTACKERS = ("other_traveller", "b_agent", "b_key", "a_agent")
ADMIN_OBJECT_ATTACKERS = {"b_admin": 404, "b_agent": 403, "b_key": 403, "traveller": 403}

TENANT_ADMIN_ONLY = (
    "listUsers",
    "inviteUser",
    "changeUserRole",
    "listApiKeys",
    "createApiKey",
    "revokeApiKey",
    "listAuditEvents",
    "listWebhookEventTypes",
    "listWebhookEndpoints",
    "createWebhookEndpoint",
)
TENANT_PRINCIPALS = ("a_admin", "a_agent", "a_key", "b_agent", "b_key", "traveller")
NON_ADMINS = ("a_agent", "a_key", "b_agent", "b_key", "traveller", "other_traveller")


def _object_param(op: Operation) -> str | None:
    return next((p for p in op.path_params if p in OBJECT_PARAMS), None)


def _targets(kind: str, scene: Scene, identities: Identities) -> list[tuple[str, str, dict[str, int]]]:
    """(what, id, {attacker: expected status}) for each object of ``kind`` in the scene."""
    if kind == "order":
        out = [
            (f"tenant A's {label} order", o["id"], dict.fromkeys(ORDER_ATTACKERS, 404))
            for label, o in scene.a_orders().items()
        ]
        out += [
            (f"the {label} order", o["id"], dict.fromkeys(TRAVELLER_ORDER_ATTACKERS, 404))
            for label, o in scene.traveller_orders().items()
        ]
        return out
    if kind == "api_key":
        return [("tenant A's API key", str(identities.a_key.id), ADMIN_OBJECT_ATTACKERS)]
    if kind == "user":
        return [("tenant A's agent", str(identities.a_agent.id), ADMIN_OBJECT_ATTACKERS)]
    if kind == "webhook_endpoint":
        return [("tenant A's webhook endpoint", scene.webhook_endpoint["id"], ADMIN_OBJECT_ATTACKERS)]
    raise AssertionError(f"no targets for object kind {kind!r}")


def _comparable(response: httpx.Response, *ids: str) -> tuple[int, str, str]:
    """Status, content type and body with the object id blanked out."""
    text = json.dumps(response.json(), sort_keys=True) if response.content else ""
    for i in ids:
        text = text.replace(i, "<id>")
    return response.status_code, response.headers.get("content-type", ""), text


def test_every_operation_with_a_path_parameter_is_in_the_matrix(spec: dict[str, Any]) -> None:
    violations = []
    for op in operations(spec):
        if not op.path_params:
            continue
        if _object_param(op) is None and op.operation_id not in EXEMPT:
            violations.append(f"{op.label}: path parameters {op.path_params} name no object kind and no exemption")
        if _object_param(op) is not None and op.operation_id in EXEMPT:
            violations.append(f"{op.label}: names a tenant object but is exempt")
        if op.body_media_type is not None and op.operation_id not in JSON_BODIES:
            violations.append(f"{op.label}: takes a body but has no recipe in tests/security/recipes.py")
    assert not violations, "\n".join(violations)
    assert set(EXEMPT) <= set(by_id(spec)), f"stale exemptions: {sorted(set(EXEMPT) - set(by_id(spec)))}"


async def test_another_tenants_object_answers_exactly_like_a_missing_one(
    app: Any, container: Container, scene: Scene, identities: Identities, clients: Clients
) -> None:
    matrix = [op for op in operations(app.openapi()) if _object_param(op)]
    assert {op.operation_id for op in matrix} >= {
        "getOrder",
        "payOrder",
        "revokeApiKey",
        "changeUserRole",
        "getWebhookEndpoint",
        "deleteWebhookEndpoint",
        "replayWebhookDelivery",
    }
    callers = {
        name: clients(getattr(identities, name))
        for name in {*ORDER_ATTACKERS, *TRAVELLER_ORDER_ATTACKERS, *ADMIN_OBJECT_ATTACKERS}
    }
    before = await snapshot(container.engine)
    violations: list[str] = []
    calls = 0
    for op in matrix:
        param = _object_param(op)
        assert param is not None
        body = body_for(op.operation_id, scene, identities) if op.body_media_type else None
        for what, object_id, attackers in _targets(OBJECT_PARAMS[param], scene, identities):
            for attacker, expected in attackers.items():
                values = {**path_values(op.operation_id, scene, identities), param: object_id}
                real = await op.send(callers[attacker], values, body)
                missing_id = random_id()
                missing = await op.send(callers[attacker], {**values, param: missing_id}, body)
                calls += 2
                where = f"{op.label} on {what} as {attacker}"
                if real.is_success:
                    violations.append(f"{where}: {real.status_code} {real.text[:200]}")
                    continue
                if real.status_code != expected:
                    violations.append(f"{where}: {real.status_code}, expected {expected}: {real.text[:200]}")
                if _comparable(real, object_id) != _comparable(missing, missing_id):
                    violations.append(
                        f"{where}: distinguishable from a missing object:\n"
                        f"    theirs:  {real.status_code} {real.text[:300]}\n"
                        f"    missing: {missing.status_code} {missing.text[:300]}"
                    )
    assert not violations, f"{len(violations)} of {calls} calls:\n" + "\n".join(violations)
    changes = state_changes(before, await snapshot(container.engine))
    assert not changes, f"refused requests changed state: {changes}"


async def test_the_owner_still_sees_every_object_the_matrix_attacked(
    scene: Scene, identities: Identities, clients: Clients
) -> None:
    # The matrix above is only meaningful if its ids are real objects their owners can reach.
    agent, traveller, admin = clients(identities.a_agent), clients(identities.traveller), clients(identities.a_admin)
    for order in scene.a_orders().values():
        assert (await agent.get(f"/v1/orders/{order['id']}")).status_code == 200
    for order in scene.traveller_orders().values():
        assert (await traveller.get(f"/v1/orders/{order['id']}")).status_code == 200
    keys = (await admin.get("/v1/api-keys")).json()["items"]
    assert str(identities.a_key.id) in {k["id"] for k in keys}
    users = (await admin.get("/v1/users")).json()["items"]
    assert str(identities.a_agent.id) in {u["id"] for u in users}


async def test_objects_referenced_in_a_body_answer_like_missing_ones(
    container: Container, scene: Scene, identities: Identities, clients: Clients
) -> None:
    """Ids in bodies are object references too: confirming, looking up or seating another's."""
    violations: list[str] = []
    before = await snapshot(container.engine)
    confirmed = scene.confirmed
    passenger = confirmed["passengers"][0]
    for attacker in ("b_agent", "b_key", "traveller"):
        client = clients(getattr(identities, attacker))
        # Confirm tenant A's hold.
        named = {k: passenger[k] for k in ("type", "given_name", "family_name", "date_of_birth")}
        body = {"passengers": [named], "contact": {"email": "mallory@example.com"}}
        theirs = await client.post("/v1/orders", json={**body, "hold_id": scene.held["id"]})
        missing_id = random_id()
        missing = await client.post("/v1/orders", json={**body, "hold_id": missing_id})
        if theirs.is_success or _comparable(theirs, scene.held["id"]) != _comparable(missing, missing_id):
            violations.append(f"createOrder with A's hold as {attacker}: {theirs.status_code} {theirs.text[:200]}")
        # Manage-my-booking with tenant A's record locator and passenger name.
        lookup = {"record_locator": confirmed["record_locator"], "family_name": passenger["family_name"]}
        theirs = await client.post("/v1/orders/lookup", json=lookup)
        unknown = await client.post("/v1/orders/lookup", json={**lookup, "record_locator": _other_locator(confirmed)})
        if theirs.is_success or _comparable(theirs) != _comparable(unknown):
            violations.append(f"lookupOrder with A's locator as {attacker}: {theirs.status_code} {theirs.text[:200]}")
        # Seat tenant A's passenger through the attacker's own order.
        own = await book(client, scene.flight["id"], "confirmed", family="Mallory")
        seat = {"flight_id": scene.flight["id"], "seat": "12F"}
        theirs = await client.post(
            f"/v1/orders/{own['id']}/seats", json={"seats": [{**seat, "passenger_id": passenger["id"]}]}
        )
        missing_id = random_id()
        missing = await client.post(
            f"/v1/orders/{own['id']}/seats", json={"seats": [{**seat, "passenger_id": missing_id}]}
        )
        if theirs.is_success or _comparable(theirs, passenger["id"]) != _comparable(missing, missing_id):
            violations.append(f"assignSeats with A's passenger as {attacker}: {theirs.status_code} {theirs.text[:200]}")
    assert not violations, "\n".join(violations)
    # The attackers' own bookings were made; nothing of tenant A's changed.
    after = await snapshot(container.engine)
    for table in ("passengers", "seat_assignments", "tickets", "payments"):
        a_rows = [r for r in before[table] if confirmed["id"] in r or scene.held["id"] in r]
        assert all(r in after[table] for r in a_rows), f"{table}: tenant A's rows changed"
    agent = clients(identities.a_agent)
    assert (await agent.get(f"/v1/orders/{scene.held['id']}")).json() == await _reread(agent, scene.held)
    assert (await agent.get(f"/v1/orders/{confirmed['id']}")).json()["passengers"][0]["seats"] == []


async def _reread(client: httpx.AsyncClient, order: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get(f"/v1/orders/{order['id']}")).json()
    assert body["status"] == order["status"] == "held"
    return body


def _other_locator(order: dict[str, Any]) -> str:
    mine = order["record_locator"]
    return "ZZZZZZ" if mine != "ZZZZZZ" else "YYYYYY"


async def test_lists_show_only_the_callers_own_orders(scene: Scene, identities: Identities, clients: Clients) -> None:
    a_ids = {o["id"] for o in scene.a_orders().values()}
    t_ids = {o["id"] for o in scene.traveller_orders().values()}
    flight = {"flight_id": scene.flight["id"]}
    for name, own in (
        ("a_agent", a_ids),
        ("a_key", a_ids),
        ("traveller", t_ids),
        ("other_traveller", set()),
        ("b_agent", set()),
        ("b_key", set()),
    ):
        client = clients(getattr(identities, name))
        for params in ({}, flight, {"status": "ticketed"}):
            page = (await client.get("/v1/orders", params={**params, "page_size": 100})).json()
            seen = {o["id"] for o in page["items"]}
            assert seen <= own, f"{name} listing {params or 'all'} sees others' orders: {sorted(seen - own)}"
            assert page["page_info"]["total"] == len(seen), f"{name}: the total counts orders it cannot see"


async def test_a_seat_map_shows_the_same_to_every_tenant_and_nothing_of_their_orders(
    scene: Scene, identities: Identities, clients: Clients
) -> None:
    agent = clients(identities.a_agent)
    ticketed = scene.ticketed
    seated = await agent.post(
        f"/v1/orders/{ticketed['id']}/seats",
        json={
            "seats": [{"passenger_id": ticketed["passengers"][0]["id"], "flight_id": scene.flight["id"], "seat": "11C"}]
        },
    )
    assert seated.status_code == 200, seated.text
    url = f"/v1/flights/{scene.flight['id']}/seat-map"
    owners_view = await agent.get(url)
    assert owners_view.status_code == 200
    secrets = {
        ticketed["id"],
        ticketed["record_locator"],
        ticketed["passengers"][0]["id"],
        ticketed["passengers"][0]["family_name"],
    }
    for name in ("b_agent", "b_key", "traveller"):
        theirs = await clients(getattr(identities, name)).get(url)
        assert theirs.status_code == 200
        assert theirs.json() == owners_view.json()
        assert not [s for s in secrets if s in theirs.text], f"the seat map shows {name} another tenant's order"
    taken = [s for c in owners_view.json()["cabins"] for s in c["seats"] if not s["available"]]
    assert [s["number"] for s in taken] == ["11C"]


async def _answers(
    ops: dict[str, Operation], op_ids: tuple[str, ...], client: httpx.AsyncClient, scene: Scene, identities: Identities
) -> dict[str, tuple[int, str | None]]:
    answers = {}
    for op_id in op_ids:
        op = ops[op_id]
        body = body_for(op_id, scene, identities) if op.body_media_type else None
        r = await op.send(client, path_values(op_id, scene, identities), body)
        answers[op_id] = (r.status_code, r.json().get("code"))
    return answers


async def test_operator_only_writes_refuse_every_tenant_principal(
    app: Any, container: Container, scene: Scene, identities: Identities, clients: Clients
) -> None:
    ops = by_id(app.openapi())
    before = await snapshot(container.engine)
    for caller in TENANT_PRINCIPALS:
        answers = await _answers(ops, OPERATOR_ONLY_WRITES, clients(getattr(identities, caller)), scene, identities)
        assert answers == dict.fromkeys(OPERATOR_ONLY_WRITES, (403, "forbidden")), caller
    assert not state_changes(before, await snapshot(container.engine))


async def test_operator_only_writes_work_for_airline_staff(
    app: Any, scene: Scene, identities: Identities, clients: Clients
) -> None:
    # The refusals above are about who calls, not about the recipes: staff succeed with the same bodies.
    ops = by_id(app.openapi())
    staff = clients(identities.staff)
    for op_id in OPERATOR_ONLY_WRITES:
        op = ops[op_id]
        body = body_for(op_id, scene, identities) if op.body_media_type else None
        r = await op.send(staff, path_values(op_id, scene, identities), body)
        assert r.is_success, f"{op_id}: {r.status_code} {r.text[:300]}"


async def test_user_key_and_audit_administration_refuses_agents_keys_and_travellers(
    app: Any, container: Container, scene: Scene, identities: Identities, clients: Clients
) -> None:
    ops = by_id(app.openapi())
    admin_only = (*TENANT_ADMIN_ONLY, "createTenant")
    before = await snapshot(container.engine)
    for caller in NON_ADMINS:
        answers = await _answers(ops, admin_only, clients(getattr(identities, caller)), scene, identities)
        assert answers == dict.fromkeys(admin_only, (403, "forbidden")), caller
    assert not state_changes(before, await snapshot(container.engine))


async def test_only_platform_admins_create_tenants(
    app: Any, container: Container, scene: Scene, identities: Identities, clients: Clients
) -> None:
    op = by_id(app.openapi())["createTenant"]
    body = body_for("createTenant", scene, identities)
    before = await snapshot(container.engine)
    for caller in ("a_admin", "b_admin", "staff"):
        r = await op.send(clients(getattr(identities, caller)), {}, body)
        assert (r.status_code, r.json()["code"]) == (403, "forbidden"), caller
    assert not state_changes(before, await snapshot(container.engine))
    created = await op.send(clients(identities.admin), {}, body)
    assert created.status_code == 201, created.text


async def test_an_idempotency_key_never_replays_one_callers_answer_to_another(
    scene: Scene, identities: Identities, clients: Clients
) -> None:
    """Idempotency keys are per principal: B repeating A's key (and body) gets no copy of A's order."""
    agent = clients(identities.a_agent)
    order = await book(agent, scene.flight["id"], "confirmed", family="Nielsen")
    key = {"Idempotency-Key": "pay-once-7d1f"}
    paid = await agent.post(f"/v1/orders/{order['id']}/payments", json={"card": CARD_OK}, headers=key)
    assert paid.status_code == 200, paid.text
    for attacker in ("b_agent", "b_key", "traveller"):
        replay = await clients(getattr(identities, attacker)).post(
            f"/v1/orders/{order['id']}/payments", json={"card": CARD_OK}, headers=key
        )
        assert replay.status_code == 404, f"{attacker}: {replay.status_code} {replay.text[:200]}"
        assert "idempotent-replayed" not in replay.headers
        assert order["record_locator"] not in replay.text
    # The same key for another caller's own, different request is theirs to use: no clash with A's.
    own = await clients(identities.b_admin).post(
        "/v1/holds",
        json={"segments": [{"flight_id": scene.flight["id"], "booking_class": "M"}], "passengers": {"adults": 1}},
        headers=key,
    )
    assert own.status_code == 201, own.text
    # A's own retry still replays A's answer.
    again = await agent.post(f"/v1/orders/{order['id']}/payments", json={"card": CARD_OK}, headers=key)
    assert (again.status_code, again.headers.get("idempotent-replayed")) == (200, "true")
    assert again.json() == paid.json()
