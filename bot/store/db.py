"""The `Store` facade: one asyncpg pool, migrations on open, typed methods per table.

`open_store(cfg)` is the one way in: with `database.dsn` empty it first starts (or reuses) the
embedded private cluster under `paths.data_dir/pgdata`, and stops it on exit only if it started
it. Every command and the daemon use this, so a crash-restart goes through the same path.
`Store.dsn` is the DSN it opened (the configured one, else the embedded cluster's): whatever
needs the same database in another process (the training job) takes it from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import numpy as np

from bot.runtime.aio import wait_for
from bot.store import candles as candle_io
from bot.store.candles import WriteResult
from bot.store.embedded import EmbeddedPostgres
from bot.store.migrate import migrate
from models.candles import Candles


class Store:
    """Persistence for the daemon and the CLI. All methods are coroutines on a shared pool."""

    def __init__(self, pool: asyncpg.Pool, dsn: str = ""):
        self.pool = pool
        self.dsn = dsn  # with any password: never log it (`bot.config.mask_dsn`)
        self.own_cluster = False  # see open_store
        # The daemon sets it (database.write_timeout_s): bounds taking a connection and giving it
        # back for candle writes, so a stalled server cannot hang the feed (bot.store.outage).
        self.write_timeout: float | None = None

    @classmethod
    async def connect(cls, dsn: str, *, pool_min: int = 1, pool_max: int = 4) -> Store:
        """Open a pool sized for a small machine and bring the schema up to date."""
        async with _connect_retry(dsn) as conn:
            await migrate(conn)
        pool = await asyncpg.create_pool(
            dsn, min_size=pool_min, max_size=pool_max, command_timeout=300,
            max_inactive_connection_lifetime=300,
        )  # fmt: skip
        return cls(pool, dsn)

    async def close(self, timeout: float = 30.0) -> None:
        """Close the pool; a server that is down or stalled cannot make this hang or raise."""
        try:
            await wait_for(self.pool.close(), timeout)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self.pool.terminate()

    # -- candles -------------------------------------------------------------------------

    async def write_candles(self, symbol: str, candles: Candles) -> WriteResult:
        async with self.pool.acquire(timeout=self.write_timeout) as conn:
            return await candle_io.write_candles(conn, symbol, candles)

    async def stream_candles(
        self,
        symbol: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        *,
        batch_rows: int = 50_000,
        dtype: np.dtype | type = np.float32,
    ) -> AsyncIterator[Candles]:
        async with self.pool.acquire() as conn:
            async for batch in candle_io.stream_candles(
                conn, symbol, start_ms, end_ms, batch_rows=batch_rows, dtype=dtype
            ):
                yield batch

    async def read_candles(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, *, dtype: np.dtype | type = np.float32
    ) -> Candles:
        async with self.pool.acquire() as conn:
            return await candle_io.read_candles(conn, symbol, start_ms, end_ms, dtype=dtype)

    async def last_candle_ts(self, symbol: str) -> int | None:
        return await self.pool.fetchval("SELECT max(ts) FROM candles WHERE symbol = $1", symbol)

    async def candle_stats(self) -> dict[str, tuple[int, int, int]]:
        """symbol -> (rows, first_ts, last_ts)."""
        rows = await self.pool.fetch(
            "SELECT symbol, count(*) AS n, min(ts) AS lo, max(ts) AS hi FROM candles GROUP BY symbol ORDER BY symbol"
        )
        return {r["symbol"]: (int(r["n"]), int(r["lo"]), int(r["hi"])) for r in rows}

    async def schema_version(self) -> int:
        return int(await self.pool.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


@asynccontextmanager
async def _connect_retry(dsn: str, attempts: int = 20, delay: float = 0.25) -> AsyncIterator[asyncpg.Connection]:
    """Connect, retrying briefly while a just-started server finishes coming up."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            conn = await asyncpg.connect(dsn)
            break
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError) as e:
            last = e
            await asyncio.sleep(delay)
    else:
        raise ConnectionError(f"cannot connect to the database: {type(last).__name__}: {last}") from last
    try:
        yield conn
    finally:
        await conn.close()


def embedded_cluster(cfg, log: Callable[[str], None] = lambda m: None) -> EmbeddedPostgres | None:  # noqa: ANN001
    """The embedded cluster `cfg` uses (None when `database.dsn` names an external server)."""
    if cfg.database.dsn.get_secret_value():
        return None
    return EmbeddedPostgres(Path(cfg.paths.data_dir) / "pgdata", log=log)


@asynccontextmanager
async def open_store(cfg, log: Callable[[str], None] = lambda m: None) -> AsyncIterator[Store]:  # noqa: ANN001
    """Open the configured database (starting the embedded cluster if no DSN), yield a Store.

    Commands leave the embedded cluster as they found it: one that started it stops it on the
    way out unless another client (e.g. the daemon) is connected. The daemon sets
    `store.own_cluster = True` once it holds the daemon lock: it owns the cluster it uses
    (started by it or found running, e.g. left over after a kill -9) and stops it on exit
    whoever else is connected.
    """
    dsn = cfg.database.dsn.get_secret_value()
    embedded = embedded_cluster(cfg, log)
    if embedded is not None:
        dsn = await asyncio.to_thread(embedded.start)
    store: Store | None = None

    async def release() -> None:
        if embedded is None:
            return
        if store is not None and store.own_cluster:
            await asyncio.to_thread(embedded.stop)
        elif embedded.started_here:
            await asyncio.to_thread(embedded.stop_if_idle)

    try:
        store = await Store.connect(dsn, pool_min=cfg.database.pool_min, pool_max=cfg.database.pool_max)
    except BaseException:
        await release()
        raise
    try:
        yield store
    finally:
        await store.close()
        await release()
