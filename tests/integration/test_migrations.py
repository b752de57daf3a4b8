"""The migrations build the schema the code describes: no table, column, index or type differs.

Every test database is built by the migrations (``tests.conftest``), while the statements are
built from ``skybook.schema.metadata``; a model changed without its migration (or the other way
round) would otherwise show up only as a failing statement in production.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from skybook.bootstrap import Container
from skybook.schema import metadata


async def test_the_migrated_database_matches_the_models(container: Container) -> None:
    def ours(name: str | None, kind: str, parent: object) -> bool:
        # Other tests share the database and create tables of their own (tests/backbone).
        return kind != "table" or name in metadata.tables

    def differences(sync_conn: object) -> list[object]:
        opts = {"compare_type": True, "include_name": ours}
        context = MigrationContext.configure(sync_conn, opts=opts)  # type: ignore[arg-type]
        return list(compare_metadata(context, metadata))

    async with container.engine.connect() as conn:
        found = await conn.run_sync(differences)
    assert found == []
