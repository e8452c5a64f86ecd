"""The validation trading simulator and its figures, on hand-made signals and trades."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.evaluation.trade_sim import SymbolResult, Trades, report, take_trades
from models.evaluation.trade_stats import equity_stats, trade_stats
from models.timeutil import DAY_MS
from models.training.splits import Window

T0 = 1_617_321_600_000
MIN = 60_000


def test_one_position_per_symbol_at_a_time() -> None:
    n = 25
    ts = T0 + np.arange(n) * MIN
    signal = np.zeros(n, bool)
    signal[[2, 3, 4, 7, 8, 15]] = True
    exit_ts = ts + 5 * MIN  # every trade exits at the bar 5 minutes after its decision bar
    ret = np.linspace(-0.01, 0.01, n).astype(np.float32)
    hold = np.full(n, 5.0, np.float32)
    t = take_trades(signal, ts, ret, exit_ts, hold)
    # 2 -> exits at 7, so 3 and 4 are skipped; 7 may be decided at the exit bar's close -> exits 12;
    # 8 is skipped; 15 is taken
    assert t.rows.tolist() == [2, 7, 15]
    assert t.entry_ts.tolist() == [ts[3], ts[8], ts[16]]  # entered at the next bar's open
    assert t.exit_ts.tolist() == [ts[7], ts[12], ts[20]]
    np.testing.assert_allclose(t.ret, ret[[2, 7, 15]])


def test_decision_rows_on_a_cadence_free_the_slot_by_exit_time() -> None:
    # rows of hourly decisions only: a trade held 90 minutes blocks the next hour's decision,
    # one held exactly 60 minutes exits at the next decision bar, which may then enter
    ts = T0 + (np.arange(6) * 60 + 59) * MIN
    signal = np.ones(6, bool)
    hold = np.array([90, 60, 60, 30, 150, 10], np.float32)
    exit_ts = ts + hold.astype(np.int64) * MIN
    t = take_trades(signal, ts, np.zeros(6, np.float32), exit_ts, hold)
    assert t.rows.tolist() == [0, 2, 3, 4]  # 2 exits at 3's decision bar: 3 may enter
    # the same decisions on every-minute rows give the same trades
    every = T0 + np.arange(6 * 60) * MIN
    sig = np.zeros(len(every), bool)
    pick = (np.arange(6) * 60 + 59)
    pick = pick[pick < len(every)]
    sig[pick] = True
    ex = np.zeros(len(every), np.int64)
    ex[pick] = exit_ts[: len(pick)]
    t2 = take_trades(sig, every, np.zeros(len(every), np.float32), ex, np.zeros(len(every), np.float32))
    assert (t2.rows // 60).tolist() == t.rows[t.rows < len(pick)].tolist()


def test_trade_stats_by_hand() -> None:
    st = trade_stats(np.array([0.02, -0.01, 0.01, -0.005]))
    assert st["trades"] == 4
    assert st["win_rate"] == 0.5
    assert st["profit_factor"] == pytest.approx(0.03 / 0.015)
    assert st["expectancy"] == pytest.approx(0.015 / 4)
    assert trade_stats(np.array([0.01]))["profit_factor"] is None  # no loss: PF undefined, not infinite
    assert trade_stats(np.array([]))["trades"] == 0


def test_equity_drawdown_and_daily_sharpe_by_hand() -> None:
    w = Window(T0, T0 + 4 * DAY_MS)
    exit_ts = np.array([T0 + 10 * MIN, T0 + DAY_MS + 10 * MIN, T0 + 2 * DAY_MS + 10 * MIN, T0 + 3 * DAY_MS])
    pnl = np.array([0.10, -0.05, -0.05, 0.02])
    st = equity_stats(exit_ts, pnl, w)
    # equity 1 -> 1.10 -> 1.05 -> 1.00 -> 1.02 ; worst drop from the 1.10 peak is 0.10 / 1.10
    assert st["max_drawdown"] == pytest.approx(0.10 / 1.10)
    daily = pnl
    assert st["sharpe_daily"] == pytest.approx(daily.mean() / daily.std(ddof=1) * math.sqrt(365))
    assert st["days"] == 4


def test_report_equal_capital_per_slot_and_exposure() -> None:
    w = Window(T0, T0 + DAY_MS)
    a = Trades(np.array([0]), np.array([T0 + MIN]), np.array([T0 + 10 * MIN]), np.array([0.04]), np.array([10.0]))
    b = Trades(np.array([0]), np.array([T0 + MIN]), np.array([T0 + 20 * MIN]), np.array([-0.02]), np.array([20.0]))
    rep = report([SymbolResult("AAA", a, np.array([0.04, 0.03])), SymbolResult("BBB", b, np.array([-0.02]))], w)
    o = rep["overall"]
    assert o["trades"] == 2
    assert o["portfolio_return"] == pytest.approx((0.04 - 0.02) / 2)  # each slot holds half the capital
    assert o["exposure"] == pytest.approx(30 / (2 * 1440))
    assert rep["per_symbol"]["AAA"]["exposure"] == pytest.approx(10 / 1440)
    assert rep["seed_metric"]["bars"] == 3
    assert rep["seed_metric"]["profit_factor"] == pytest.approx(0.07 / 0.02)


def test_overlapping_seed_metric_counts_the_same_move_many_times() -> None:
    # a 60-minute up-move, then a 10-minute drop: every bar of the up-move "wins" in the seed's
    # overlapping count, while one slot holds one trade at a time and takes the move once
    n = 130
    ts = T0 + np.arange(n) * MIN
    ret = np.where(np.arange(n) < 60, 0.01, -0.02).astype(np.float32)
    exit_ts = ts + 60 * MIN
    hold = np.full(n, 60.0, np.float32)
    signal = np.arange(n) < 70  # a label from row 70 on would exit past the last row
    t = take_trades(signal, ts, ret, exit_ts, hold)
    assert t.rows.tolist() == [0, 60]  # row 60 is decided at the first trade's exit bar
    rep = report([SymbolResult("AAA", t, ret[signal].astype(np.float64))], Window(T0, T0 + DAY_MS))
    assert rep["overall"]["trades"] == 2
    assert rep["overall"]["profit_factor"] == pytest.approx(0.01 / 0.02)  # a losing system...
    assert rep["seed_metric"]["bars"] == 70
    assert rep["seed_metric"]["profit_factor"] == pytest.approx(60 * 0.01 / (10 * 0.02))  # ...looks like a winner
    assert rep["seed_metric"]["win_rate"] == pytest.approx(60 / 70)
