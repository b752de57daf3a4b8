"""The event backbone across processes: relay and workers as real subprocesses on PostgreSQL,
RabbitMQ and Kafka (librdkafka's in-memory mock cluster)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from skybook.platform.events import Event
from tests.backbone import recorder
from tests.backbone.conftest import (
    Processes,
    assert_exactly_once,
    assert_in_order_per_aggregate,
    effects,
    round_robin,
    wait_for,
    write_events,
)

pytestmark = pytest.mark.postgres

T, S = recorder.TASKS, recorder.STREAM


async def pending(engine: AsyncEngine, column: str) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text(f"SELECT count(*) FROM outbox WHERE {column} IS NULL")) or 0)


async def test_relay_and_two_workers_deliver_every_event_once_in_commit_order(
    engine: AsyncEngine, processes: Processes
) -> None:
    # Two relays: one leads, the other stands by; two workers share the queue and the group.
    processes.start("relay")
    processes.start("relay")
    processes.start("worker")
    processes.start("worker")
    events = await write_events(engine, round_robin(200, aggregates=8))

    await wait_for(engine, processes, {T: 200, S: 200})
    await asyncio.sleep(1)  # a duplicate effect, if any, would show up now

    assert_exactly_once(await effects(engine, T), events)
    stream = await effects(engine, S)
    assert_exactly_once(stream, events)
    assert_in_order_per_aggregate(stream)
    assert await pending(engine, "stream_sent_at") == 0
    assert await pending(engine, "tasks_sent_at") == 0


async def test_a_waiting_relay_is_woken_by_every_burst_and_misses_nothing_between_waits(
    engine: AsyncEngine, processes: Processes
) -> None:
    # Writers NOTIFY only while the relay waits (it holds its idle lock). With a poll interval far
    # longer than the bounded wait below, every burst must be delivered on a wake-up: a burst the
    # relay missed while going idle would sit in the outbox for 60 s and fail the wait.
    processes.start("relay", relay_poll_interval_seconds=60)
    processes.start("worker")
    written: list[Event] = []
    for burst in range(6):
        specs = round_robin(40, aggregates=4, start=burst * 40)
        # Four concurrent writers, so commits land while the relay publishes and while it goes idle.
        parts = await asyncio.gather(*(write_events(engine, specs[i::4]) for i in range(4)))
        written += [e for part in parts for e in part]
        await wait_for(engine, processes, {T: len(written), S: len(written)}, within=20)
        await asyncio.sleep(0.3 * (burst % 3))  # idle a while, or not at all, before the next burst

    await asyncio.sleep(1)
    assert_exactly_once(await effects(engine, T), written)
    assert_exactly_once(await effects(engine, S), written)


async def test_relay_killed_between_publish_and_mark_and_worker_killed_mid_batch_lose_nothing(
    engine: AsyncEngine, processes: Processes
) -> None:
    events = await write_events(engine, [(a, {**d, "sleep": 0.01}) for a, d in round_robin(300, aggregates=6)])

    # The relay publishes, the brokers confirm, and the process dies before marking the rows sent.
    crashed = processes.start("relay", relay_crash_after_publish="true")
    assert crashed.wait(timeout=60) == 70, processes.output()
    assert await pending(engine, "stream_sent_at") == 300 or await pending(engine, "tasks_sent_at") == 300

    processes.start("relay")  # publishes everything again: at least once
    worker = processes.start("worker", worker_prefetch=50)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(await effects(engine, T)) < 20:  # noqa: ASYNC110 - polling another process
        await asyncio.sleep(0.05)
    processes.kill(worker)  # kill -9 while a batch is being handled
    handled_before_kill = len(await effects(engine, T))
    assert 0 < handled_before_kill < 300

    processes.start("worker")
    await wait_for(engine, processes, {T: 300, S: 300})
    await asyncio.sleep(1)

    assert_exactly_once(await effects(engine, T), events)
    stream = await effects(engine, S)
    assert_exactly_once(stream, events)
    assert_in_order_per_aggregate(stream)


async def test_rabbitmq_outage_does_not_stop_kafka_and_drains_in_order_when_back(
    engine: AsyncEngine, processes: Processes
) -> None:
    dead = "amqp://guest:guest@127.0.0.1:1/"  # pragma: allowlist secret
    relay = processes.start("relay", rabbitmq_url=dead, relay_max_backoff_seconds=1)
    processes.start("worker")  # one worker: a single queue consumer keeps FIFO order
    first = await write_events(engine, round_robin(100, aggregates=5))

    # Kafka keeps flowing while RabbitMQ is unreachable; the task backlog waits in the outbox.
    await wait_for(engine, processes, {S: 100})
    assert len(await effects(engine, T)) == 0
    assert await pending(engine, "tasks_sent_at") == 100
    assert await pending(engine, "stream_sent_at") == 0

    # Writes keep committing during the outage; then the broker is back.
    second = await write_events(engine, round_robin(50, aggregates=5, start=100))
    processes.kill(relay)
    processes.start("relay")
    await wait_for(engine, processes, {T: 150, S: 150})
    await asyncio.sleep(1)

    for consumer in (T, S):
        rows = await effects(engine, consumer)
        assert_exactly_once(rows, first + second)
        assert_in_order_per_aggregate(rows)
    assert await pending(engine, "tasks_sent_at") == 0


async def test_kafka_outage_does_not_stop_rabbitmq_and_the_stream_catches_up_in_order(
    engine: AsyncEngine, processes: Processes
) -> None:
    relay = processes.start("relay", kafka_bootstrap_servers="127.0.0.1:1", relay_max_backoff_seconds=1)
    processes.start("worker")  # its Kafka consumer reads the (healthy) cluster the relay cannot reach
    first = await write_events(engine, round_robin(60, aggregates=3))

    await wait_for(engine, processes, {T: 60})
    assert len(await effects(engine, S)) == 0
    assert await pending(engine, "stream_sent_at") == 60

    second = await write_events(engine, round_robin(30, aggregates=3, start=60))
    processes.kill(relay)
    processes.start("relay")
    await wait_for(engine, processes, {T: 90, S: 90})
    await asyncio.sleep(1)

    stream = await effects(engine, S)
    assert_exactly_once(stream, first + second)
    assert_in_order_per_aggregate(stream)
    assert_exactly_once(await effects(engine, T), first + second)


async def test_a_lock_held_longer_than_every_attempt_delays_the_event_but_never_dead_letters_it(
    engine: AsyncEngine, processes: Processes
) -> None:
    # Lock contention is the database's state, not the event's fault: failures with "busy" do not
    # use up SKYBOOK_WORKER_MAX_ATTEMPTS (3 here). Before, the ticketing consumer dead-lettered a
    # payment this way and left a paid order without tickets.
    processes.start("relay")
    worker = processes.start("worker", database_lock_timeout_ms=200)
    async with engine.connect() as holder:  # its transaction begins with the first statement
        await holder.execute(sa.text("SELECT id FROM backbone_gate WHERE id = 1 FOR UPDATE"))
        [blocked] = await write_events(engine, [("agg-gate", {"seq": 0, "locked": True})])
        others = await write_events(engine, round_robin(10, aggregates=2, start=1))

        # Hold the lock until both consumers have failed on it more often than they may attempt.
        log = processes.logs / f"worker-{processes.running.index(worker)}.log"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            failed = {c: log.read_text().count(f"consumer {c} failed on event {blocked.id}") for c in (T, S)}
            if min(failed.values()) > 3:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail(f"the consumers did not retry past their attempts: {failed}\n{processes.output()}")
        # The tasks queue keeps flowing meanwhile (the message waits in a retry queue).
        assert {r.event_id for r in await effects(engine, T)} >= {str(e.id) for e in others}
        await holder.rollback()

    await wait_for(engine, processes, {T: 11, S: 11})
    await asyncio.sleep(1)
    assert_exactly_once(await effects(engine, T), [blocked, *others])
    assert_exactly_once(await effects(engine, S), [blocked, *others])
    listed = processes.run("dlq list")
    assert (listed.returncode, listed.stdout.strip()) == (0, ""), processes.output()


async def test_poison_message_is_dead_lettered_without_blocking_others_and_replays(
    engine: AsyncEngine, processes: Processes
) -> None:
    processes.start("relay")
    processes.start("worker")
    specs = round_robin(30, aggregates=3)
    specs.insert(10, ("agg-poison", {"seq": 0, "poison": True}))
    events = await write_events(engine, specs)
    poison = events[10]
    healthy = events[:10] + events[11:]

    # Every healthy event is handled by both consumers although the poison one keeps failing.
    await wait_for(engine, processes, {T: 30, S: 30})
    deadline = time.monotonic() + 60
    letters: list[dict[str, object]] = []
    while time.monotonic() < deadline and len(letters) < 2:
        listed = processes.run("dlq list")
        assert listed.returncode == 0, listed.stderr
        letters = [json.loads(line) for line in listed.stdout.splitlines()]
        await asyncio.sleep(0.5)
    assert sorted(str(letter["consumer"]) for letter in letters) == [S, T], processes.output()
    for letter in letters:
        assert letter["event_id"] == str(poison.id)
        assert letter["attempts"] == 3  # SKYBOOK_WORKER_MAX_ATTEMPTS
        assert "poison message" in str(letter["error"])
    assert_exactly_once(await effects(engine, T), healthy)
    assert_exactly_once(await effects(engine, S), healthy)

    # Fixed; replay: the task goes back to its queue (the worker handles it), the stream event is handled here.
    async with engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO backbone_cured VALUES (:e)"), {"e": str(poison.id)})
    replayed = processes.run("dlq replay --all")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    outcomes = sorted(json.loads(line)["outcome"] for line in replayed.stdout.splitlines())
    assert outcomes == ["handled", "requeued"]

    await wait_for(engine, processes, {T: 31, S: 31})
    await asyncio.sleep(1)
    assert_exactly_once(await effects(engine, T), events)
    assert_exactly_once(await effects(engine, S), events)
    assert processes.run("dlq list").stdout.strip() == ""
