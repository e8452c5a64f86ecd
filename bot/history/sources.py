"""Where the trainer and the evaluator get candles: a CSV directory or the store.

Both satisfy `models.candles.CandleSource` (`load(symbol, start_ms, end_ms)`), plus `bounds`
and `symbols` for picking a default range, and `close`.
- `CsvCandleSource`: a directory in the `../shared/data` format, one file read per `load`.
- `StoreCandleSource`: Postgres, streamed with binary COPY by `bot.store`. The trainer is
  synchronous and CPU-bound, so the asyncpg calls run on an event loop in another thread
  (the caller's, or a private one from `connect`) and `load` blocks on them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from models.candles import Candles, CandleSource, candle_files, read_candles_csv

if TYPE_CHECKING:
    from bot.store.db import Store

T = TypeVar("T")


class HistorySource(CandleSource, Protocol):
    """A candle source the bot opens and closes: `load` plus the range it holds per symbol."""

    def bounds(self, symbol: str) -> tuple[int, int] | None:
        """(first ts, last ts) of the symbol's candles, None if it has none."""
        ...

    def symbols(self) -> list[str]: ...

    def close(self) -> None: ...


class CandleSourceError(Exception):
    """A candle source cannot serve what was asked (e.g. no file for the symbol)."""


class CsvCandleSource:
    """`SYMBOL.csv.gz` files of one directory; each `load` reads one file (nothing cached)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.files = candle_files(self.directory)

    def symbols(self) -> list[str]:
        return sorted(self.files)

    def load(self, symbol: str, start_ms: int | None, end_ms: int | None) -> Candles:
        path = self.files.get(symbol)
        if path is None:
            raise CandleSourceError(f"no candle file for {symbol} in {self.directory}")
        return read_candles_csv(path).between(start_ms, end_ms)

    def bounds(self, symbol: str) -> tuple[int, int] | None:
        """(first ts, last ts) of one symbol's data."""
        c = self.load(symbol, None, None)
        return (int(c.ts[0]), int(c.ts[-1])) if len(c) else None

    def close(self) -> None:
        pass


class StoreCandleSource:
    """Candles from the store; the asyncpg calls run on `loop` (another thread's event loop)."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop, *, owns: threading.Thread | None = None):
        self.store = store
        self.loop = loop
        self._thread = owns

    @classmethod
    def connect(cls, dsn: str) -> StoreCandleSource:
        """Open a store on a private event loop thread (for the training subprocess)."""
        from bot.store.db import Store

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="store-loop", daemon=True)
        thread.start()
        store = asyncio.run_coroutine_threadsafe(Store.connect(dsn, pool_min=1, pool_max=2), loop).result()
        return cls(store, loop, owns=thread)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def load(self, symbol: str, start_ms: int | None, end_ms: int | None) -> Candles:
        return self._run(self.store.read_candles(symbol, start_ms, end_ms, dtype=np.float64))

    def bounds(self, symbol: str) -> tuple[int, int] | None:
        async def q() -> Any:
            return await self.store.pool.fetchrow("SELECT min(ts) AS lo, max(ts) AS hi FROM candles WHERE symbol = $1", symbol)

        r = self._run(q())
        return None if r is None or r["lo"] is None else (int(r["lo"]), int(r["hi"]))

    def symbols(self) -> list[str]:
        return sorted(self._run(self.store.candle_stats()))

    def close(self) -> None:
        if self._thread is not None:
            self._run(self.store.close())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()
            self._thread = None
