"""Acceptance: the online engine fed bar by bar equals the batch path, on the real data.

30 symbols of symbols30.txt, 6 days after warm-up (2021-04-19 12:00 .. 04-25 12:00 UTC). The
window holds both exchange-wide outages (150 minutes on 04-20, 284 on 04-25) and the 04-25
04:01 minute in which LTC, XRP, XMR and THETA traded but BTC and most others did not, so the
online engine sees both a NaN row per missing symbol and a jump of the clock over an outage.
The regime HMM is fitted on BTC before the warm-up starts, and a synthetic daily external
series (not real Fear & Greed values) exercises the as-of-previous-day join in both paths.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from models.candles import Candles, candle_files, read_candles_csv
from models.features.batch import compute_batch, fit_regime
from models.features.config import FeatureConfig
from models.features.external import ExternalDaily
from models.features.online import OnlineFeatureEngine
from models.features.spec import (
    ATR_FRAC,
    ATR_PERCENTILE,
    feature_names,
    warmup_bars,
)
from models.timeutil import DAY_MS, MINUTE_MS
from tests.support.shared_data import DATA_DIR, symbols30

pytestmark = pytest.mark.slow


def ms(s: str) -> int:
    return int(dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC).timestamp() * 1000)


T0 = ms("2021-04-19T12:00")
T1 = ms("2021-04-25T12:00")
GAPS = ((ms("2021-04-20T02:00"), 150), (ms("2021-04-25T04:02"), 283))


def synthetic_external(cfg: FeatureConfig) -> ExternalDaily:
    days = np.arange(ms("2021-04-01T00:00"), ms("2021-05-15T00:00"), DAY_MS, dtype=np.int64)
    vals = 50 + 30 * np.sin(np.arange(len(days)) / 3.0)
    return ExternalDaily(cfg.external_columns, days, vals[:, None], cfg.external_max_age_days)


def dense_bars(data: dict[str, Candles], symbols: list[str], start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """(minutes where any symbol traded, bars (T, S, 5) with NaN rows where a symbol did not)."""
    live = {s: data[s].between(start, end) for s in symbols}
    minutes = np.unique(np.concatenate([c.ts for c in live.values()]))
    bars = np.full((len(minutes), len(symbols), 5), np.nan)
    for i, s in enumerate(symbols):
        c = live[s]
        pos = np.searchsorted(minutes, c.ts)
        bars[pos, i] = np.column_stack([c.open, c.high, c.low, c.close, c.volume])
    return minutes, bars


def assert_close(online: np.ndarray, batch: np.ndarray, names: list[str], what: str) -> None:
    """Same NaN pattern; |online - batch| <= 1e-4 * max(|batch|, 1e-4 * column scale)."""
    nan_o, nan_b = np.isnan(online), np.isnan(batch)
    if (nan_o != nan_b).any():
        cols = sorted({names[j] for j in np.flatnonzero((nan_o != nan_b).any(axis=0))})
        raise AssertionError(f"{what}: NaN pattern differs in {cols}")
    b = batch.astype(np.float64)
    o = online.astype(np.float64)
    scale = np.nanmean(np.abs(b), axis=0)
    tol = 1e-4 * np.maximum(np.abs(b), 1e-4 * scale)
    bad = (np.abs(o - b) > tol) & ~nan_b
    if bad.any():
        j = int(np.flatnonzero(bad.any(axis=0))[0])
        i = int(np.flatnonzero(bad[:, j])[0])
        raise AssertionError(f"{what}: {names[j]} row {i}: online {o[i, j]!r} batch {b[i, j]!r}")


def test_online_equals_batch_on_real_data_across_gaps() -> None:
    symbols = symbols30()
    cfg = FeatureConfig()
    w = warmup_bars(cfg)
    start = T0 - w * MINUTE_MS
    files = candle_files(DATA_DIR, symbols)
    full = {s: read_candles_csv(files[s]) for s in symbols}
    data = {s: c.between(start, T1) for s, c in full.items()}
    regime = fit_regime(full["BTCUSDT"].between(None, start), cfg)
    external = synthetic_external(cfg)
    names = feature_names(cfg, external=True)

    # the window really holds the outages and the minute BTC lacks
    for gap_start, n_missing in GAPS:
        assert not np.isin(data["BTCUSDT"].ts, [gap_start]).any()
        assert T0 < gap_start < T1 and n_missing > 100
    odd_minute = ms("2021-04-25T04:01")
    assert odd_minute in set(data["LTCUSDT"].ts.tolist()) and odd_minute not in set(data["BTCUSDT"].ts.tolist())

    eng = OnlineFeatureEngine(symbols, cfg, regime=regime, external=external)
    eng.warm_up({s: c.between(None, T0) for s, c in data.items()})
    assert eng.warm.all(), "warm_up with warmup_bars minutes of history must leave every symbol warm"

    minutes, bars = dense_bars(data, symbols, T0, T1)
    assert (np.diff(minutes) > MINUTE_MS).sum() >= 2  # the clock jumps over both outages
    got = np.full((len(minutes), len(symbols), len(names)), np.nan, dtype=np.float32)
    btc = symbols.index("BTCUSDT")
    for t in range(len(minutes)):
        got[t] = eng.update(int(minutes[t]), bars[t])
        if minutes[t] == odd_minute:
            assert eng.filled[btc] and not eng.filled[symbols.index("LTCUSDT")]

    refs = {r: data[r] for r in cfg.reference_symbols}
    checked = 0
    for i, s in enumerate(symbols):
        c = data[s]
        want = compute_batch(c, refs, cfg, regime=regime, external=external)
        rows = np.flatnonzero(c.ts >= T0)
        assert len(rows) >= 3 * 1440
        pos = np.searchsorted(minutes, c.ts[rows])
        assert (minutes[pos] == c.ts[rows]).all()
        online = got[pos, i]
        assert_close(online, want[rows], names, s)
        # every column is populated after warm-up: the comparison covers every feature
        filled_share = (~np.isnan(want[rows])).mean(axis=0)
        assert filled_share.min() > 0.9, [n for n, f in zip(names, filled_share, strict=True) if f <= 0.9]
        checked += len(rows)
    assert checked >= 30 * (6 * 1440 - 434)
    # the ATR columns the trainer's barriers read are live and in range
    j, k = names.index(ATR_FRAC), names.index(ATR_PERCENTILE)
    assert np.nanmin(got[:, :, j]) > 0 and 0 < np.nanmin(got[:, :, k]) and np.nanmax(got[:, :, k]) <= 100
