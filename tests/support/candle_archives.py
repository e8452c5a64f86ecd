"""Small candle sets for the import tests, and where the feather fixtures are.

The `.feather` files in `tests/support/feather/` were written by pyarrow itself (the writer
freqtrade uses), from `formula_candles`, by `tests/support/feather/make_fixtures.py`; the
project does not install pyarrow (see `bot/history/arrow_ipc.py`), so they are kept as files.
Tests rebuild the same candles from the formula and compare.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.candles import Candles
from models.timeutil import MINUTE_MS, parse_time

FEATHER_DIR = Path(__file__).resolve().parent / "feather"
FORMULA_START = parse_time("2024-03-01")
FORMULA_ROWS = 1500
FORMULA_GAP = (600, 610)  # rows left out: one gap of 10 minutes


def formula_candles(seed: int = 0, n: int = FORMULA_ROWS, start_ms: int = FORMULA_START) -> Candles:
    """Deterministic 1m candles with at most 8 decimals (like an exchange's prices), one gap."""
    i = np.arange(n, dtype=np.int64)
    keep = (i < FORMULA_GAP[0]) | (i >= FORMULA_GAP[1])
    base = 100.0 * (1 + seed) + 3.0 * np.sin(i / 37.0 + seed) + 0.01 * (i % 17)
    close = np.round(base + 0.05 * np.cos(i / 5.0), 8)
    open_ = np.round(base, 8)
    high = np.round(np.maximum(open_, close) + 0.0123 + 0.001 * (i % 7), 8)
    low = np.round(np.minimum(open_, close) - 0.0077 - 0.001 * (i % 5), 8)
    volume = np.round(5.0 + 4.0 * np.abs(np.sin(i / 3.0 + seed)), 8)
    volume[i % 97 == 0] = 0.0  # some minutes where nothing traded
    ts = start_ms + i * MINUTE_MS
    return Candles(ts[keep], open_[keep], high[keep], low[keep], close[keep], volume[keep])
