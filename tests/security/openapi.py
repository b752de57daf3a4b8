"""The operations of the app's own OpenAPI document, as the security suites walk them.

The suites derive what to test from ``app.openapi()`` rather than from a hand-kept list, so a
route added tomorrow is in the BOLA matrix and the mass-assignment sweep the day it is added
(and fails them until someone writes its recipe or documents why it is exempt).
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from skybook.app import create_app
from skybook.bootstrap import bootstrap
from skybook.settings import Settings

HTTP_METHODS = ("get", "put", "post", "delete", "patch")
JSON = "application/json"
PATH_PARAM = re.compile(r"{([^}]+)}")


# Building the app does no I/O: an engine on an address nothing listens on is never connected.
_NEVER_CONNECTED = "postgresql+asyncpg://nobody@127.0.0.1:9/none"


@functools.cache
def document_app() -> Any:
    """An app that only serves its OpenAPI document (at collection time, before any database exists)."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        secret_key="test-only-secret-key-0123456789",
        database_url=_NEVER_CONNECTED,
        run_workers=False,
    )
    return create_app(bootstrap(settings))


@dataclass(frozen=True)
class Operation:
    """One operation of the document."""

    method: str
    path: str
    operation_id: str
    path_params: tuple[str, ...]
    body_media_type: str | None
    body_schema: dict[str, Any] | None
    secured: bool

    @property
    def label(self) -> str:
        return f"{self.operation_id} ({self.method.upper()} {self.path})"

    @property
    def takes_json_body(self) -> bool:
        return self.body_media_type == JSON

    def url(self, values: dict[str, Any]) -> str:
        missing = set(self.path_params) - set(values)
        assert not missing, f"{self.label}: no value for path parameters {sorted(missing)}"
        return self.path.format(**{name: values[name] for name in self.path_params})

    async def send(
        self,
        client: httpx.AsyncClient,
        path_values: dict[str, Any] | None = None,
        body: Any = None,
        **kwargs: Any,
    ) -> httpx.Response:
        url = self.url(path_values or {})
        if self.body_media_type is None or body is None:
            return await client.request(self.method.upper(), url, **kwargs)
        if self.takes_json_body:
            return await client.request(self.method.upper(), url, json=body, **kwargs)
        return await client.request(self.method.upper(), url, data=body, **kwargs)


def operations(spec: dict[str, Any]) -> list[Operation]:
    """Every operation of the document, in document order."""
    found: list[Operation] = []
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            op = item.get(method)
            if op is None:
                continue
            content: dict[str, Any] = op.get("requestBody", {}).get("content", {})
            media_type = next(iter(content), None)
            schema = resolve(spec, content[media_type]["schema"]) if media_type else None
            found.append(
                Operation(
                    method=method,
                    path=path,
                    operation_id=op["operationId"],
                    path_params=tuple(PATH_PARAM.findall(path)),
                    body_media_type=media_type,
                    body_schema=schema,
                    secured=bool(op.get("security")),
                )
            )
    return found


def by_id(spec: dict[str, Any]) -> dict[str, Operation]:
    return {op.operation_id: op for op in operations(spec)}


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a ``$ref`` (and a one-member ``allOf`` wrapper) to the schema it names."""
    while True:
        if "$ref" in schema:
            schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        elif len(schema.get("allOf", [])) == 1:
            schema = schema["allOf"][0]
        else:
            return schema


def nested_object_paths(spec: dict[str, Any], schema: dict[str, Any]) -> list[tuple[str | int, ...]]:
    """Where a body nests objects with declared properties: ``("passengers",)``, ``("segments", 0)``...

    Array members are addressed by their first element; maps (``additionalProperties``) are not
    objects with fields and are left out. Recursion stops at schemas already visited.
    """
    out: list[tuple[str | int, ...]] = []

    def walk(node: dict[str, Any], where: tuple[str | int, ...], seen: frozenset[int]) -> None:
        node = resolve(spec, node)
        if id(node) in seen:
            return
        seen = seen | {id(node)}
        for name, prop in node.get("properties", {}).items():
            target = resolve(spec, prop)
            options = [resolve(spec, o) for o in target.get("anyOf", [target])]
            for option in options:
                if option.get("type") == "object" and option.get("properties"):
                    out.append((*where, name))
                    walk(option, (*where, name), seen)
                elif option.get("type") == "array":
                    items = resolve(spec, option.get("items", {}))
                    if items.get("type") == "object" and items.get("properties"):
                        out.append((*where, name, 0))
                        walk(items, (*where, name, 0), seen)

    walk(schema, (), frozenset())
    return out


def random_id() -> str:
    return str(uuid.uuid4())
