"""Settings come from SKYBOOK_* variables and refuse placeholder secrets outside development."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from skybook.settings import Settings


def test_placeholder_secret_is_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYBOOK_ENVIRONMENT", "production")
    monkeypatch.setenv("SKYBOOK_SECRET_KEY", "change-me")
    with pytest.raises(ValidationError, match="SKYBOOK_SECRET_KEY"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_placeholder_secret_is_accepted_in_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKYBOOK_SECRET_KEY", raising=False)
    monkeypatch.setenv("SKYBOOK_ENVIRONMENT", "development")
    assert Settings(_env_file=None).environment == "development"  # type: ignore[call-arg]


def test_database_defaults_to_a_sqlite_file_in_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.delenv("SKYBOOK_DATABASE_URL", raising=False)
    monkeypatch.setenv("SKYBOOK_DATA_DIR", str(tmp_path))
    url = Settings(_env_file=None).resolved_database_url  # type: ignore[call-arg]
    assert url == f"sqlite+aiosqlite:///{tmp_path}/skybook.db"


def test_postgres_url_switches_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYBOOK_DATABASE_URL", "postgresql+asyncpg://root@127.0.0.1/skybook")
    assert Settings(_env_file=None).resolved_database_url.startswith("postgresql+asyncpg://")  # type: ignore[call-arg]


def test_env_example_documents_every_setting() -> None:
    from pathlib import Path

    documented = {
        line.split("=", 1)[0].removeprefix("SKYBOOK_").lower()
        for line in (Path(__file__).parents[2] / ".env.example").read_text().splitlines()
        if line.startswith("SKYBOOK_")
    }
    assert documented == set(Settings.model_fields)


@pytest.mark.parametrize(
    ("outbox", "inbox"),
    [("168", "192"), ("168", "168"), ("168", "0"), ("0", "0"), ("2", "2")],
)
def test_retentions_that_keep_inbox_entries_as_long_as_their_events_are_accepted(
    monkeypatch: pytest.MonkeyPatch, outbox: str, inbox: str
) -> None:
    monkeypatch.setenv("SKYBOOK_OUTBOX_RETENTION_HOURS", outbox)
    monkeypatch.setenv("SKYBOOK_INBOX_RETENTION_HOURS", inbox)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.outbox_retention_hours, settings.inbox_retention_hours) == (float(outbox), float(inbox))


@pytest.mark.parametrize(
    ("outbox", "inbox", "named"),
    [
        # An inbox entry deleted before its event could be redelivered would let it take effect twice.
        ("168", "100", "SKYBOOK_INBOX_RETENTION_HOURS"),
        ("0", "192", "SKYBOOK_INBOX_RETENTION_HOURS"),
        # Too short for the audit's margin next to the cut-off.
        ("1", "192", "SKYBOOK_OUTBOX_RETENTION_HOURS"),
        ("-1", "192", "outbox_retention_hours"),
    ],
)
def test_retentions_that_would_drop_inbox_entries_first_are_refused(
    monkeypatch: pytest.MonkeyPatch, outbox: str, inbox: str, named: str
) -> None:
    monkeypatch.setenv("SKYBOOK_OUTBOX_RETENTION_HOURS", outbox)
    monkeypatch.setenv("SKYBOOK_INBOX_RETENTION_HOURS", inbox)
    with pytest.raises(ValidationError, match=named):
        Settings(_env_file=None)  # type: ignore[call-arg]
