"""Indicator correctness against independent references written here from their textbook
definitions (plain Python loops over the real BTC/ETH/SOL candles), and against pandas for the
window statistics. Higher timeframes are checked on 15m/1h bars aggregated here by hand, only
at the rows where such a bar has just closed; in between, the block must not move (the
unfinished bar is never used)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.candles import Candles, read_candles_csv
from models.features.batch import compute_batch
from models.features.config import FeatureConfig
from models.features.spec import feature_names, warmup_bars
from tests.support.feature_references import aggregate_by_hand, ref_atr, ref_ema, ref_rsi
from tests.support.shared_data import shared_data_or_skip

START = 1617321600000  # 2021-04-02 00:00 UTC; no gap before 04-20


@pytest.fixture(scope="module")
def real() -> dict[str, object]:
    data = shared_data_or_skip()
    cfg = FeatureConfig()
    n = warmup_bars(cfg) + 2 * 1440
    end = START + n * 60_000
    c = {s: read_candles_csv(data / f"{s}.csv.gz").between(START, end) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")}
    assert all(len(v) == n for v in c.values()), "expected a gap-free stretch"
    refs = {r: c[r] for r in cfg.reference_symbols}
    feats = {s: compute_batch(c[s], refs, cfg) for s in ("SOLUSDT", "BTCUSDT")}
    return {"cfg": cfg, "c": c, "feats": feats, "names": feature_names(cfg), "valid": warmup_bars(cfg) - 1}


def col(real: dict, sym: str, name: str) -> np.ndarray:
    return real["feats"][sym][:, real["names"].index(name)].astype(np.float64)


def check(got: np.ndarray, want: np.ndarray, rows: np.ndarray, rtol: float = 2e-6) -> None:
    assert len(rows) > 100
    g, w = got[rows], np.asarray(want, dtype=np.float64)[rows]
    assert np.isfinite(g).all() and np.isfinite(w).all()
    np.testing.assert_allclose(g, w, rtol=rtol, atol=0)


# --- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sym", ["SOLUSDT", "BTCUSDT"])
def test_1m_atr_rsi_ema_match_textbook(real: dict, sym: str) -> None:
    c: Candles = real["c"][sym]
    h, lo, cl = c.high.tolist(), c.low.tolist(), c.close.tolist()
    rows = np.arange(real["valid"], len(c))
    check(col(real, sym, "m1_atr_frac") * c.close, ref_atr(h, lo, cl, 14), rows)
    check(col(real, sym, "m1_rsi"), ref_rsi(cl, 14), rows)
    for span in (20, 60, 240):
        ema = c.close / np.exp(col(real, sym, f"m1_ema_dist_{span}"))
        check(ema, ref_ema(cl, span), rows)


@pytest.mark.parametrize("minutes,prefix", [(15, "m15"), (60, "h1")])
def test_higher_timeframes_match_textbook_on_hand_built_bars(real: dict, minutes: int, prefix: str) -> None:
    c: Candles = real["c"]["SOLUSDT"]
    ends, b = aggregate_by_hand(c, minutes)
    ends_a = np.asarray(ends)
    at = ends_a >= real["valid"]
    rows = ends_a[at]
    cl = b["close"]
    atr = np.asarray(ref_atr(b["high"], b["low"], cl, 14))[at]
    rsi = np.asarray(ref_rsi(cl, 14))[at]
    np.testing.assert_allclose(col(real, "SOLUSDT", f"{prefix}_atr_frac")[rows] * np.asarray(cl)[at], atr, rtol=2e-6)
    np.testing.assert_allclose(col(real, "SOLUSDT", f"{prefix}_rsi")[rows], rsi, rtol=2e-6)
    span = real["cfg"].timeframes[1 if minutes == 15 else 2].ema_spans[0]
    ema = np.asarray(ref_ema(cl, span))[at]
    got = np.asarray(cl)[at] / np.exp(col(real, "SOLUSDT", f"{prefix}_ema_dist_{span}")[rows])
    np.testing.assert_allclose(got, ema, rtol=2e-6)
    ret1 = np.log(np.asarray(cl[1:]) / np.asarray(cl[:-1]))
    np.testing.assert_allclose(col(real, "SOLUSDT", f"{prefix}_ret_1")[rows], ret1[at[1:]], rtol=1e-5)
    # between two closes the block does not move: the unfinished bar is never used
    block = [i for i, n in enumerate(real["names"]) if n.startswith(prefix + "_")]
    x = real["feats"]["SOLUSDT"][:, block]
    for e0, e1 in zip(rows[:-1], rows[1:], strict=True):
        seg = x[e0:e1]
        assert np.array_equal(seg, np.broadcast_to(x[e0], seg.shape), equal_nan=True)
        assert not np.array_equal(x[e1], x[e0], equal_nan=True)


def test_window_statistics_match_pandas(real: dict) -> None:
    cfg: FeatureConfig = real["cfg"]
    c: Candles = real["c"]["SOLUSDT"]
    btc: Candles = real["c"]["BTCUSDT"]
    rows = np.arange(real["valid"], len(c))
    close = pd.Series(c.close)
    r = np.log(close / close.shift(1))
    rb = np.log(pd.Series(btc.close) / pd.Series(btc.close).shift(1))
    for n in (15, 60, 240):
        check(col(real, "SOLUSDT", f"m1_rv_{n}"), np.sqrt((r**2).rolling(n).mean()).to_numpy(), rows, 1e-5)
    for h in (1, 5, 60, 240):
        check(col(real, "SOLUSDT", f"m1_ret_{h}"), np.log(close / close.shift(h)).to_numpy(), rows, 1e-5)
    vol = pd.Series(c.volume)
    z = (vol - vol.rolling(240).mean()) / vol.rolling(240).std(ddof=0)
    check(col(real, "SOLUSDT", "m1_volz"), z.to_numpy(), rows, 1e-4)
    for w in cfg.corr_windows:
        check(col(real, "SOLUSDT", f"xc_btcusdt_{w}"), r.rolling(w).corr(rb).to_numpy(), rows, 1e-4)
    hi = pd.Series(c.high).rolling(60).max()
    lo = pd.Series(c.low).rolling(60).min()
    check(col(real, "SOLUSDT", "m1_chanpos"), ((close - lo) / (hi - lo)).to_numpy(), rows, 1e-5)
    moved = rows[c.high[rows] > c.low[rows]]
    closepos = np.full(len(c), np.nan)
    closepos[moved] = (c.close[moved] - c.low[moved]) / (c.high[moved] - c.low[moved])
    check(col(real, "SOLUSDT", "m1_closepos"), closepos, moved, 1e-5)
    for lag in cfg.lead_lags:
        np.testing.assert_allclose(col(real, "SOLUSDT", f"lead_btcusdt_l{lag}")[rows], rb.shift(lag).to_numpy()[rows], rtol=1e-6)
    # bars since the 60-bar high: most recent bar at the max, 0 = this bar
    since = [59 - max(k for k in range(60) if c.high[i - 59 + k] == max(c.high[i - 59 : i + 1])) for i in rows]
    np.testing.assert_array_equal(col(real, "SOLUSDT", "m1_since_hi")[rows], since)
    # ATR percentile: share of the last 1440 ATR/close values <= the current one, in percent
    atrf = col(real, "SOLUSDT", "m1_atr_frac")
    atrf64 = np.asarray(ref_atr(c.high.tolist(), c.low.tolist(), c.close.tolist(), 14)) / c.close
    pct = [100.0 * np.sum(atrf64[i - 1439 : i + 1] <= atrf64[i]) / 1440 for i in rows]
    np.testing.assert_allclose(col(real, "SOLUSDT", "m1_atr_pct")[rows], pct, rtol=0, atol=1e-4)
    assert np.allclose(atrf[rows], atrf64[rows], rtol=2e-6)
    # the BTC row correlates with itself
    np.testing.assert_allclose(col(real, "BTCUSDT", "xc_btcusdt_60")[rows], 1.0, atol=1e-6)
