"""The published OpenAPI document is a contract client generators and integrators rely on.

Each test checks one rule over the whole document and lists every violation it finds, so a
failing run says exactly which schema, property or operation to fix.

Rules worth spelling out:

* A property is described when it carries its own ``description``. For a property that points
  at another schema (``$ref``, possibly inside ``allOf``/``anyOf`` or an array's ``items``) the
  description may sit beside the ``$ref`` or on the wrapper (OpenAPI 3.1 allows both); the
  referenced schema's own description does not count, because it says what the *type* is
  ("An amount in minor units"), not what this *field* means ("Total price for all passengers").
* Error responses (4xx/5xx) are ``application/problem+json`` and nothing else: that is what
  the server sends, so a client generated from the document parses errors correctly.
* Every operation with parameters or a body can answer 422; every POST, PUT or PATCH can
  answer 413 (the body limit applies to them all), and every operation that takes a body can
  answer 415 (the body is not JSON).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import ValidationError

from skybook.app import create_app
from skybook.bootstrap import bootstrap
from skybook.settings import Settings

PROBLEM_JSON = "application/problem+json"
UPPER_CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
LOWER_CAMEL = re.compile(r"^[a-z][A-Za-z0-9]*$")
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
BODY_METHODS = {"post", "put", "patch"}
# Property names that would mean a 5xx leaks server internals to the caller.
LEAKY_NAMES = re.compile(r"trace|stack|exception|exc_info|locals|source_file", re.IGNORECASE)
# FastAPI's own 422 schemas describe a body Skybook never sends (its 422 is a ProblemDetail).
FASTAPI_DEFAULT_SCHEMAS = {"HTTPValidationError", "ValidationError"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # Building the app does no I/O, so the document needs no database: it is the same on both backends.
    data_dir: Path = tmp_path_factory.mktemp("openapi")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        secret_key="test-only-secret-key-0123456789",
        database_url=f"sqlite+aiosqlite:///{data_dir / 'unused.db'}",
        data_dir=data_dir,
        run_workers=False,
    )
    return create_app(bootstrap(settings))


@pytest.fixture(scope="module")
def spec(app: Any) -> dict[str, Any]:
    document: dict[str, Any] = app.openapi()
    return document


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield method, {**op, "_where": f"{method.upper()} {path}"}


def _schemas(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = spec.get("components", {}).get("schemas", {})
    return schemas


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    return _schemas(spec)[ref.rsplit("/", 1)[-1]]


def _report(rule: str, violations: list[str]) -> str:
    lines = "\n".join(f"  - {v}" for v in violations)
    return f"{len(violations)} violation(s) of: {rule}\n{lines}"


async def test_the_document_is_served_at_openapi_json_and_matches_the_app(app: Any, spec: dict[str, Any]) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == spec


def test_every_schema_name_is_upper_camel_case(spec: dict[str, Any]) -> None:
    violations = [f"{name}: not UpperCamelCase" for name in _schemas(spec) if not UPPER_CAMEL.match(name)]
    assert not violations, _report("schema names match ^[A-Z][A-Za-z0-9]*$ (no Page_X_-style names)", violations)


def test_fastapi_default_validation_schemas_do_not_leak_in(spec: dict[str, Any]) -> None:
    leaked = sorted(FASTAPI_DEFAULT_SCHEMAS & set(_schemas(spec)))
    violations = [f"{name}: documents a 422 body the server never sends" for name in leaked]
    assert not violations, _report("422 answers are documented as ProblemDetail only", violations)


def test_every_schema_has_a_description(spec: dict[str, Any]) -> None:
    violations = [f"{name}: no description" for name, schema in _schemas(spec).items() if not schema.get("description")]
    assert not violations, _report("every component schema has a description", violations)


def _property_described(prop: dict[str, Any]) -> bool:
    if prop.get("description"):
        return True
    # allOf: [{$ref}] with the description on a sibling member (older generators emit this shape).
    return any(isinstance(part, dict) and part.get("description") for part in prop.get("allOf", []))


def test_every_property_of_every_schema_has_a_description(spec: dict[str, Any]) -> None:
    violations = [
        f"{name}.{prop_name}: no description"
        for name, schema in _schemas(spec).items()
        for prop_name, prop in schema.get("properties", {}).items()
        if not _property_described(prop)
    ]
    assert not violations, _report("every property has its own description (see module docstring)", violations)


def test_every_parameter_has_a_description(spec: dict[str, Any]) -> None:
    violations = [
        f"{op['_where']}: parameter {param['name']!r} ({param['in']}) has no description"
        for _, op in _operations(spec)
        for param in op.get("parameters", [])
        if not param.get("description")
    ]
    assert not violations, _report("every path and query parameter has a description", violations)


def test_every_operation_has_a_unique_explicit_lower_camel_case_operation_id(spec: dict[str, Any]) -> None:
    violations: list[str] = []
    seen: dict[str, str] = {}
    for _, op in _operations(spec):
        op_id = op.get("operationId")
        if not op_id:
            violations.append(f"{op['_where']}: no operationId")
            continue
        if not LOWER_CAMEL.match(op_id):
            violations.append(f"{op['_where']}: operationId {op_id!r} is not lowerCamelCase (generated?)")
        if op_id in seen:
            violations.append(f"{op['_where']}: operationId {op_id!r} already used by {seen[op_id]}")
        seen[op_id] = op["_where"]
    assert not violations, _report("operationIds are explicit, unique and lowerCamelCase", violations)


def test_every_operation_has_a_summary_and_a_tag(spec: dict[str, Any]) -> None:
    violations: list[str] = []
    for _, op in _operations(spec):
        if not op.get("summary"):
            violations.append(f"{op['_where']}: no summary")
        if not op.get("tags"):
            violations.append(f"{op['_where']}: no tag")
    assert not violations, _report("every operation has a summary and at least one tag", violations)


# The /v1 operations a caller reaches without credentials; every other one needs a principal.
PUBLIC_OPERATIONS = {"signUp", "issueToken", "acceptInvitation"}
SECURITY = [{"OAuth2PasswordBearer": []}, {"APIKeyHeader": []}]


def test_every_operation_needing_a_principal_declares_both_security_schemes(spec: dict[str, Any]) -> None:
    # The schemes are not dependencies of the routes (skybook.platform.deps.install_security_openapi
    # adds them): a client generator's "Authorize" and its credential handling rely on them.
    schemes = spec.get("components", {}).get("securitySchemes", {})
    violations = [
        f"securitySchemes lacks {name}" for name in ("OAuth2PasswordBearer", "APIKeyHeader") if name not in schemes
    ]
    if "OAuth2PasswordBearer" in schemes:
        flows = schemes["OAuth2PasswordBearer"]
        if flows.get("type") != "oauth2" or flows["flows"]["password"]["tokenUrl"] != "/v1/auth/token":
            violations.append(f"OAuth2PasswordBearer is not the password flow of /v1/auth/token: {flows}")
    if schemes.get("APIKeyHeader", {}) | {"description": None} != {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": None,
    }:
        violations.append(f"APIKeyHeader is not the X-API-Key header: {schemes.get('APIKeyHeader')}")
    public = set()
    for _, op in _operations(spec):
        if not op["_where"].split()[1].startswith("/v1/"):
            if "security" in op:
                violations.append(f"{op['_where']}: outside /v1 but declares security")
        elif op["operationId"] in PUBLIC_OPERATIONS:
            public.add(op["operationId"])
            if "security" in op:
                violations.append(f"{op['_where']}: public but declares security")
        elif op.get("security") != SECURITY:
            violations.append(f"{op['_where']}: security is {op.get('security')}, not {SECURITY}")
    if public != PUBLIC_OPERATIONS:
        violations.append(f"public operations not found: {sorted(PUBLIC_OPERATIONS - public)}")
    assert not violations, _report("every /v1 operation but log-in and sign-up declares both schemes", violations)


def test_every_tag_used_is_declared_and_every_declared_tag_is_used(spec: dict[str, Any]) -> None:
    declared = [t["name"] for t in spec.get("tags", [])]
    used = {tag for _, op in _operations(spec) for tag in op.get("tags", [])}
    violations = [f"tag {t!r} is used but not declared in the top-level tags" for t in sorted(used - set(declared))]
    violations += [f"tag {t!r} is declared but no operation uses it" for t in sorted(set(declared) - used)]
    violations += [f"top-level tag {t!r} has no description" for t in spec.get("tags", []) if not t.get("description")]
    assert not violations, _report("tags are declared, described and used", violations)


def test_every_request_body_has_an_example(spec: dict[str, Any]) -> None:
    violations: list[str] = []
    for _, op in _operations(spec):
        body = op.get("requestBody")
        if body is None:
            continue
        for media_type, content in body.get("content", {}).items():
            schema = _resolve(spec, content.get("schema", {}))
            if not (content.get("example") or content.get("examples") or schema.get("examples")):
                violations.append(f"{op['_where']}: {media_type} body has no example")
    assert not violations, _report("every request body has an example (schema or media type)", violations)


def _referenced_schemas(spec: dict[str, Any], schema: Any, seen: set[str]) -> Iterator[str]:
    """Names of the component schemas a schema refers to, directly or through nesting."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                yield name
                yield from _referenced_schemas(spec, _schemas(spec)[name], seen)
        for value in schema.values():
            yield from _referenced_schemas(spec, value, seen)
    elif isinstance(schema, list):
        for item in schema:
            yield from _referenced_schemas(spec, item, seen)


