"""Batch side of the missing-minute rule (see `spec`): candles onto the continuous minute grid,
and calendar-aligned higher-timeframe bars built from that grid.

The online engine does the same one minute at a time (`online.py`); the arithmetic here is
chosen to give the same doubles: flat fill copies the previous close, highs/lows use fmax/fmin,
volumes are summed left to right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.candles import Candles
from models.features.errors import BarOrderError
from models.timeutil import MINUTE_MS


@dataclass(frozen=True, slots=True)
class GridBars:
    """OHLCV of one series on a minute grid starting at `t0_min` (epoch minutes). NaN before the
    series' first bar; filled minutes are flat at the previous close with volume 0."""

    t0_min: int
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    first: int  # grid index of the first real bar (len if none)
    real: np.ndarray  # bool, True where the series had a candle

    def __len__(self) -> int:
        return len(self.close)


def check_minutes(ts: np.ndarray, what: str = "candles") -> None:
    """Raise `BarOrderError` unless ts is strictly ascending and on whole minutes."""
    if len(ts) == 0:
        return
    if np.any(ts % MINUTE_MS):
        bad = int(ts[np.flatnonzero(ts % MINUTE_MS)[0]])
        raise BarOrderError(f"{what}: ts {bad} is not on a whole minute (epoch ms of the candle open)")
    if len(ts) > 1 and np.any(np.diff(ts) <= 0):
        i = int(np.flatnonzero(np.diff(ts) <= 0)[0])
        raise BarOrderError(f"{what}: ts not strictly ascending at row {i + 1} ({int(ts[i])} -> {int(ts[i + 1])})")


def to_grid(c: Candles, t0_min: int, n: int, what: str = "candles") -> GridBars:
    """Reindex one series onto minutes t0_min .. t0_min+n-1, filling missing minutes flat."""
    check_minutes(c.ts, what)
    pos = c.ts // MINUTE_MS - t0_min
    keep = (pos >= 0) & (pos < n)
    if not keep.all() and np.any(pos < 0):
        raise BarOrderError(f"{what}: has bars before the grid start")
    pos = pos[keep]
    real = np.zeros(n, dtype=bool)
    real[pos] = True
    cols = []
    for a in (c.open, c.high, c.low, c.close, c.volume):
        g = np.full(n, np.nan)
        g[pos] = np.asarray(a, dtype=np.float64)[keep]
        cols.append(g)
    o, h, lo, cl, v = cols
    first = int(pos[0]) if len(pos) else n
    if len(pos):
        last_real = np.where(real, np.arange(n), -1)
        np.maximum.accumulate(last_real, out=last_real)
        fill = ~real & (last_real >= 0)
        prev_close = cl[last_real[fill]]
        o[fill] = prev_close
        h[fill] = prev_close
        lo[fill] = prev_close
        cl[fill] = prev_close
        v[fill] = 0.0
    return GridBars(t0_min, o, h, lo, cl, v, first, real)


@dataclass(frozen=True, slots=True)
class TfBars:
    """Completed bars of one timeframe; `end_pos[j]` is the grid index of the 1m bar whose
    close completes bar j (the bar is usable from that row on)."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    end_pos: np.ndarray


def aggregate(g: GridBars, minutes: int) -> TfBars:
    """Calendar-aligned `minutes` bars of a grid series. The first may be partial (the grid or the
    series starts mid-period); an unfinished last period is dropped."""
    n = len(g)
    if minutes == 1:
        return TfBars(g.open, g.high, g.low, g.close, g.volume, np.arange(n))
    lead = g.t0_min % minutes  # minutes of the first period before the grid start
    total = lead + n
    nb = total // minutes
    if nb == 0:
        e = np.empty(0)
        return TfBars(e, e, e, e, e, np.empty(0, dtype=np.int64))
    used = nb * minutes - lead  # grid minutes inside completed periods

    def blocks(a: np.ndarray) -> np.ndarray:
        pad = np.full(nb * minutes, np.nan)
        pad[lead : lead + used] = a[:used]
        return pad.reshape(nb, minutes)

    o, h, lo, c, v = (blocks(a) for a in (g.open, g.high, g.low, g.close, g.volume))
    has = ~np.isnan(c)
    first_idx = np.argmax(has, axis=1)
    rows = np.arange(nb)
    open_ = np.where(has.any(axis=1), o[rows, first_idx], np.nan)
    high = np.fmax.reduce(h, axis=1)
    low = np.fmin.reduce(lo, axis=1)
    close = c[:, -1]
    vol = np.cumsum(np.where(np.isnan(v), 0.0, v), axis=1)[:, -1]
    vol = np.where(np.isnan(close), np.nan, vol)
    end_pos = (rows + 1) * minutes - 1 - lead
    return TfBars(open_, high, low, close, vol, end_pos)
