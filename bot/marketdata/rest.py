"""REST candle fetches shared by the live feed's gap filler and `bot backfill`."""

from __future__ import annotations

import numpy as np

from models.candles import Candles
from models.timeutil import MINUTE_MS

PAGE_LIMIT = 1000  # Binance's maximum klines per request (spot)


async def fetch_klines(exchange, ccxt_symbol: str, start_ms: int, end_ms: int, limit: int = PAGE_LIMIT) -> Candles:  # noqa: ANN001
    """1m candles with start_ms <= ts <= end_ms (at most `limit`, the earliest first) as
    float64 `Candles`; one request. Values ccxt could not parse come back as NaN (and are then
    rejected by validation, never stored)."""
    rows = await exchange.fetch_ohlcv(ccxt_symbol, "1m", since=int(start_ms), limit=int(limit),
                                      params={"until": int(end_ms)})  # fmt: skip
    if not rows:
        return Candles.empty(np.float64)
    a = np.array([[np.nan if x is None else x for x in r[:6]] for r in rows], dtype=np.float64)
    t = a[:, 0]
    keep = np.isfinite(t) & (t >= start_ms) & (t <= end_ms)  # a row without a usable open time is no candle
    if not keep.all():
        a = a[keep]
    ts = a[:, 0].astype(np.int64)
    return Candles(ts, a[:, 1].copy(), a[:, 2].copy(), a[:, 3].copy(), a[:, 4].copy(), a[:, 5].copy())


def floor_minute(ms: int) -> int:
    return int(ms) - int(ms) % MINUTE_MS
