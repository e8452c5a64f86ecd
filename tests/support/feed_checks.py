"""Checks of what the feed stored against the simulator's source candles."""

from __future__ import annotations

import numpy as np

from bot.exchange_sim.replay import CandleBook
from bot.store.db import Store
from models.timeutil import MINUTE_MS


async def assert_store_equals_source(store: Store, book: CandleBook, symbols: list[str], start: int, end: int) -> int:
    """Row-by-row equality of the store and the source on [start, end]; returns rows compared."""
    n = 0
    for s in symbols:
        got = await store.read_candles(s, start, end + MINUTE_MS, dtype=np.float64)
        src = book.range(s, start, end)
        assert len(src) > 0
        missing = np.setdiff1d(src.ts, got.ts)
        invented = np.setdiff1d(got.ts, src.ts)
        assert len(missing) == 0, f"{s}: {len(missing)} minutes missing, first {missing[:5]}"
        assert len(invented) == 0, f"{s}: {len(invented)} minutes the exchange never had, first {invented[:5]}"
        for f, a, b in zip(("ts", "open", "high", "low", "close", "volume"), got.columns(), src.columns(), strict=True):
            bad = np.flatnonzero(a != b)
            assert len(bad) == 0, f"{s}: {len(bad)} rows with altered {f}, first at ts {got.ts[bad[0]]}"
        n += len(src)
    return n
