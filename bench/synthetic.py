"""Synthetic 1m candles for benchmarks: fat tails, volatility clustering, cross-symbol correlation.

The real data has 6 weeks; the training benchmark needs a year of 30 symbols, so it is
generated, with the properties that matter for speed and memory and that a model would see:
- returns r_i = beta_i x m + e_i: one market factor m shared by every symbol (cross-symbol
  correlation about 0.4-0.7, like 2021 alts against BTC) plus an idiosyncratic part;
- each of m and e_i has stochastic volatility: log sigma is the sum of a slow AR(1) (half-life
  about 2 days) and a fast one (half-life about an hour), so calm and wild stretches cluster;
- innovations are Student-t with 5 degrees of freedom scaled to unit variance (fat tails:
  kurtosis far above the normal's 3);
- bars open at the previous close, high/low extend beyond open/close by a volatility-scaled
  amount, volume rises with |return| / sigma; exchange-wide outages (150 minutes missing on
  every symbol) every 21 days, like the two in the real data.

Deterministic: the same (symbols, start, days, seed) give the same candles, symbol by symbol,
so a source can regenerate any symbol on demand instead of holding all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.signal import lfilter

from models.candles import Candles
from models.timeutil import MINUTE_MS

DAY_MIN = 1440
START_MS = 1_609_459_200_000  # 2021-01-01 00:00 UTC


def _t_unit(rng: np.random.Generator, n: int, df: float = 5.0) -> np.ndarray:
    return rng.standard_t(df, n) / np.sqrt(df / (df - 2.0))


def _log_vol(rng: np.random.Generator, n: int, level: float) -> np.ndarray:
    """log sigma: slow + fast AR(1) components around log(level)."""
    out = np.full(n, np.log(level))
    for half_life, sd in ((2 * DAY_MIN, 0.4), (60, 0.45)):
        phi = 0.5 ** (1.0 / half_life)
        eta = rng.standard_normal(n) * sd * np.sqrt(1 - phi * phi)
        x = lfilter([1.0], [1.0, -phi], eta)
        out += x
    return out


class SyntheticMarket:
    """Candles of `symbols` over `days` days from `start_ms`, generated on demand per symbol."""

    def __init__(self, symbols: Sequence[str], days: float, *, start_ms: int = START_MS, seed: int = 0,
                 outage_every_days: int = 21):  # fmt: skip
        self.symbols = list(symbols)
        self.start_ms = int(start_ms)
        self.n = int(days * DAY_MIN)
        self.seed = seed
        rng = np.random.default_rng([seed, 0])
        self.market = np.exp(_log_vol(rng, self.n, 0.0007)) * _t_unit(rng, self.n)
        keep = np.ones(self.n, dtype=bool)
        if outage_every_days:
            for d in range(outage_every_days - 3, int(days), outage_every_days):
                keep[d * DAY_MIN + 120 : d * DAY_MIN + 270] = False  # 02:00-04:29 UTC
        self.keep = np.flatnonzero(keep)

    def candles(self, symbol: str) -> Candles:
        i = self.symbols.index(symbol)
        rng = np.random.default_rng([self.seed, 1 + i])
        beta = 1.0 if i == 0 else rng.uniform(0.7, 1.4)
        idio_level = 0.0002 if i == 0 else 0.0007 * rng.uniform(0.6, 1.8)
        e = np.exp(_log_vol(rng, self.n, idio_level)) * _t_unit(rng, self.n)
        r = beta * self.market + e
        sigma = np.sqrt((beta * 0.0007) ** 2 + idio_level**2)
        p0 = 10 ** rng.uniform(-2, 4.5)
        close = p0 * np.exp(np.cumsum(r))
        open_ = np.empty_like(close)
        open_[0] = p0
        open_[1:] = close[:-1]
        wick = sigma * 0.6
        high = np.maximum(open_, close) * np.exp(np.abs(rng.standard_normal(self.n)) * wick)
        low = np.minimum(open_, close) * np.exp(-np.abs(rng.standard_normal(self.n)) * wick)
        volume = (10 ** rng.uniform(1, 5)) * np.exp(0.5 * rng.standard_normal(self.n)) * (1 + 2 * np.abs(r) / sigma)
        ts = self.start_ms + np.arange(self.n, dtype=np.int64) * MINUTE_MS
        k = self.keep
        return Candles(ts[k], open_[k], high[k], low[k], close[k], volume[k])

    def load(self, symbol: str, start_ms: int | None, end_ms: int | None) -> Candles:
        """`models.candles.CandleSource`: one symbol, start_ms <= ts < end_ms."""
        return self.candles(symbol).between(start_ms, end_ms)

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.n * MINUTE_MS
