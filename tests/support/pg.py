"""A private Postgres cluster for tests, and migrating a database by hand."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bot.store.embedded import EmbeddedPostgres

TEMPLATE_DB = "bot_template"


def new_test_cluster(prefix: str) -> tuple[Path, EmbeddedPostgres]:
    """A private, started Postgres cluster for tests, under a fresh /tmp directory the postgres
    user can traverse (remove the directory after `server.stop()`)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(base, 0o755)
    server = EmbeddedPostgres(base / "pgdata", dbname="postgres", fast_unsafe=True)
    server.start()
    return base, server


def _migrate_sync(dsn: str) -> None:
    import asyncio

    import asyncpg

    from bot.store.migrate import migrate

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(run())
