"""No look-ahead: changing anything after time t (prices, volumes, dropped bars, the reference
symbols, the external series) leaves every feature at time <= t unchanged, bit for bit.

Property test over random t, random symbols and random kinds of change, on real candles
(2021-04-14 .. 04-20 12:00, which includes the 150-minute outage on 04-20) with the regime model
and an external series in play. Each example also checks the change did reach the features
after t, so a test that compares nothing cannot pass.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.candles import Candles, read_candles_csv
from models.features.batch import compute_batch, fit_regime
from models.features.config import FeatureConfig
from models.features.external import ExternalDaily
from models.features.spec import warmup_bars
from models.timeutil import DAY_MS, MINUTE_MS
from tests.support.shared_data import shared_data_or_skip

START = 1618358400000  # 2021-04-14 00:00 UTC
END = START + int(6.5 * DAY_MS)
SYMBOLS = ("BTCUSDT", "ETHUSDT", "LTCUSDT", "MKRUSDT")

_CACHE: dict[str, object] = {}


def setup_data() -> dict[str, object]:
    if _CACHE:
        return _CACHE
    data = shared_data_or_skip()
    cfg = FeatureConfig()
    full = {s: read_candles_csv(data / f"{s}.csv.gz") for s in SYMBOLS}
    c = {s: v.between(START, END) for s, v in full.items()}
    regime = fit_regime(full["BTCUSDT"].between(None, START), cfg)
    days = np.arange(START - 5 * DAY_MS, END + 2 * DAY_MS, DAY_MS, dtype=np.int64)
    ext = ExternalDaily(cfg.external_columns, days, np.linspace(20, 80, len(days))[:, None])
    base = {s: _features(cfg, c, s, regime, ext) for s in SYMBOLS}
    _CACHE.update(cfg=cfg, c=c, regime=regime, ext=ext, base=base)
    return _CACHE


def _features(cfg: FeatureConfig, c: dict[str, Candles], sym: str, regime, ext) -> np.ndarray:  # noqa: ANN001
    return compute_batch(c[sym], {r: c[r] for r in cfg.reference_symbols}, cfg, regime=regime, external=ext)


def perturb_after(c: Candles, t: int, rng: np.random.Generator, drop: bool) -> Candles:
    """New prices/volumes for every bar after t (OHLC stay consistent), some bars dropped."""
    after = c.ts > t
    k = int(after.sum())
    f = np.exp(rng.normal(0, 0.02, size=k))
    cols = {}
    for name in ("open", "high", "low", "close"):
        a = getattr(c, name).copy()
        a[after] *= f
        cols[name] = a
    vol = c.volume.copy()
    vol[after] *= rng.uniform(0.2, 5.0, size=k)
    out = Candles(c.ts.copy(), cols["open"], cols["high"], cols["low"], cols["close"], vol)
    if drop and k > 10:
        keep = np.ones(len(c), dtype=bool)
        idx = np.flatnonzero(after)
        keep[rng.choice(idx[1:], size=k // 5, replace=False)] = False  # keep the first bar after t
        out = Candles(*(a[keep] for a in out.columns()))
    return out


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(
    sym=st.sampled_from(SYMBOLS),
    frac=st.floats(0.0, 0.98),
    seed=st.integers(0, 2**31 - 1),
    drop=st.booleans(),
    refs_too=st.booleans(),
    ext_too=st.booleans(),
)
def test_features_at_or_before_t_ignore_everything_after_t(
    sym: str, frac: float, seed: int, drop: bool, refs_too: bool, ext_too: bool
) -> None:
    d = setup_data()
    cfg: FeatureConfig = d["cfg"]  # type: ignore[assignment]
    c: dict[str, Candles] = d["c"]  # type: ignore[assignment]
    w = warmup_bars(cfg)
    n = len(c[sym])
    i = (w - 1) + int(frac * (n - w - 2))  # a row after warm-up, with bars after it
    t = int(c[sym].ts[i])
    rng = np.random.default_rng(seed)

    changed = dict(c)
    changed[sym] = perturb_after(c[sym], t, rng, drop)
    if refs_too:
        for r in cfg.reference_symbols:
            if r != sym:
                changed[r] = perturb_after(c[r], t, rng, drop)
    ext: ExternalDaily = d["ext"]  # type: ignore[assignment]
    if ext_too:
        vals = ext.values.copy()
        unknown = ext.day_ms + DAY_MS > t + MINUTE_MS  # not yet known at the close of bar t
        vals[unknown] = rng.uniform(0, 100, size=(int(unknown.sum()), vals.shape[1]))
        ext = ExternalDaily(ext.names, ext.day_ms, vals, ext.max_age_days)

    got = _features(cfg, changed, sym, d["regime"], ext)
    base: np.ndarray = d["base"][sym]  # type: ignore[index]
    np.testing.assert_array_equal(got[: i + 1], base[: i + 1])  # NaN == NaN here
    assert not np.isnan(base[i]).all(), "the compared rows must be past warm-up"
    # the change reached the future rows (the comparison above had something to miss)
    later = changed[sym].ts > t
    j = np.flatnonzero(c[sym].ts == changed[sym].ts[later][0])[0]
    assert not np.array_equal(got[i + 1], base[j], equal_nan=True)
