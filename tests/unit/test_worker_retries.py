"""A worker's retry policy: which failures use up an event's attempts, and how long it waits."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]

from skybook.platform.errors import Busy
from skybook.platform.messaging.worker import WorkerOptions

OPTS = WorkerOptions(max_attempts=3, max_busy_retries=4, retry_base_delay=0.5)


def test_a_consumer_error_uses_up_attempts_and_gives_up_at_max_attempts() -> None:
    bug = RuntimeError("bug in the consumer")
    assert OPTS.after_failure(0, 0, bug) == (1, 0)
    assert OPTS.after_failure(1, 0, bug) == (2, 0)
    assert OPTS.after_failure(2, 0, bug) is None  # the third failure: dead letter


def test_busy_or_unreachable_database_failures_are_counted_apart_and_end_at_their_own_cap() -> None:
    for error in (Busy("the inventory is busy"), asyncpg.exceptions.ConnectionDoesNotExistError("gone")):
        counts: tuple[int, int] | None = (2, 0)  # one attempt left
        for busy in range(1, 5):
            counts = OPTS.after_failure(*counts, error)
            assert counts == (2, busy)
        assert OPTS.after_failure(2, 4, error) is None  # max_busy_retries used up


def test_the_wait_grows_with_every_failure_and_stops_at_the_longest_retry_queue() -> None:
    steps = [OPTS.retry_step(failures, busy) for failures, busy in ((0, 1), (1, 0), (1, 1), (0, 7), (2, 9))]
    assert steps == [1, 1, 2, 2, 2]  # retry queues exist for steps 1 .. max_attempts - 1
    assert [OPTS.delay(step) for step in (1, 2)] == [0.5, 1.0]


def test_with_a_single_attempt_busy_failures_still_have_a_delay_to_wait() -> None:
    once = WorkerOptions(max_attempts=1)
    assert once.after_failure(0, 0, RuntimeError("bug")) is None
    assert once.after_failure(0, 0, Busy("busy")) == (0, 1)
    assert (once.retry_steps, once.retry_step(0, 1)) == (1, 1)
