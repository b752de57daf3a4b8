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
