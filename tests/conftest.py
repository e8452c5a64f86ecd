"""Shared fixtures: a real PostgreSQL server for the whole session, a fresh database per test.

The server is a private cluster (bot.store.embedded) in a temp directory, on a unix socket,
with durability off for speed. It works as root (server runs as `postgres` via runuser) and as
a normal user. Each test gets its own database cloned from a migrated template, dropped after.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from bot.store.embedded import EmbeddedPostgres
from tests.support.pg import TEMPLATE_DB, _migrate_sync, new_test_cluster
from tests.support.shared_data import (
    shared_data_or_skip,
    symbols30,
)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return shared_data_or_skip()




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


# --- the engine's small real bundle (tests/support/engine.py) ---------------------------------


@pytest.fixture(scope="session")
def engine_source() -> object:
    """Real CSV candles of ../shared/data, each file parsed once per session."""
    from tests.support.engine import CsvSource

    return CsvSource(shared_data_or_skip())


@pytest.fixture(scope="session")
def engine_bundle(engine_source: object, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> object:
    """A small bundle trained on real candles (5 symbols, 9 days), cached across sessions."""
    from models.bundle.directory import load_bundle
    from tests.support.engine import train_bundle

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


# --- the paper/live daemon tests' book and bundle (tests/support/paper_daemon.py) -------------


@pytest.fixture(scope="module")
def book30() -> object:
    """The 30 symbols' real candles as the simulator's order book (once per module)."""
    from bot.exchange_sim.replay import CandleBook

    return CandleBook.from_directory(shared_data_or_skip(), symbols30())


@pytest.fixture(scope="module")
def bundle_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real bundle that trades (zero-cost training account), cached across sessions."""
    from tests.support.paper_daemon import live_bundle

    return live_bundle(Path(request.config.cache.mkdir("live-bundles")), tmp_path_factory.mktemp("live-train"))
