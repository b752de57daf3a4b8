"""Command line: ``skybook serve | api | relay | worker | dlq | db | seed | schedule | users | audit | asyncapi``."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from skybook.settings import Settings

app = typer.Typer(help="Skybook airline reservation platform.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
seed_app = typer.Typer(help="Load data.", no_args_is_help=True)
schedule_app = typer.Typer(help="Airline schedules.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(seed_app, name="seed")
app.add_typer(schedule_app, name="schedule")
users_app = typer.Typer(help="Accounts.", no_args_is_help=True)
app.add_typer(users_app, name="users")
dlq_app = typer.Typer(help="Dead-letter queue of the workers.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default SKYBOOK_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default SKYBOOK_PORT).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (PostgreSQL only).")] = 1,
) -> None:
    """Run the platform: API plus, in the embedded default, events and the hold sweeper."""
    import uvicorn

    settings = Settings()
    if workers > 1 and settings.resolved_database_url.startswith("sqlite"):
        raise typer.BadParameter("several workers need PostgreSQL (SQLite has one writer)")
    uvicorn.run(
        "skybook.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default SKYBOOK_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default SKYBOOK_PORT).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (PostgreSQL only).")] = 1,
) -> None:
    """Run only the HTTP API (no in-process event delivery or sweeper): scaled out beside relay and worker."""
    import os

    # The app factory reads its settings from the environment in every uvicorn worker process.
    os.environ["SKYBOOK_RUN_WORKERS"] = "false"
    serve(host=host, port=port, workers=workers)


def _backbone(settings: Settings) -> tuple[Any, list[Any], Any]:
    """The container, every consumer (built-in and SKYBOOK_EXTRA_CONSUMERS) and the broker names."""
    from skybook.bootstrap import bootstrap
    from skybook.platform.messaging import Names, check_unique, load_consumers

    container = bootstrap(settings)
    consumers = container.consumers() + load_consumers(settings.extra_consumers)
    check_unique(consumers)
    return container, consumers, Names(settings.broker_prefix)


def _delivery_markers(settings: Settings) -> tuple[str, ...]:
    """The outbox columns that mean "delivered" here: the relay's per broker when scaled out, else
    the embedded dispatcher's (``platform.retention.delivery_markers``)."""
    from skybook.platform.retention import delivery_markers

    return delivery_markers(kafka=bool(settings.kafka_bootstrap_servers), rabbitmq=bool(settings.rabbitmq_url))


def _run_until_signal(main: Any, stop: Any) -> None:
    """Run a coroutine; SIGTERM and SIGINT ask it to stop cleanly."""
    import signal

    from skybook.platform.heap import settle_heap

    settle_heap()

    async def runner() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        await main

    try:
        # uvloop (installed with uvicorn[standard]) cuts the event loop's own CPU per message,
        # which is a large share of what a relay or worker spends on each event.
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is not available on every platform
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as run:
        run.run(runner())


@app.command()
def relay() -> None:
    """Publish the outbox to Kafka and RabbitMQ until stopped (several relays elect one leader)."""
    from skybook.platform.db import listen_dsn
    from skybook.platform.logs import configure_logging
    from skybook.platform.messaging.metrics import serve_metrics
    from skybook.platform.messaging.relay import Relay, RelayOptions

    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    container, consumers, names = _backbone(settings)
    publishers: list[Any] = []
    if settings.kafka_bootstrap_servers:
        from skybook.platform.messaging.kafka import KafkaPublisher

        publishers.append(KafkaPublisher(settings.kafka_bootstrap_servers, names))
    if settings.rabbitmq_url:
        from skybook.platform.messaging.rabbitmq import RabbitPublisher

        publishers.append(
            RabbitPublisher(
                settings.rabbitmq_url, names, consumers, events_per_message=settings.rabbitmq_events_per_message
            )
        )
    if not publishers:
        raise typer.BadParameter("set SKYBOOK_KAFKA_BOOTSTRAP_SERVERS and/or SKYBOOK_RABBITMQ_URL")
    serve_metrics(settings.backbone_metrics_port, settings.host)
    runner = Relay(
        container.engine,
        container.clock,
        publishers,
        RelayOptions(
            batch_size=settings.relay_batch_size,
            poll_interval=settings.relay_poll_interval_seconds,
            linger=settings.relay_linger_ms / 1000,
            max_backoff=settings.relay_max_backoff_seconds,
            crash_after_publish=settings.relay_crash_after_publish,
        ),
        listen_url=listen_dsn(settings.resolved_database_url),
    )
    _run_until_signal(runner.run(), runner.stop)


