"""A lock or serialization conflict raised outside a unit of work is a retryable 503, never a 500.

Units of work turn these SQLSTATEs into ``Busy`` themselves; the idempotency-key middleware runs
its own short transactions before any route, and a lock timeout there used to surface as a 500.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from starlette.requests import Request

from skybook.platform.dberrors import database_busy
from skybook.platform.http import _unexpected


class _DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"driver error {sqlstate}")
        self.sqlstate = sqlstate


def _wrapped(sqlstate: str) -> sa.exc.DBAPIError:
    # As SQLAlchemy raises it: the driver's error as ``orig`` and as the cause.
    orig = _DriverError(sqlstate)
    err = sa.exc.DBAPIError("INSERT INTO idempotency_keys ...", {}, orig)
    err.__cause__ = orig
    return err


def _request() -> Request:
    return Request({"type": "http", "method": "POST", "path": "/v1/holds", "headers": [], "state": {}})


@pytest.mark.parametrize("sqlstate", ["55P03", "40P01", "40001"])
async def test_a_lock_timeout_deadlock_or_serialization_failure_answers_503_busy(sqlstate: str) -> None:
    answer = await _unexpected(_request(), _wrapped(sqlstate))
    assert answer.status_code == 503
    assert answer.media_type == "application/problem+json" or answer.headers["content-type"].startswith(
        "application/problem+json"
    )
    assert json.loads(bytes(answer.body))["code"] == "busy"
    assert answer.headers["retry-after"]


async def test_other_database_errors_are_not_called_busy() -> None:
    assert not database_busy(_wrapped("23505"))  # a unique violation is not a retryable conflict
    assert not database_busy(RuntimeError("not from the database"))
