"""OWASP API3 (broken object property level authorization): a client cannot write a field it may not set.

Every write operation of the app's own OpenAPI document that takes a body is sent a valid body
(its recipe in ``tests/security/recipes.py``) plus one field a client must never set: the owner
tenant, a role, a status, a price, a paid flag, a total, the creator, a record locator, an admin
flag. Each goes in at the top level and inside every nested object the schema declares. The
answer must be ``422 validation_error`` naming exactly that field as forbidden, and nothing in
the database may change (every table, seat counts included).

The caller of each operation is one allowed to perform it, so validation is the only refusal
left; ``test_every_recipe_is_accepted_without_the_extra_field`` proves the same bodies without the
extra field succeed, so each 422 is caused by the injected field and nothing else.

A field the operation legitimately takes at that level (``role`` when inviting a user,
``record_locator`` when looking up a booking) is the operation's own input, not an injection,
and is skipped there.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx

from skybook.bootstrap import Container
from tests.conftest import Identities
from tests.security.conftest import Clients, Scene, snapshot, state_changes
from tests.security.openapi import Operation, nested_object_paths, operations, resolve
from tests.security.recipes import FORM_BODIES, JSON_BODIES, body_for, path_values

# Who sends each operation: someone it is meant for (None: no log-in needed).
CALLER: dict[str, str | None] = {
    "signUp": None,
    "issueToken": None,
    "acceptInvitation": None,
    "changePassword": "a_agent",
    "createTenant": "admin",
    "inviteUser": "a_admin",
    "changeUserRole": "a_admin",
    "createApiKey": "a_admin",
    "createWebhookEndpoint": "a_admin",
    "updateWebhookEndpoint": "a_admin",
    "replayFailedWebhookDeliveries": "a_admin",
    "createHold": "a_agent",
    "createOrder": "a_agent",
    "lookupOrder": "a_agent",
    "payOrder": "a_agent",
    "assignSeats": "a_agent",
    "createAirport": "staff",
    "createAircraftType": "staff",
    "createFlight": "staff",
    "updateBookingClass": "staff",
    "importSchedule": "staff",
}


def injections(identities: Identities) -> dict[str, Any]:
    """The fields under test, each with a value an attacker would want it to have."""
    return {
        "tenant_id": str(identities.b_admin.tenant_id),
        "role": "platform_admin",
        "status": "ticketed",
        "price": 0,
        "paid": True,
        "total": {"amount": 0, "currency": "EUR"},
        "created_by": str(identities.b_agent.id),
        "record_locator": "ABC234",
        "is_admin": True,
    }


def _body_operations(spec: dict[str, Any]) -> list[Operation]:
    return [op for op in operations(spec) if op.body_media_type is not None]


def _object_at(spec: dict[str, Any], schema: dict[str, Any], where: tuple[str | int, ...]) -> dict[str, Any]:
    """The object schema at ``where`` in a body schema (array members addressed by index)."""

    def concrete(node: dict[str, Any]) -> dict[str, Any]:
        node = resolve(spec, node)
        options = [resolve(spec, o) for o in node.get("anyOf", [node])]
        return next((o for o in options if o.get("type") in {"object", "array"}), node)

    node = concrete(schema)
    for step in where:
        node = concrete(node["items"] if isinstance(step, int) else node["properties"][step])
    return node


def _inject(body: dict[str, Any], where: tuple[str | int, ...], field: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    node: Any = body
    for step in where:
        node = node[step]
    node[field] = value
    return body


def _client(clients: Clients, identities: Identities, op: Operation) -> httpx.AsyncClient:
    caller = CALLER[op.operation_id]
    return clients(getattr(identities, caller) if caller else None)


def test_every_write_operation_with_a_body_has_a_recipe_and_a_caller(spec: dict[str, Any]) -> None:
    ops = _body_operations(spec)
    assert {op.operation_id for op in ops} >= {"createHold", "createOrder", "payOrder", "createTenant"}
    violations = []
    for op in ops:
        recipes = JSON_BODIES if op.takes_json_body else FORM_BODIES
        if op.operation_id not in recipes:
            violations.append(f"{op.label}: no body recipe in tests/security/recipes.py")
        if op.operation_id not in CALLER:
            violations.append(f"{op.label}: no caller in CALLER")
    assert not violations, "\n".join(violations)


def test_request_bodies_forbid_unknown_fields_at_every_level(spec: dict[str, Any]) -> None:
    # What the sweep relies on, stated over the whole document: no object schema takes extra fields.
    violations = []
    for op in _body_operations(spec):
        assert op.body_schema is not None
        for where in [(), *nested_object_paths(spec, op.body_schema)]:
            obj = _object_at(spec, op.body_schema, where)
            if obj.get("additionalProperties") is not False:
                violations.append(f"{op.label}: body{''.join(f'[{s!r}]' for s in where)} accepts unknown fields")
    assert not violations, "\n".join(violations)


async def test_no_write_operation_accepts_a_field_the_client_may_not_set(
    app: Any, container: Container, scene: Scene, identities: Identities, clients: Clients
) -> None:
    spec = app.openapi()
    values = injections(identities)
    violations: list[str] = []
    sent = 0
    for op in _body_operations(spec):
        assert op.body_schema is not None
        client = _client(clients, identities, op)
        recipe = body_for(op.operation_id, scene, identities)
        paths = path_values(op.operation_id, scene, identities)
        locations = [()] + (nested_object_paths(spec, op.body_schema) if op.takes_json_body else [])
        before = await snapshot(container.engine)
        for where in locations:
            own_fields = set(_object_at(spec, op.body_schema, where).get("properties", {}))
            for field, value in values.items():
                if field in own_fields:
                    continue
                body = _inject(recipe, where, field, value if op.takes_json_body else str(value))
                r = await op.send(client, paths, body)
                sent += 1
                at = f"{op.label} body{''.join(f'[{s!r}]' for s in where)}[{field!r}]"
                if r.status_code != 422 or r.json().get("code") != "validation_error":
                    violations.append(f"{at}: {r.status_code} {r.text[:200]}")
                    continue
                errors = r.json()["errors"]
                expected = {"loc": ["body", *map(str, where), field], "type": "extra_forbidden"}
                if [{"loc": e["loc"], "type": e["type"]} for e in errors] != [expected]:
                    violations.append(f"{at}: refused for other reasons too: {errors}")
        changes = state_changes(before, await snapshot(container.engine))
        if changes:
            violations.append(f"{op.label}: refused requests changed state: {changes}")
    assert sent > 200, f"only {sent} requests: the sweep found too few places to inject"
    assert not violations, f"{len(violations)} of {sent} requests:\n" + "\n".join(violations)


async def test_every_recipe_is_accepted_without_the_extra_field(
    app: Any, scene: Scene, identities: Identities, clients: Clients
) -> None:
    failures = []
    for op in _body_operations(app.openapi()):
        r = await op.send(
            _client(clients, identities, op),
            path_values(op.operation_id, scene, identities),
            body_for(op.operation_id, scene, identities),
        )
        if not r.is_success:
            failures.append(f"{op.label}: {r.status_code} {r.text[:300]}")
    assert not failures, "\n".join(failures)


def _text_fields(spec: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    return [
        name
        for name, prop in resolve(spec, schema).get("properties", {}).items()
        if any(
            resolve(spec, o).get("type") == "string" for o in resolve(spec, prop).get("anyOf", [resolve(spec, prop)])
        )
    ]


async def test_no_text_field_takes_a_nul_character(
    app: Any, container: Container, scene: Scene, identities: Identities, clients: Clients
) -> None:
    """A NUL in any text field is a 422 on every backend (PostgreSQL cannot store one: it was a 500)."""
    spec = app.openapi()
    before = await snapshot(container.engine)
    violations = []
    for op in _body_operations(spec):
        assert op.body_schema is not None
        client = _client(clients, identities, op)
        recipe = body_for(op.operation_id, scene, identities)
        for field in _text_fields(spec, op.body_schema):
            r = await op.send(client, path_values(op.operation_id, scene, identities), {**recipe, field: "Agency\x00C"})
            if (r.status_code, r.json().get("code")) != (422, "validation_error"):
                violations.append(f"{op.label} {field}: {r.status_code} {r.text[:200]}")
    assert not violations, "\n".join(violations)
    assert not state_changes(before, await snapshot(container.engine))