@app.command()
def worker() -> None:
    """Run every event consumer from RabbitMQ (tasks) and Kafka (stream), and the hold sweeper, until stopped."""
    from skybook.platform.logs import configure_logging
    from skybook.platform.messaging.metrics import serve_metrics
    from skybook.platform.messaging.worker import Worker, WorkerOptions

    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    container, consumers, names = _backbone(settings)
    serve_metrics(settings.backbone_metrics_port, settings.host)
    runner = Worker(
        consumers,
        container.consumer_uow,
        container.clock,
        names,
        WorkerOptions(
            prefetch=settings.worker_prefetch,
            max_attempts=settings.worker_max_attempts,
            max_busy_retries=settings.worker_max_busy_retries,
            retry_base_delay=settings.worker_retry_base_delay_seconds,
            kafka_fetch_wait_max_ms=settings.kafka_fetch_wait_max_ms,
        ),
        rabbitmq_url=settings.rabbitmq_url,
        kafka_bootstrap_servers=settings.kafka_bootstrap_servers,
    )

    async def work() -> None:
        from skybook.notifications.webhooks import run_webhook_sender
        from skybook.periodic import run_periodic_jobs

        # `skybook api` runs no periodic jobs, so the workers release expired holds, delete what is
        # past its retention and send the tenant webhooks; several workers doing so at once is safe
        # (SKIP LOCKED, small idempotent deletes; see the modules).
        loops = [
            asyncio.create_task(run_periodic_jobs(container, _delivery_markers(settings)), name="periodic-jobs"),
            asyncio.create_task(run_webhook_sender(container), name="webhook-sender"),
        ]
        try:
            await runner.run()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    _run_until_signal(work(), runner.stop)


