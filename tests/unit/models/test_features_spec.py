"""Names, warm-up arithmetic, config validation and the ring buffer of the feature engine."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from models.features.config import M1, FeatureConfig, TimeframeFeatures
from models.features.ringbuffer import RingBuffer
from models.features.spec import (
    ATR_FRAC,
    ATR_PERCENTILE,
    FeatureLayout,
    external_names,
    feature_names,
    settle_ema,
    settle_wilder,
    warmup_bars,
)


def test_names_are_unique_ordered_and_hold_the_trainer_columns() -> None:
    cfg = FeatureConfig()
    names = feature_names(cfg)
    assert len(names) == len(set(names))
    assert ATR_FRAC in names and ATR_PERCENTILE in names
    assert names == feature_names(cfg)  # stable
    assert names[0].startswith("m1_") and any(n.startswith("h1_") for n in names)
    assert any(n.startswith("m15_") for n in names)
    for ref in ("btcusdt", "ethusdt"):
        assert f"xc_{ref}_60" in names and f"xc_{ref}_240" in names and f"xbrk_{ref}" in names
    assert [n for n in names if n.startswith("lead_")] == [f"lead_btcusdt_l{j}" for j in range(1, 6)]
    assert [n for n in names if n.startswith("regime_")] == ["regime_p0", "regime_p1", "regime_p2"]


def test_external_columns_only_when_asked() -> None:
    cfg = FeatureConfig(external_columns=("fear_greed", "funding"))
    without = feature_names(cfg)
    with_ext = feature_names(cfg, external=True)
    assert not any(n.startswith("ext_") for n in without)
    assert with_ext == without + ["ext_fear_greed", "ext_funding"] == without + external_names(cfg)


def test_layout_slices_cover_every_column_once() -> None:
    cfg = FeatureConfig()
    lay = FeatureLayout.of(cfg, external=True)
    covered: list[int] = []
    for sl in (*lay.timeframes, lay.cross, lay.lead, lay.regime, lay.external):
        assert sl is not None
        covered += list(range(sl.start, sl.stop))
    assert covered == list(range(len(lay.names)))


def test_settle_bars_are_the_first_k_with_seed_weight_below_eps() -> None:
    for n in (2, 14, 50):
        for eps in (1e-2, 1e-3, 1e-4):
            k = settle_wilder(n, eps)
            assert (1 - 1 / n) ** k <= eps < (1 - 1 / n) ** (k - 1)
            k = settle_ema(n, eps)
            a = 2 / (n + 1)
            assert (1 - a) ** k <= eps * (1 + 1e-12) and (1 - a) ** (k - 1) > eps


def test_warmup_grows_with_windows_and_with_precision() -> None:
    base = FeatureConfig()
    w = warmup_bars(base)
    assert w >= 60 * 24  # at least a day of 1h bars are needed for the 1h block
    tighter = FeatureConfig(settle_eps=1e-5)
    assert warmup_bars(tighter) > w
    longer_pct = FeatureConfig(timeframes=(M1.model_copy(update={"atr_pct_window": 4000}),))
    assert warmup_bars(longer_pct) > 4000


def test_config_rejects_bad_values_with_the_key() -> None:
    with pytest.raises(ValidationError, match=r"minutes must be 1"):
        FeatureConfig(timeframes=(M1.model_copy(update={"minutes": 15}),))
    with pytest.raises(ValidationError, match="increasing"):
        FeatureConfig(timeframes=(M1, M1))
    with pytest.raises(ValidationError, match="short < long"):
        FeatureConfig(corr_windows=(240, 60))
    with pytest.raises(ValidationError, match="regime_states|less than or equal"):
        FeatureConfig(regime_states=4)
    with pytest.raises(ValidationError, match="extra"):
        FeatureConfig(unknown_key=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="divides a UTC day"):
        TimeframeFeatures(minutes=7, return_horizons=(1,), vol_windows=(4,), atr_pct_window=10,
                          ema_spans=(4,), volz_window=4, channel_window=4)  # fmt: skip
    assert FeatureConfig(reference_symbols=("btc/usdt",)).reference_symbols == ("BTCUSDT",)


@settings(max_examples=60, deadline=None)
@given(
    cap=st.integers(1, 12),
    n_series=st.integers(1, 4),
    pushes=st.integers(0, 40),
    seed=st.integers(0, 2**16),
)
def test_ring_buffer_matches_a_deque(cap: int, n_series: int, pushes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rb = RingBuffer(n_series, cap)
    ref = [deque([math.nan] * cap, maxlen=cap) for _ in range(n_series)]
    base = rb._buf  # noqa: SLF001 - the storage must never be reallocated
    for _ in range(pushes):
        v = rng.normal(size=n_series)
        rb.push(v)
        for s in range(n_series):
            ref[s].append(v[s])
        for n in range(1, cap + 1):
            want = np.array([list(d)[-n:] for d in ref])
            np.testing.assert_array_equal(rb.window(n), want)
        for lag in range(cap):
            np.testing.assert_array_equal(rb.last(lag), [list(d)[-1 - lag] for d in ref])
    assert rb._buf is base  # noqa: SLF001
    assert rb.count == pushes
    with pytest.raises(ValueError):
        rb.window(cap + 1)
    with pytest.raises(ValueError):
        rb.last(cap)


def test_ring_window_is_a_view_not_a_copy() -> None:
    rb = RingBuffer(2, 5)
    for i in range(7):
        rb.push(np.array([i, -i], dtype=float))
    w = rb.window(3)
    assert np.shares_memory(w, rb._buf)  # noqa: SLF001
    np.testing.assert_array_equal(w, [[4, 5, 6], [-4, -5, -6]])