def test_every_request_body_refuses_unknown_fields_at_every_level(spec: dict[str, Any]) -> None:
    # Clients learn from the document that a misspelt field is an error, not silently dropped.
    violations: list[str] = []
    for _, op in _operations(spec):
        if "requestBody" not in op:
            continue
        for name in _referenced_schemas(spec, op["requestBody"], set()):
            schema = _schemas(spec)[name]
            if "properties" in schema and schema.get("additionalProperties") is not False:
                violations.append(f"{op['_where']}: {name} does not declare additionalProperties: false")
    assert not violations, _report("request bodies forbid unknown fields at every level", violations)


def _required_error_statuses(method: str, op: dict[str, Any]) -> set[str]:
    required: set[str] = set()
    takes_body = "requestBody" in op
    if op.get("parameters") or takes_body:
        required.add("422")
    if method in BODY_METHODS:
        required |= {"400", "413"}
    if takes_body:
        required.add("415")
    return required


def test_every_operation_declares_its_error_responses_as_problem_json(spec: dict[str, Any]) -> None:
    violations: list[str] = []
    for method, op in _operations(spec):
        responses: dict[str, Any] = op.get("responses", {})
        for status in sorted(_required_error_statuses(method, op) - set(responses)):
            violations.append(f"{op['_where']}: does not declare {status}")
        for status, response in responses.items():
            if status[0] not in "45":
                continue
            content = response.get("content", {})
            if PROBLEM_JSON not in content:
                violations.append(f"{op['_where']}: {status} is not {PROBLEM_JSON}")
            elif _resolve(spec, content[PROBLEM_JSON].get("schema", {})) is not _schemas(spec).get("ProblemDetail"):
                violations.append(f"{op['_where']}: {status} does not use the ProblemDetail schema")
            others = sorted(set(content) - {PROBLEM_JSON})
            if others:
                violations.append(f"{op['_where']}: {status} also claims {', '.join(others)}")
    assert not violations, _report(
        "errors are declared, and only as application/problem+json ProblemDetail", violations
    )


