"""Shared fixtures: a real PostgreSQL server for the whole session, a fresh database per test.

The server is a private cluster (bot.store.embedded) in a temp directory, on a unix socket,
with durability off for speed. It works as root (server runs as `postgres` via runuser) and as
a normal user. Each test gets its own database cloned from a migrated template, dropped after.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from bot.store.embedded import EmbeddedPostgres

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA_DIR = SHARED / "data" / "candles_1m"
SYMBOLS30_FILE = SHARED / "data" / "symbols30.txt"
TEMPLATE_DB = "bot_template"


def shared_data_or_skip() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"real candle data not found at {DATA_DIR} (../shared is absent)")
    return DATA_DIR


def symbols30() -> list[str]:
    shared_data_or_skip()
    return [s.strip() for s in SYMBOLS30_FILE.read_text().split() if s.strip()]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return shared_data_or_skip()


def new_test_cluster(prefix: str) -> tuple[Path, EmbeddedPostgres]:
    """A private, started Postgres cluster for tests, under a fresh /tmp directory the postgres
    user can traverse (remove the directory after `server.stop()`)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(base, 0o755)
    server = EmbeddedPostgres(base / "pgdata", dbname="postgres", fast_unsafe=True)
    server.start()
    return base, server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    base, server = new_test_cluster("bot-test-pg-")
    server.create_database(TEMPLATE_DB)
    _migrate_sync(server.dsn(TEMPLATE_DB))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


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


@pytest.fixture
def make_db(pg_server: EmbeddedPostgres) -> Iterator[Callable[[], str]]:
    """Factory of fresh, migrated databases for this test (all dropped after it)."""
    names: list[str] = []

    def make() -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        pg_server.create_database(name, template=TEMPLATE_DB)
        names.append(name)
        return pg_server.dsn(name)

    try:
        yield make
    finally:
        for name in names:
            pg_server.drop_database(name)


@pytest.fixture
def db_dsn(make_db: Callable[[], str]) -> str:
    """DSN of a fresh, migrated database for this test only."""
    return make_db()


@pytest.fixture
def empty_db_dsn(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """DSN of a fresh database with no schema at all (for migration tests)."""
    name = "e_" + uuid.uuid4().hex[:12]
    pg_server.create_database(name)
    try:
        yield pg_server.dsn(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
async def store(db_dsn: str) -> AsyncIterator[object]:
    from bot.store.db import Store

    s = await Store.connect(db_dsn, pool_min=1, pool_max=4)
    try:
        yield s
    finally:
        await s.close()


# --- the engine's small real bundle (tests/engine_support.py) ---------------------------------


@pytest.fixture(scope="session")
def engine_source() -> object:
    """Real CSV candles of ../shared/data, each file parsed once per session."""
    from tests.engine_support import CsvSource

    return CsvSource(shared_data_or_skip())


@pytest.fixture(scope="session")
def engine_bundle(engine_source: object, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> object:
    """A small bundle trained on real candles (5 symbols, 9 days), cached across sessions."""
    from models.bundle.directory import load_bundle
    from tests.engine_support import train_bundle

    cache = Path(request.config.cache.mkdir("engine-bundles"))
    return load_bundle(train_bundle(engine_source, tmp_path_factory.mktemp("engine-models"), cache_root=cache))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test`), hand out the `slow` tests first: the workers then start
    with the long daemon and training runs and fill the rest of their time with the short ones,
    instead of one worker ending the suite alone with a 2-minute test. The order is the same on
    every worker (xdist requires it) and each group keeps pytest's own order."""
    if not hasattr(config, "workerinput") and config.getoption("dist", "no") == "no":
        return
    items.sort(key=lambda it: it.get_closest_marker("slow") is None)
