"""The missing-minute rule and the online engine's contract, on real candles with a small
feature config (short windows keep the warm-up to hours, so these tests stay fast).

Rule under test (spec.py): a minute without a candle is the flat, zero-volume bar at the previous
close, in both paths, whether the online engine gets a NaN row or a clock that jumps.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.candles import Candles, read_candles_csv
from models.features.batch import compute_batch, fit_regime
from models.features.config import FeatureConfig, TimeframeFeatures
from models.features.errors import BarOrderError, MissingReferenceError
from models.features.online import OnlineFeatureEngine
from models.features.spec import feature_names, warmup_bars
from models.timeutil import MINUTE_MS
from tests.support.shared_data import shared_data_or_skip

SMALL = FeatureConfig(
    timeframes=(
        TimeframeFeatures(minutes=1, return_horizons=(1, 5), vol_windows=(5, 15), atr_pct_window=30,
                          ema_spans=(5, 10), volz_window=15, channel_window=10),
        TimeframeFeatures(minutes=15, return_horizons=(1, 2), vol_windows=(4,), atr_period=3, rsi_period=3,
                          atr_pct_window=6, ema_spans=(3,), volz_window=4, channel_window=4),
        TimeframeFeatures(minutes=60, return_horizons=(1,), vol_windows=(3,), atr_period=2, rsi_period=2,
                          atr_pct_window=3, ema_spans=(2,), volz_window=3, channel_window=3),
    ),
    corr_windows=(10, 30),
    lead_lags=(0, 1, 2),
    regime_vol_window=15,
    settle_eps=1e-2,
)  # fmt: skip
SYMS = ["BTCUSDT", "ETHUSDT", "LTCUSDT", "ADAUSDT"]
START = 1619308800000 - 18 * 3_600_000  # 2021-04-24 06:00 UTC
END = 1619308800000 + 12 * 3_600_000  # 2021-04-25 12:00 UTC: after the 04:01-08:44 outage


@pytest.fixture(scope="module")
def real() -> dict[str, Candles]:
    data = shared_data_or_skip()
    return {s: read_candles_csv(data / f"{s}.csv.gz").between(START - 20 * 86_400_000, END) for s in SYMS}


@pytest.fixture(scope="module")
def regime(real: dict[str, Candles]):  # noqa: ANN201
    return fit_regime(real["BTCUSDT"].between(None, START), SMALL)


def window(real: dict[str, Candles]) -> dict[str, Candles]:
    return {s: c.between(START, END) for s, c in real.items()}


def fill_by_hand(c: Candles, end_ts: int) -> Candles:
    """Every minute from the first bar to end_ts; a missing minute = flat bar at the previous
    close with volume 0 (written independently of the engine)."""
    have = {int(t): i for i, t in enumerate(c.ts)}
    rows = []
    t = int(c.ts[0])
    prev = None
    while t <= end_ts:
        i = have.get(t)
        if i is not None:
            prev = float(c.close[i])
            rows.append((t, c.open[i], c.high[i], c.low[i], c.close[i], c.volume[i]))
        else:
            rows.append((t, prev, prev, prev, prev, 0.0))
        t += MINUTE_MS
    a = np.array(rows, dtype=np.float64)
    return Candles(a[:, 0].astype(np.int64), a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5])


def assert_paths_agree(online: np.ndarray, batch: np.ndarray) -> None:
    """Online vs batch: same NaN pattern, equal to float32 rounding (the batch path sums windows
    with running sums, the online path directly, so the last float32 bit may differ)."""
    np.testing.assert_array_equal(np.isnan(online), np.isnan(batch))
    b = batch.astype(np.float64)
    scale = np.nanmean(np.abs(b), axis=0) if len(b) else 0.0
    tol = 1e-6 * np.maximum(np.abs(b), scale)
    assert not (np.abs(online - b) > tol).any()


def feed(eng: OnlineFeatureEngine, c: dict[str, Candles], minutes: np.ndarray) -> dict[tuple[str, int], np.ndarray]:
    """Feed each minute (NaN row where a symbol has no bar); keep rows of real bars."""
    idx = {s: {int(t): i for i, t in enumerate(c[s].ts)} for s in eng.symbols}
    out: dict[tuple[str, int], np.ndarray] = {}
    for t in minutes.tolist():
        bars = np.full((len(eng.symbols), 5), np.nan)
        for k, s in enumerate(eng.symbols):
            i = idx[s].get(t)
            if i is not None:
                cs = c[s]
                bars[k] = (cs.open[i], cs.high[i], cs.low[i], cs.close[i], cs.volume[i])
        res = eng.update(t, bars)
        for k, s in enumerate(eng.symbols):
            if not np.isnan(bars[k, 0]):
                out[(s, t)] = res[k].copy()
    return out


def test_missing_minutes_equal_flat_zero_volume_bars_in_batch(real: dict[str, Candles], regime) -> None:  # noqa: ANN001
    w = window(real)
    assert len(w["LTCUSDT"]) < (END - START) // MINUTE_MS - 200  # the outage is inside
    filled = {s: fill_by_hand(c, int(w["LTCUSDT"].ts[-1])) for s, c in w.items()}
    for s in ("LTCUSDT", "ADAUSDT", "BTCUSDT"):
        refs = {r: w[r] for r in SMALL.reference_symbols}
        refs_f = {r: filled[r] for r in SMALL.reference_symbols}
        got = compute_batch(w[s], refs, SMALL, regime=regime)
        want = compute_batch(filled[s], refs_f, SMALL, regime=regime)
        rows = np.searchsorted(filled[s].ts, w[s].ts)
        np.testing.assert_array_equal(got, want[rows])
        assert (~np.isnan(got)).all(axis=1).mean() > 0.5


def test_nan_rows_clock_jumps_and_flat_bars_give_the_same_online_features(real: dict[str, Candles], regime) -> None:  # noqa: ANN001
    w = window(real)
    every = np.arange(START, int(max(c.ts[-1] for c in w.values())) + MINUTE_MS, MINUTE_MS)
    traded = np.unique(np.concatenate([c.ts for c in w.values()]))
    assert len(every) - len(traded) > 280  # an exchange-wide outage: no symbol traded
    a = OnlineFeatureEngine(SYMS, SMALL, regime=regime)
    b = OnlineFeatureEngine(SYMS, SMALL, regime=regime)
    fa = feed(a, w, every)  # NaN rows through the outage
    fb = feed(b, w, traded)  # clock jumps over it
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k])
    end = int(w["LTCUSDT"].ts[-1])
    filled = {s: fill_by_hand(c, end) for s, c in w.items()}
    c = OnlineFeatureEngine(SYMS, SMALL, regime=regime)
    fc = feed(c, filled, every[every <= end])
    assert not c.filled.any()
    for k, v in fa.items():
        if k[1] <= end:
            np.testing.assert_array_equal(v, fc[k])
    # and the online rows equal the batch rows of the same candles
    refs = {r: w[r] for r in SMALL.reference_symbols}
    for s in SYMS:
        x = compute_batch(w[s], refs, SMALL, regime=regime)
        o = np.array([fa[(s, int(t))] for t in w[s].ts])
        assert_paths_agree(o, x)


def test_late_listed_symbol_seeds_its_own_state(real: dict[str, Candles], regime) -> None:  # noqa: ANN001
    w = window(real)
    late_start = START + 7 * 3_600_000 + 17 * MINUTE_MS  # mid-hour, mid-15m
    w["ADAUSDT"] = w["ADAUSDT"].between(late_start, None)
    eng = OnlineFeatureEngine(SYMS, SMALL, regime=regime)
    traded = np.unique(np.concatenate([c.ts for c in w.values()]))
    got = feed(eng, w, traded)
    x = compute_batch(w["ADAUSDT"], {r: w[r] for r in SMALL.reference_symbols}, SMALL, regime=regime)
    o = np.array([got[("ADAUSDT", int(t))] for t in w["ADAUSDT"].ts])
    assert_paths_agree(o, x)
    wb = warmup_bars(SMALL)
    assert np.isnan(x[: wb - 1]).all() and not np.isnan(x[wb - 1 :]).all(axis=1).any()


def test_warm_up_uses_the_last_warmup_minutes_and_reports_warm(real: dict[str, Candles], regime) -> None:  # noqa: ANN001
    t0 = START + 16 * 3_600_000
    hist = {s: c.between(None, t0) for s, c in real.items()}
    eng = OnlineFeatureEngine(SYMS, SMALL, regime=regime)
    eng.warm_up(hist)
    assert eng.warm.all() and eng.last_ts == t0 - MINUTE_MS
    nb = warmup_bars(SMALL)
    short = {s: c.between(t0 - (nb - 1) * MINUTE_MS, None) for s, c in hist.items()}
    eng2 = OnlineFeatureEngine(SYMS, SMALL, regime=regime)
    eng2.warm_up(short)
    assert not eng2.warm.any()  # one minute short of the warm-up
    # warm_up after update is a usage error
    with pytest.raises(BarOrderError, match="before the first update"):
        eng.warm_up(hist)
    # after warm-up, live minutes continue exactly like batch over the same warm-up window
    first = t0 - nb * MINUTE_MS
    after = {s: c.between(first, t0 + 90 * MINUTE_MS) for s, c in real.items()}
    got = feed(eng, after, np.arange(t0, t0 + 90 * MINUTE_MS, MINUTE_MS))
    for s in SYMS:
        x = compute_batch(after[s], {r: after[r] for r in SMALL.reference_symbols}, SMALL, regime=regime)
        rows = np.flatnonzero(after[s].ts >= t0)
        assert len(rows) == 90 and not np.isnan(x[rows]).any()
        assert_paths_agree(np.array([got[(s, int(t))] for t in after[s].ts[rows]]), x[rows])


def test_returns_window_holds_the_latest_log_returns(real: dict[str, Candles]) -> None:
    w = window(real)
    eng = OnlineFeatureEngine(SYMS, SMALL)
    minutes = np.unique(np.concatenate([c.ts for c in w.values()]))[:400]
    feed(eng, w, minutes)
    r = eng.returns_window(240)
    assert r.shape == (4, 240)
    for k, s in enumerate(SYMS):
        c = w[s].between(None, int(minutes[-1]) + MINUTE_MS)
        want = np.log(c.close[1:] / c.close[:-1])[-240:]
        np.testing.assert_allclose(r[k], want, rtol=1e-12)
    r[:] = 0  # a copy: the engine is unaffected
    assert np.abs(eng.returns_window(5)).sum() > 0


def test_engine_rejects_bad_input_with_actionable_errors() -> None:
    with pytest.raises(MissingReferenceError, match="ETHUSDT"):
        OnlineFeatureEngine(["BTCUSDT", "SOLUSDT"], SMALL)
    eng = OnlineFeatureEngine(SYMS, SMALL)
    bar = np.tile([10.0, 11.0, 9.0, 10.5, 3.0], (4, 1))
    eng.update(START, bar)
    with pytest.raises(BarOrderError, match="not after"):
        eng.update(START, bar)
    with pytest.raises(BarOrderError, match="whole minute"):
        eng.update(START + 90_000, bar)
    with pytest.raises(ValueError, match="shape"):
        eng.update(START + MINUTE_MS, bar[:3])
    bad = bar.copy()
    bad[2, 3] = 0.0
    with pytest.raises(ValueError, match="LTCUSDT"):
        eng.update(START + MINUTE_MS, bad)
    out = eng.update(START + 2 * MINUTE_MS, bar)
    assert out.dtype == np.float32 and out.shape == (4, len(feature_names(SMALL)))
    assert np.isnan(out).all()  # nobody is warm after 2 minutes


def test_batch_contract_edge_cases(real: dict[str, Candles]) -> None:
    w = window(real)
    refs = {r: w[r] for r in SMALL.reference_symbols}
    f = len(feature_names(SMALL))
    assert compute_batch(Candles.empty(), refs, SMALL).shape == (0, f)
    one = w["ADAUSDT"].slice(0, 1)
    x = compute_batch(one, refs, SMALL)
    assert x.shape == (1, f) and x.dtype == np.float32 and np.isnan(x).all()
    with pytest.raises(MissingReferenceError, match="ETHUSDT"):
        compute_batch(w["ADAUSDT"], {"BTCUSDT": w["BTCUSDT"]}, SMALL)
    # float32 candles are accepted (the store can stream them); rows still align with the input
    x32 = compute_batch(w["ADAUSDT"].astype(np.float32), refs, SMALL)
    assert x32.shape == (len(w["ADAUSDT"]), f)
    shuffled = Candles(*(a[::-1] for a in w["ADAUSDT"].columns()))
    with pytest.raises(BarOrderError, match="ascending"):
        compute_batch(shuffled, refs, SMALL)


def test_online_state_is_bounded(real: dict[str, Candles], regime) -> None:  # noqa: ANN001
    """Hours of updates after warm-up allocate nothing that stays: all state is preallocated."""
    import tracemalloc

    w = window(real)
    minutes = np.unique(np.concatenate([c.ts for c in w.values()]))
    eng = OnlineFeatureEngine(SYMS, SMALL, regime=regime)
    idx = {s: {int(t): i for i, t in enumerate(w[s].ts)} for s in SYMS}
    all_bars = np.full((len(minutes), len(SYMS), 5), np.nan)
    for k, s in enumerate(SYMS):
        for t, i in idx[s].items():
            all_bars[np.searchsorted(minutes, t), k] = (w[s].open[i], w[s].high[i], w[s].low[i], w[s].close[i], w[s].volume[i])
    half = len(minutes) // 2
    for t in range(half):
        eng.update(int(minutes[t]), all_bars[t])
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    out_id = id(eng.update(int(minutes[half]), all_bars[half]))
    for t in range(half + 1, len(minutes)):
        assert id(eng.update(int(minutes[t]), all_bars[t])) == out_id  # the same output buffer
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(minutes) - half > 500
    assert grown < 16_384, f"{grown} bytes retained over {len(minutes) - half} updates"
