"""The routes' dependency trees stay small: FastAPI walks every node of a route's tree on every request.

FastAPI resolves a node again for each place it appears (a cached value is reused, but the walk
and its bookkeeping are not), and that walk was about 45 % of the framework's CPU per request when
each principal check depended on ``current_principal`` and that on the two security schemes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from skybook.platform.deps import GUARD, current_principal
from tests.api.test_openapi_contract import app  # noqa: F401 - the app fixture, built without a database


@pytest.fixture(scope="module")
def routes(app: Any) -> list[Any]:  # noqa: F811 - the imported fixture
    return [r for r in iter_route_contexts(app.routes) if isinstance(r.original_route, APIRoute)]


def _nodes(dependant: Dependant) -> Iterator[Dependant]:
    for dep in dependant.dependencies:
        yield dep
        yield from _nodes(dep)


def _needs_principal(dep: Dependant) -> bool:
    qualname = getattr(dep.call, "__qualname__", "")
    return dep.call in (GUARD.dependency, current_principal) or qualname.startswith(
        ("require_roles.", "require_scope.")
    )


def test_every_v1_route_but_log_in_and_sign_up_has_the_guard(routes: list[Any]) -> None:
    unguarded = sorted(
        r.operation_id
        for r in routes
        if r.path_format.startswith("/v1/") and GUARD.dependency not in [d.call for d in r.dependant.dependencies]
    )
    assert unguarded == ["acceptInvitation", "issueToken", "signUp"]


def test_no_route_resolves_a_dependency_twice_and_principal_checks_are_leaves(routes: list[Any]) -> None:
    violations: list[str] = []
    for route in routes:
        calls = [getattr(d.call, "__qualname__", repr(d.call)) for d in _nodes(route.dependant)]
        violations += [
            f"{route.operation_id}: {c} appears {calls.count(c)} times" for c in set(calls) if calls.count(c) > 1
        ]
        violations += [
            f"{route.operation_id}: {d.call.__qualname__} has sub-dependencies"  # type: ignore[union-attr]
            for d in _nodes(route.dependant)
            if _needs_principal(d) and d.dependencies
        ]
    assert len(routes) > 40
    assert not violations, "\n".join(sorted(violations))
