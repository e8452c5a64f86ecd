"""Walk-forward folds, the calibration split and purging: no training label reaches validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.candles import Candles
from models.config import LabelConfig
from models.labels.triple_barrier import triple_barrier
from models.timeutil import DAY_MS, MINUTE_MS
from models.trading.costs import Costs
from models.training.splits import (
    SplitError,
    Window,
    calibration_split,
    purged_rows,
    stride_rows,
    walk_forward,
)

T0 = 1_617_321_600_000  # 2021-04-02 00:00 UTC
END = 1_621_023_960_000  # 2021-05-14 20:26 UTC (just after the last candle of the shared data)


def test_folds_of_the_shared_data_range() -> None:
    folds = walk_forward(Window(T0, END), folds=2, fold_days=14, embargo_ms=60 * MINUTE_MS)
    assert [f.train.start for f in folds] == [T0, T0]
    # anchored on UTC midnights: Apr 16 and Apr 30
    assert [f.train.end for f in folds] == [T0 + 14 * DAY_MS, T0 + 28 * DAY_MS]
    assert folds[0].valid == Window(T0 + 14 * DAY_MS + 3_600_000, T0 + 28 * DAY_MS)
    assert folds[1].valid == Window(T0 + 28 * DAY_MS + 3_600_000, END)


def test_too_many_folds_is_an_error_with_advice() -> None:
    with pytest.raises(SplitError, match="fewer folds"):
        walk_forward(Window(T0, T0 + 20 * DAY_MS), folds=3, fold_days=7, embargo_ms=0, min_train_days=7)


def random_candles(n: int, seed: int) -> Candles:
    rng = np.random.default_rng(seed)
    steps = np.ones(n, np.int64)
    gaps = rng.choice(np.arange(1, n), size=n // 100, replace=False)
    steps[gaps] = rng.integers(2, 120, size=len(gaps))
    ts = T0 + np.cumsum(steps) * MINUTE_MS
    close = 100 * np.exp(np.cumsum(rng.standard_t(3, n) * 0.002))
    open_ = np.r_[100.0, close[:-1]]
    return Candles(ts, open_, np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999, close, np.ones(n))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    horizon=st.integers(1, 240),
    folds=st.integers(1, 4),
    fold_days=st.floats(0.5, 2.0),
    frac=st.floats(0.1, 0.45),
)
def test_purged_training_labels_never_overlap_validation(seed, horizon, folds, fold_days, frac) -> None:
    c = random_candles(12_000, seed)
    rng = np.random.default_rng(seed)
    lab = triple_barrier(c, rng.uniform(0.001, 0.01, len(c)), rng.uniform(0, 100, len(c)), LabelConfig(horizon_bars=horizon), Costs())
    data = Window(int(c.ts[0]), int(c.ts[-1]) + MINUTE_MS)
    embargo = horizon * MINUTE_MS
    try:
        fs = walk_forward(data, folds=folds, fold_days=fold_days, embargo_ms=embargo, min_train_days=0.5)
    except SplitError:
        return
    exit_ts = np.where(lab.valid, c.ts[np.arange(len(c)) + lab.exit_offset], 0)
    for f in fs:
        train = purged_rows(c.ts, lab.resolved_ts, f.train)
        if not train.any():
            continue
        # every bar a training label looked at opened before the training window ended ...
        assert lab.resolved_ts[train].max() < f.train.end
        assert exit_ts[train].max() < f.train.end
        # ... which is at least one label horizon before validation starts
        assert f.valid.start - f.train.end >= horizon * MINUTE_MS
        fit, cal = calibration_split(f.train, frac, embargo) if f.train.days > 0.3 else (None, None)
        if fit is not None:
            fit_rows = purged_rows(c.ts, lab.resolved_ts, fit)
            if fit_rows.any():
                assert lab.resolved_ts[fit_rows].max() < cal.start
        # without the purge, the last labels of the window do reach past its end
        naive = f.train.contains(c.ts) & lab.valid
        if naive.sum() > horizon * 3 and lab.valid[np.searchsorted(c.ts, f.train.end) - 1]:
            assert lab.resolved_ts[naive].max() >= f.train.end


def test_stride_rows_pick_the_same_minutes_whatever_the_range() -> None:
    ts = T0 + np.arange(1000) * MINUTE_MS
    a = ts[stride_rows(ts, 5)]
    b = ts[300:][stride_rows(ts[300:], 5)]
    assert set(b) <= set(a) and len(a) == 200
    assert stride_rows(ts, 1).all()
