"""The warm-up is long enough: features computed from only `warmup_bars` minutes of history (what
the live engine starts from) match features computed from the whole history (what the trainer
sees) within `settle_eps` of the larger of the value and the column's mean magnitude (a value
near zero is judged on the column's scale), on the real data, across the 04-25 outage.

Percentile ranks are compared in ranks: a value that moved by settle_eps can swap places with a
neighbour in the window, so they may differ by a couple of ranks (2 * 100 / window points).
"""

from __future__ import annotations

import numpy as np
import pytest

from models.candles import read_candles_csv
from models.features.batch import compute_batch, fit_regime
from models.features.config import FeatureConfig
from models.features.spec import feature_names, warmup_bars
from models.timeutil import MINUTE_MS
from tests.support.shared_data import shared_data_or_skip

T0 = 1619222400000  # 2021-04-24 00:00 UTC
T1 = T0 + 2 * 86_400_000


@pytest.mark.slow
def test_warmup_history_is_enough_to_match_full_history_features() -> None:
    data = shared_data_or_skip()
    cfg = FeatureConfig()
    names = feature_names(cfg)
    syms = ["BTCUSDT", "ETHUSDT", "MKRUSDT", "DOGEUSDT", "LTCUSDT"]
    full = {s: read_candles_csv(data / f"{s}.csv.gz").between(None, T1) for s in syms}
    regime = fit_regime(full["BTCUSDT"].between(None, T0 - 10 * 86_400_000), cfg)
    start = T0 - warmup_bars(cfg) * MINUTE_MS
    short = {s: c.between(start, None) for s, c in full.items()}
    pct_cols = [j for j, n in enumerate(names) if n.endswith("_atr_pct")]
    pct_windows = [tf.atr_pct_window for tf in cfg.timeframes]
    other = [j for j in range(len(names)) if j not in pct_cols]
    for s in syms:
        a = compute_batch(full[s], {r: full[r] for r in cfg.reference_symbols}, cfg, regime=regime)
        b = compute_batch(short[s], {r: short[r] for r in cfg.reference_symbols}, cfg, regime=regime)
        a = a[full[s].ts >= T0].astype(np.float64)
        b = b[short[s].ts >= T0].astype(np.float64)
        assert a.shape == b.shape and len(a) > 2 * 1440 - 300
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        assert not np.isnan(a).all(axis=0).any()
        scale = np.nanmean(np.abs(a), axis=0)
        rel = np.abs(a - b) / np.maximum(np.abs(a), np.maximum(scale, 1e-300))  # vs the column's size
        rel = np.where(np.isnan(a), 0.0, rel)
        bad = rel[:, other] > cfg.settle_eps
        assert not bad.any(), [names[other[j]] for j in np.flatnonzero(bad.any(axis=0))]
        for j, w in zip(pct_cols, pct_windows, strict=True):
            assert np.nanmax(np.abs(a[:, j] - b[:, j])) <= 2 * 100.0 / w + 1e-3, names[j]
    # with less history than the warm-up, rows are NaN, never half-settled values
    tiny = {s: c.between(T0 - 600 * MINUTE_MS, None) for s, c in full.items()}
    c = compute_batch(tiny["LTCUSDT"], {r: tiny[r] for r in cfg.reference_symbols}, cfg, regime=regime)
    assert np.isnan(c).all()
