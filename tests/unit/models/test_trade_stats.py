"""The one trade-statistics module: figures by hand, and months that add up to the pooled figure."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from models.evaluation.trade_sim import simulate
from models.evaluation.trade_stats import (
    MIN_TRADES,
    by_month,
    expectancy_inference,
    month_of,
    months_between,
    sharpe_stats,
    stability,
    trade_stats,
)
from models.timeutil import DAY_MS, parse_time
from models.trading.rules import EntryLevers
from tests.support.scores import synthetic_scores


def test_expectancy_inference_by_hand_and_one_minimum() -> None:
    ret = np.array([0.01, -0.004, 0.006, 0.002, -0.001])
    inf = expectancy_inference(ret)
    ref = stats.ttest_1samp(ret, 0.0)
    assert inf["trades"] == 5
    assert inf["expectancy_t"] == pytest.approx(ref.statistic) and inf["expectancy_p_value"] == pytest.approx(ref.pvalue)
    lo, hi = inf["expectancy_ci95"]
    assert lo < ret.mean() < hi and expectancy_inference(ret)["expectancy_ci95"] == [lo, hi]  # fixed seed
    # the same minimum for every statistic that needs a spread
    one = np.array([0.01])
    assert MIN_TRADES == 2
    assert expectancy_inference(one)["expectancy_t"] is None and expectancy_inference(one)["expectancy_ci95"] is None
    assert sharpe_stats(one)["sharpe"] is None
    two = np.array([0.01, -0.002])
    assert expectancy_inference(two)["expectancy_t"] is not None and sharpe_stats(two)["sharpe"] is not None
    assert sharpe_stats(ret)["sharpe"] == pytest.approx(ret.mean() / ret.std(ddof=1))


def test_months_add_up_to_the_pooled_figures() -> None:
    rng = np.random.default_rng(5)
    t0 = parse_time("2021-03-20")
    ts = np.sort(t0 + rng.integers(0, 75 * DAY_MS // 60_000, 900) * 60_000)
    ret = rng.standard_normal(900) * 0.01 + 0.0005
    months = by_month(ts, ret, months_between(t0, t0 + 75 * DAY_MS))
    assert list(months) == ["2021-03", "2021-04", "2021-05", "2021-06"]
    pooled = trade_stats(ret)
    assert sum(m["trades"] for m in months.values()) == pooled["trades"] == 900
    assert sum(m["total_return"] for m in months.values()) == pytest.approx(pooled["total_return"], rel=1e-12, abs=1e-12)
    mean = sum(m["expectancy"] * m["trades"] for m in months.values()) / 900
    assert mean == pytest.approx(pooled["expectancy"], rel=1e-12)
    wins = sum(m["win_rate"] * m["trades"] for m in months.values())
    assert wins == pytest.approx(pooled["win_rate"] * 900)
    # a month is the UTC calendar month of the decision minute
    edge = np.array([parse_time("2021-04-30T23:59"), parse_time("2021-05-01T00:00")])
    assert month_of(edge).tolist() == ["2021-04", "2021-05"]


def test_months_of_a_simulation_add_up_to_its_report() -> None:
    fs = synthetic_scores(n_sym=5, minutes=50 * 24, step_minutes=60, skill=0.3, hold=120, t0=parse_time("2021-04-20"))
    rule = EntryLevers(top_k=2, floor=True).to_rule(er_threshold=0.001, meta_threshold=0.5, round_trip=0.0024, has_meta=False)
    rep = simulate(fs, rule)
    months = by_month(rep["trade_entry_ts"] - 60_000, rep["trade_returns"], months_between(fs.window.start, fs.window.end))
    assert len(months) == 3 and all(m["trades"] > 20 for m in months.values())
    assert sum(m["trades"] for m in months.values()) == rep["overall"]["trades"]
    assert sum(m["total_return"] for m in months.values()) == pytest.approx(rep["overall"]["total_return"], rel=1e-9)


def test_stability_counts_profitable_months_and_names_the_worst() -> None:
    months = {
        "2021-04": {"trades": 40, "profit_factor": 1.3, "expectancy": 0.001},
        "2021-05": {"trades": 35, "profit_factor": 0.7, "expectancy": -0.002},
        "2021-06": {"trades": 0, "profit_factor": None, "expectancy": None},  # no trade: no edge shown
        "2021-07": {"trades": 3, "profit_factor": None, "expectancy": 0.004},  # wins only: PF undefined, profitable
    }
    st = stability(months)
    assert st["months"] == 4 and st["months_pf_above_1"] == 2 and st["share_pf_above_1"] == 0.5
    assert st["worst_month"] == "2021-05" and st["worst_pf"] == 0.7 and st["worst_expectancy"] == -0.002
    assert stability({})["share_pf_above_1"] is None
    assert math.isclose(trade_stats(np.array([0.02, -0.01]))["profit_factor"], 2.0)