def _leaky_properties(spec: dict[str, Any], schema: dict[str, Any], where: str, seen: set[str]) -> Iterator[str]:
    ref = schema.get("$ref")
    if ref is not None:
        if ref in seen:
            return
        seen.add(ref)
    schema = _resolve(spec, schema)
    for name, prop in schema.get("properties", {}).items():
        if LEAKY_NAMES.search(name):
            yield f"{where}: property {name!r}"
        yield from _leaky_properties(spec, prop, f"{where}.{name}", seen)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _leaky_properties(spec, schema[key], where, seen)
    for key in ("allOf", "anyOf", "oneOf"):
        for part in schema.get(key, []):
            yield from _leaky_properties(spec, part, where, seen)


def test_no_server_error_response_exposes_a_stack_trace(spec: dict[str, Any]) -> None:
    violations: list[str] = []
    for _, op in _operations(spec):
        for status, response in op.get("responses", {}).items():
            if status.startswith("5") or status == "default":
                for media_type, content in response.get("content", {}).items():
                    where = f"{op['_where']} {status} {media_type}"
                    violations += _leaky_properties(spec, content.get("schema", {}), where, set())
    # Undeclared 500s are answered with a ProblemDetail too: it must not grow a trace field either.
    violations += _leaky_properties(spec, {"$ref": "#/components/schemas/ProblemDetail"}, "ProblemDetail", set())
    assert not violations, _report("no 5xx response schema carries a stack trace or exception details", violations)


def test_every_request_body_example_is_accepted_by_the_api(app: Any, spec: dict[str, Any]) -> None:
    # An example a client copies from the docs must not be refused with a 422.
    violations: list[str] = []
    examples_by_operation = {
        op["operationId"]: _resolve(spec, next(iter(op["requestBody"]["content"].values()))["schema"]).get(
            "examples", []
        )
        for _, op in _operations(spec)
        if "requestBody" in op
    }
    checked = 0
    # iter_route_contexts: since FastAPI 0.165 an included router's routes are not in app.routes.
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or route.body_field is None:
            continue
        model = route.body_field.field_info.annotation
        for example in examples_by_operation.get(route.operation_id, []):
            try:
                model.model_validate(example)
            except ValidationError as exc:
                violations.append(f"{route.operation_id}: example refused: {exc.errors(include_url=False)}")
            checked += 1
    assert checked >= 10, f"only {checked} examples checked: are the routes with a body found?"
    assert not violations, _report("request body examples pass the API's own validation", violations)
