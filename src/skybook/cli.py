"""Command line: ``skybook serve | db upgrade | seed demo | schedule import | audit | asyncapi``."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

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
    from skybook.ops.audit import Subscription, markers_for, report, run_audit

    settings = Settings()
    # Scaled out, the relay marks each broker it publishes to; embedded, the dispatcher marks dispatched_at.
    markers = markers_for(
        kafka=bool(getattr(settings, "kafka_bootstrap_servers", None)),
        rabbitmq=bool(getattr(settings, "rabbitmq_url", None)),
    )

    async def run() -> dict[str, object]:
        container = bootstrap(settings)
        try:
            subs = [Subscription(c.name, c.event_types) for c in container.consumers()]
            return report(await run_audit(container.engine, subs, markers), max_rows)
        finally:
            await container.engine.dispose()

    document = asyncio.run(run())
    typer.echo(json.dumps(document, indent=2))
    if document["passed"] != document["total"]:
        raise typer.Exit(1)


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
