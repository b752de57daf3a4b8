"""What the app factory leaves behind: a process that builds many apps keeps none of them."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import httpx

from skybook.app import create_app
from skybook.bootstrap import bootstrap
from skybook.settings import Settings


async def test_a_dropped_app_frees_its_container(tmp_path: Path) -> None:
    """A process that builds many apps (the tests, the document tools) keeps none of their engines."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        secret_key="hardening-test-secret-0123456789",  # pragma: allowlist secret - a test-only key
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",
        run_workers=False,
    )
    container = bootstrap(settings)
    app = create_app(container)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        for path in ("/health", "/ready", "/asyncapi.json"):
            assert (await c.get(path)).status_code == 200
    await container.engine.dispose()
    gone = weakref.ref(container)
    del container, app, c
    gc.collect()
    assert gone() is None, "something process-wide still holds the app's container"