@dlq_app.command("list")
def dlq_list(
    all_: Annotated[bool, typer.Option("--all", help="Include letters already replayed.")] = False,
) -> None:
    """Print the dead letters (one JSON object a line), oldest first."""
    from skybook.platform.messaging.deadletters import list_dead_letters

    container, _consumers, _names = _backbone(Settings())

    async def run() -> list[dict[str, Any]]:
        try:
            return await list_dead_letters(container.uow, include_replayed=all_)
        finally:
            await container.engine.dispose()

    for letter in asyncio.run(run()):
        typer.echo(json.dumps(letter))


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="Dead letter ids (see dlq list).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every letter not replayed yet.")] = False,
) -> None:
    """Deliver dead letters again: tasks back onto their queue, stream events handled here."""
    from skybook.platform.messaging.deadletters import replay_dead_letters

    if not ids and not all_:
        raise typer.BadParameter("give dead letter ids or --all")
    settings = Settings()
    container, consumers, names = _backbone(settings)

    async def run() -> list[dict[str, Any]]:
        try:
            return await replay_dead_letters(
                container.uow,
                container.clock,
                consumers,
                names,
                ids=None if all_ else list(ids or []),
                rabbitmq_url=settings.rabbitmq_url,
            )
        finally:
            await container.engine.dispose()

    outcomes = asyncio.run(run())
    for outcome in outcomes:
        typer.echo(json.dumps(outcome))
    if any(o["outcome"] not in ("requeued", "handled") for o in outcomes):
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Migrate the database schema to the latest (or the given) revision."""
    from skybook.platform.migrate import upgrade

    settings = Settings()
    if settings.resolved_database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url, revision)
    typer.echo(f"database at {revision}")


@seed_app.command("demo")
def seed_demo(
    days: Annotated[int, typer.Option(min=1, max=366, help="Days of flights from tomorrow.")] = 14,
) -> None:
    """Load the demo network: airports, aircraft and a schedule of dated flights."""
    from skybook.seed.demo import DEMO_ACCOUNTS, DEMO_PASSWORD
    from skybook.seed.demo import seed_demo as run

    result = asyncio.run(run(Settings(), days=days))
    typer.echo(json.dumps(result))
    typer.echo("Demo accounts (development only), password " + DEMO_PASSWORD + ":")
    for _tenant, _kind, _plan, email, role in DEMO_ACCOUNTS:
        typer.echo(f"  {role.value:<15} {email}")


@schedule_app.command("import")
def schedule_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Schedule JSON file.")],
    start: Annotated[str | None, typer.Option("--from", help="First date (YYYY-MM-DD), default tomorrow.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Last date, default 14 days after --from.")] = None,
) -> None:
    """Import a schedule file (the same shape as POST /v1/schedules/import); idempotent."""
    from skybook.seed.demo import import_schedule_file

    first = date.fromisoformat(start) if start else datetime.now(UTC).date() + timedelta(days=1)
    last = date.fromisoformat(end) if end else first + timedelta(days=13)
    result = asyncio.run(import_schedule_file(Settings(), file, first, last))
    typer.echo(json.dumps(result))


@app.command()
def audit(
    max_rows: Annotated[int, typer.Option(min=0, help="Failing rows listed per check.")] = 50,
) -> None:
    """Check the whole database for consistency; prints JSON, exits 1 when a check fails."""
    from skybook.bootstrap import bootstrap
    from skybook.ops.audit import Subscription, audit_since, report, run_audit
    from skybook.platform.messaging import load_consumers
    from skybook.platform.retention import Retention

    settings = Settings()
    markers = _delivery_markers(settings)
    retention = Retention.of(settings.outbox_retention_hours, settings.inbox_retention_hours, markers)

    async def run() -> dict[str, object]:
        container = bootstrap(settings)
        try:
            subs = [
                Subscription(c.name, c.event_types)
                for c in container.consumers() + load_consumers(settings.extra_consumers)
            ]
            since = audit_since(container.clock.now(), retention.outbox)
            return report(await run_audit(container.engine, subs, markers, since), max_rows)
        finally:
            await container.engine.dispose()

    document = asyncio.run(run())
    typer.echo(json.dumps(document, indent=2))
    if document["passed"] != document["total"]:
        raise typer.Exit(1)


@app.command()
def prune() -> None:
    """Delete delivered outbox events and inbox entries past their retention now; prints the counts as JSON.

    The workers (and the embedded server) do the same every SKYBOOK_RETENTION_INTERVAL_SECONDS.
    """
    from skybook.bootstrap import bootstrap
    from skybook.periodic import prune_once

    settings = Settings()

    async def run() -> dict[str, int]:
        container = bootstrap(settings)
        try:
            pruned = await prune_once(container, _delivery_markers(settings))
            return {"outbox_deleted": pruned.outbox, "inbox_deleted": pruned.inbox}
        finally:
            await container.engine.dispose()

    typer.echo(json.dumps(asyncio.run(run())))


@users_app.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(help="E-mail of the platform admin.")],
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="At least 12 characters.")
    ],
    tenant: Annotated[str, typer.Option(help="Name of the operator tenant.")] = "Skybook Air",
) -> None:
    """Create the first platform admin (and the operator tenant) of a deployment."""
    from skybook.seed.demo import create_platform_admin

    created = asyncio.run(create_platform_admin(Settings(), email=email, password=password, tenant=tenant))
    typer.echo("created" if created else "exists already")


@app.command("asyncapi")
def asyncapi(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", dir_okay=False, help="Write to this file (default: stdout).")
    ] = None,
) -> None:
    """Print or write the AsyncAPI 3.0 document of every event channel and message."""
    from skybook.asyncapi import build_asyncapi
    from skybook.bootstrap import bootstrap

    container = bootstrap(Settings())  # builds the object graph only; no connection is opened
    text = json.dumps(build_asyncapi(container.consumers()), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}", err=True)


if __name__ == "__main__":  # pragma: no cover
    app()
