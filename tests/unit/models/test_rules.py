"""The one entry rule and the one exit rule (models/trading/rules.py).

The exit rule is checked against the labels it must reproduce: every label row of a few real
symbols (both exchange-wide outages included) is walked bar by bar through `check_exits`, and
the exit row, the exit kind and the net return must equal the label's.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.candles import candle_files, read_candles_csv
from models.config import LabelConfig
from models.features.batch import compute_batch
from models.features.config import FeatureConfig
from models.features.spec import ATR_FRAC, ATR_PERCENTILE, feature_names
from models.labels.triple_barrier import (
    EXIT_GAP_TIMEOUT,
    EXIT_NONE,
    EXIT_SL,
    EXIT_TIMEOUT,
    EXIT_TP,
    triple_barrier,
)
from models.timeutil import MINUTE_MS
from models.trading.costs import Costs
from models.trading.rules import EntryRule, barrier_prices, check_exits, entry_fractions
from tests.support.shared_data import shared_data_or_skip


@pytest.mark.parametrize("symbol", ["SOLUSDT", "LTCUSDT", "DOGEUSDT"])
def test_exit_rule_reproduces_every_label_of_real_symbols(symbol: str) -> None:
    d = shared_data_or_skip()
    fcfg = FeatureConfig()
    refs = {r: read_candles_csv(candle_files(d, [r])[r]) for r in fcfg.reference_symbols}
    c = read_candles_csv(candle_files(d, [symbol])[symbol])
    x = compute_batch(c, refs, fcfg)
    names = feature_names(fcfg)
    atr, pct = x[:, names.index(ATR_FRAC)], x[:, names.index(ATR_PERCENTILE)]
    lcfg, costs = LabelConfig(), Costs()
    lab = triple_barrier(c, atr, pct, lcfg, costs)

    rows = np.flatnonzero(lab.valid)
    assert len(rows) > 50_000
    tp_frac, sl_frac, ok = entry_fractions(atr[rows], pct[rows], lcfg)
    assert ok.all()
    entry = c.open[rows + 1]
    tp, sl = barrier_prices(entry, tp_frac, sl_frac)
    deadline = c.ts[rows] + lcfg.horizon_bars * MINUTE_MS
    ohlc = np.column_stack([c.open, c.high, c.low, c.close])
    n = len(c)
    kind = np.zeros(len(rows), np.int8)
    price = np.full(len(rows), np.nan)
    off = np.zeros(len(rows), np.int64)
    active = np.ones(len(rows), bool)
    k = 0
    while active.any():
        k += 1
        a = np.flatnonzero(active)
        j = rows[a] + k
        assert (j < n).all(), "a valid label always resolves inside the data"
        kd, pr = check_exits(c.ts[j], ohlc[j], tp[a], sl[a], deadline[a])
        hit = kd != EXIT_NONE
        kind[a[hit]], price[a[hit]], off[a[hit]] = kd[hit], pr[hit], k
        active[a[hit]] = False
        assert k <= lcfg.horizon_bars + 1
    assert np.array_equal(off, lab.exit_offset[rows])
    assert np.array_equal(kind, lab.exit_kind[rows])
    ret = np.asarray(costs.net_return(entry, price), dtype=np.float32)
    assert np.array_equal(ret, lab.ret_net[rows])
    # every kind of exit occurs, the outages give gap time-outs
    for kd in (EXIT_TP, EXIT_SL, EXIT_TIMEOUT):
        assert (kind == kd).sum() > 100
    assert (kind == EXIT_GAP_TIMEOUT).sum() >= 1


def test_one_bar_touching_both_barriers_exits_at_the_stop() -> None:
    bars = np.array([[100.0, 103.0, 97.0, 101.0], [100.0, 103.0, 99.0, 101.0], [96.0, 97.0, 95.0, 96.0],
                     [104.0, 105.0, 100.0, 101.0], [100.0, 101.0, 99.5, 100.5]])  # fmt: skip
    tp = np.full(5, 102.0)
    sl = np.full(5, 98.0)
    deadline = np.array([10, 10, 10, 10, 5]) * MINUTE_MS
    kind, price = check_exits(5 * MINUTE_MS, bars, tp, sl, deadline)
    assert kind.tolist() == [EXIT_SL, EXIT_TP, EXIT_SL, EXIT_TP, EXIT_TIMEOUT]
    assert price.tolist() == [98.0, 102.0, 96.0, 104.0, 100.5]  # levels, gaps at the open, close at the deadline
    kind, price = check_exits(11 * MINUTE_MS, bars[:1], tp[:1], sl[:1], deadline[:1])
    assert kind.tolist() == [EXIT_GAP_TIMEOUT] and price.tolist() == [100.0]
    nan_bar = np.full((1, 4), np.nan)
    kind, _ = check_exits(11 * MINUTE_MS, nan_bar, tp[:1], sl[:1], deadline[:1])
    assert kind.tolist() == [EXIT_NONE]


class _Pred:
    er_threshold = 0.001
    meta_threshold = 0.55
    meta = object()


def test_entry_rule_gates_and_the_one_probability_gate() -> None:
    er = np.array([0.002, 0.002, 0.0005, np.nan, 0.003])
    p = np.array([0.60, 0.50, 0.90, 0.9, np.nan])
    rule = EntryRule.from_predictor(_Pred())
    assert rule.mask(er, p).tolist() == [True, False, False, False, False]
    assert EntryRule.from_predictor(_Pred(), use_meta=False).mask(er).tolist() == [True, True, False, False, True]
    # risk.min_probability above the bundle's threshold raises the one gate; below it changes nothing
    assert EntryRule.for_trading(_Pred(), min_probability=0.65).mask(er, p).tolist() == [False] * 5
    assert EntryRule.for_trading(_Pred(), min_probability=0.2).p_threshold == 0.55
    q = EntryRule(0.001, None, q05_threshold=-0.01)
    assert q.mask(er, None, np.array([-0.02, 0.0, 0.0, 0.0, 0.0])).tolist() == [False, True, False, False, True]
    with pytest.raises(ValueError, match="q05"):
        q.mask(er)
