"""Worked numbers for every sizing rule: each expected value is computed by hand from the formula
in the test itself (Half Kelly, stop risk with the ATR floor, caps, lot rounding, minimums)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from risk import Candidates, MarketRules, OpenPosition, Portfolio, Reason, RiskConfig, RiskManager
from risk.errors import RiskInputError
from risk.reasons import PRECEDENCE
from risk.sizing import kelly_fraction, payoff_ratio, round_qty_down, stop_distance

NOW = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC
SYMS = ("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT")


def manager(cost: float = 0.002, rules: dict[str, MarketRules] | None = None, **cfg: object) -> RiskManager:
    rules = rules if rules is not None else {s: MarketRules(qty_step=0.01) for s in SYMS}
    return RiskManager(RiskConfig(**cfg), SYMS, rules, round_trip_cost=cost)


def cands(idx, er, p, price, tp, sl, atr, payoff=None) -> Candidates:
    n = len(idx)

    def arr(v):
        return np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).copy()

    return Candidates(np.asarray(idx), arr(er), arr(p), arr(price), arr(tp), arr(sl), arr(atr),
                      None if payoff is None else arr(payoff))  # fmt: skip


def independent_returns(n_sym: int = len(SYMS), window: int = 240, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1e-3, (n_sym, window)).astype(np.float32)


def one(m: RiskManager, c: Candidates, pf: Portfolio | None = None):
    pf = pf or Portfolio(10_000.0, 10_000.0)
    return m.decide(c, pf, independent_returns(), NOW)


# --- the formulas ---------------------------------------------------------------------------


def test_payoff_ratio_is_net_of_round_trip_costs():
    # win 2% - 0.2% costs = 1.8%; loss 1% + 0.2% = 1.2%  ->  b = 1.5
    b = payoff_ratio(np.array([0.02]), np.array([0.01]), 0.002)
    assert b[0] == pytest.approx(0.018 / 0.012)


def test_half_kelly_worked_number_and_no_edge():
    # 0.5 * (0.6 - 0.4 / 1.5) = 0.5 * 0.3333 = 0.16667
    f = kelly_fraction(np.array([0.6, 0.4, 0.6]), np.array([1.5, 1.2, -0.5]), 0.5)
    assert f[0] == pytest.approx(0.5 * (0.6 - 0.4 / 1.5))
    assert f[1] == pytest.approx(0.5 * (0.4 - 0.6 / 1.2)) and f[1] < 0  # -0.05: negative edge
    assert np.isnan(f[2])  # b <= 0: a take-profit loses after costs


def test_stop_distance_uses_the_atr_floor_and_costs():
    d = stop_distance(np.array([0.005, 0.02]), np.array([0.01, 0.01]), 1.0, 0.002)
    assert d[0] == pytest.approx(0.01 + 0.002)  # ATR wider than the SL barrier
    assert d[1] == pytest.approx(0.02 + 0.002)


def test_round_qty_down_never_exceeds_the_notional():
    assert round_qty_down(1000.0, 333.33, 0.01, 2) == 3.0  # 1000 / 333.33 = 3.00003
    assert round_qty_down(0.3, 1.0, 0.1, 1) == 0.3  # 0.3 / 0.1 = 2.9999999999999996 must still give 3 steps
    assert round_qty_down(0.29999, 1.0, 0.1, 1) == 0.2
    assert round_qty_down(0.3, 3.0, 0.1, 1) == 0.0  # 0.1 * 3.0 = 0.30000000000000004 > 0.3 -> one step less
    assert round_qty_down(0.0, 1.0, 0.1, 1) == 0.0
    assert round_qty_down(-5.0, 1.0, 0.1, 1) == 0.0


# --- which cap binds -----------------------------------------------------------------------


def test_kelly_capped_by_max_fraction_binds():
    m = manager()
    d = one(m, cands([0], 0.004, 0.6, 333.33, 0.02, 0.01, 0.004))
    # b = 1.5, kelly = 0.16667 -> capped at 0.10 * 10_000 = 1000; risk cap 50 / 0.012 = 4166.7;
    # symbol cap 2000 -> 1000 at 333.33 with step 0.01 -> 3.00 (999.99)
    assert d.reason[0] == Reason.TAKEN
    assert d.qty[0] == 3.0
    assert d.notional[0] == pytest.approx(3 * 333.33)
    assert d.cap_kelly[0] == pytest.approx(0.10 * 10_000)
    assert d.cap_risk[0] == pytest.approx(0.005 * 10_000 / (0.01 + 0.002))
    assert d.rows()[0].details["binding"] == "kelly"
    assert d.rows()[0].size_fraction == pytest.approx(999.99 / 10_000)


def test_uncapped_half_kelly_fraction():
    m = manager(max_fraction_per_trade=1.0, max_per_symbol=1.0, risk_per_trade=0.1)
    d = one(m, cands([0], 0.004, 0.6, 1.0, 0.02, 0.01, 0.004))
    kelly = 0.5 * (0.6 - 0.4 / (0.018 / 0.012))
    assert d.kelly_raw[0] == pytest.approx(kelly)
    assert d.notional[0] == pytest.approx(np.floor(kelly * 10_000 / 0.01) * 0.01)


def test_stop_risk_binds():
    m = manager(risk_per_trade=0.001, rules={s: MarketRules(qty_step=0.1) for s in SYMS})
    d = one(m, cands([0], 0.004, 0.6, 10.0, 0.06, 0.03, 0.01))
    # a stop at 3% + 0.2% costs may lose 0.1% of 10_000 = 10 -> notional 10 / 0.032 = 312.5 -> 31.2 @ 10
    assert d.cap_risk[0] == pytest.approx(10 / 0.032)
    assert d.qty[0] == pytest.approx(31.2)
    assert d.rows()[0].details["binding"] == "risk"
    loss_at_stop = d.notional[0] * (0.03 + 0.002)
    assert loss_at_stop <= 0.001 * 10_000


@pytest.mark.parametrize(("floor", "expected"), [(1.0, 20 / 0.012), (0.0, 20 / 0.007)])
def test_atr_floor_widens_the_sizing_stop(floor, expected):
    m = manager(risk_per_trade=0.002, max_fraction_per_trade=1.0, max_per_symbol=1.0, stop_atr_floor=floor,
                rules={s: MarketRules(qty_step=1.0) for s in SYMS})  # fmt: skip
    # SL 0.5% but ATR 1%: with the floor the stop counts as 1% + 0.2% costs
    d = one(m, cands([0], 0.004, 0.7, 1.0, 0.02, 0.005, 0.01))
    assert d.cap_risk[0] == pytest.approx(expected)
    assert d.qty[0] == np.floor(expected)


def test_per_symbol_cap_binds():
    m = manager(max_per_symbol=0.05)
    d = one(m, cands([0], 0.004, 0.6, 1.0, 0.02, 0.01, 0.004))
    assert d.notional[0] == pytest.approx(500.0)
    assert d.rows()[0].details["binding"] == "symbol_cap"


def test_exchange_max_qty_binds():
    m = manager(rules={s: MarketRules(qty_step=1.0, max_qty=7.0) for s in SYMS})
    d = one(m, cands([0], 0.004, 0.6, 100.0, 0.02, 0.01, 0.004))
    assert d.qty[0] == 7.0
    assert d.rows()[0].details["binding"] == "market_max"


def test_gross_exposure_budget_is_shared_in_rank_order():
    m = manager(max_gross_exposure=0.5, max_fraction_per_trade=0.2, cost=0.0)
    held = OpenPosition("DDDUSDT", qty=47.0, entry_price=100.0, price=100.0)  # 4700
    pf = Portfolio(10_000.0, 5_300.0, (held,))
    # budget 0.5 * 10_000 - 4_700 = 300; B has the higher er so it is sized first and takes it all
    d = m.decide(cands([0, 1], [0.003, 0.005], 0.6, 1.0, 0.02, 0.01, 0.004), pf, independent_returns(), NOW)
    assert d.reason[1] == Reason.TAKEN and d.notional[1] == pytest.approx(300.0)
    assert d.rows()[1].details["binding"] == "exposure"
    assert d.reason[0] == Reason.EXPOSURE_LIMIT and d.qty[0] == 0.0


def test_cash_binds_with_entry_costs():
    m = manager(cost=0.002, max_fraction_per_trade=0.2)
    held = OpenPosition("DDDUSDT", qty=95.0, entry_price=100.0, price=100.0)
    pf = Portfolio(10_000.0, 500.0, (held,))
    d = m.decide(cands([0], 0.004, 0.6, 1.0, 0.02, 0.01, 0.004), pf, independent_returns(), NOW)
    # gross budget 10_000 - 9_500 = 500, but 500 cash must also pay the entry cost (half the
    # round trip, 0.1%): 500 / 1.001 = 499.50 -> 499.50 at step 0.01
    assert d.rows()[0].details["binding"] == "cash"
    assert d.notional[0] == pytest.approx(np.floor(500 / 1.001 / 0.01) * 0.01)
    assert d.notional[0] * 1.001 <= 500.0


def test_below_min_notional_and_min_qty_are_skipped_with_their_reason():
    rules = {
        "AAAUSDT": MarketRules(qty_step=0.01, min_notional=600.0),
        "BBBUSDT": MarketRules(qty_step=1.0, min_qty=600.0),
        "CCCUSDT": MarketRules(qty_step=0.01, min_notional=500.0),
        "DDDUSDT": MarketRules(qty_step=0.01),
    }
    m = manager(rules=rules, max_per_symbol=0.05)  # every size is 500
    d = one(m, cands([0, 1, 2], [0.004, 0.003, 0.002], 0.6, 1.0, 0.02, 0.01, 0.004))
    assert [Reason(r) for r in d.reason] == [Reason.BELOW_MIN_NOTIONAL, Reason.BELOW_MIN_QTY, Reason.TAKEN]
    assert d.qty[0] == 0 and d.qty[1] == 0 and d.notional[2] == pytest.approx(500.0)


# --- gates before sizing -------------------------------------------------------------------


def test_gates_in_order_with_reasons():
    m = manager(min_probability=0.55)
    c = cands(
        [0, 1, 2, 3],
        er=[0.004, -0.001, 0.004, 0.004],
        p=[0.5, 0.9, 0.6, 0.6],
        price=[1.0, 1.0, np.nan, 1.0],
        tp=[0.02, 0.02, 0.02, 0.0025],  # D: tp 0.25% - 0.2% costs = 0.05% vs loss 1.2% -> Kelly < 0
        sl=0.01,
        atr=0.004,
    )
    d = one(m, c)
    assert [Reason(r) for r in d.reason] == [
        Reason.LOW_PROBABILITY, Reason.NON_POSITIVE_ER, Reason.INVALID_INPUT, Reason.KELLY_NON_POSITIVE,
    ]  # fmt: skip
    assert (d.qty == 0).all() and (d.notional == 0).all()


def test_validation_payoff_overrides_the_barrier_ratio():
    m = manager(max_fraction_per_trade=1.0, max_per_symbol=1.0, risk_per_trade=0.1)
    d = one(m, cands([0, 1], 0.004, 0.6, 1.0, 0.02, 0.01, 0.004, payoff=[0.5, np.nan]))
    # b = 0.5 -> 0.5 * (0.6 - 0.4 / 0.5) < 0 -> no trade; NaN falls back to the barriers (b = 1.5)
    assert d.reason[0] == Reason.KELLY_NON_POSITIVE
    assert d.payoff[1] == pytest.approx(1.5) and d.reason[1] == Reason.TAKEN


def test_missing_market_rules_and_open_position():
    m = manager(rules={"AAAUSDT": MarketRules(qty_step=0.01), "BBBUSDT": MarketRules(qty_step=0.01)})
    pf = Portfolio(10_000.0, 9_000.0, (OpenPosition("AAAUSDT", 10.0, 100.0, 100.0),))
    d = m.decide(cands([0, 1, 2], 0.004, 0.6, 1.0, 0.02, 0.01, 0.004), pf, independent_returns(), NOW)
    assert [Reason(r) for r in d.reason] == [Reason.POSITION_OPEN, Reason.TAKEN, Reason.NO_MARKET_RULES]


def test_max_positions_counts_open_and_new():
    m = manager(max_positions=3, max_fraction_per_trade=0.05)
    pf = Portfolio(10_000.0, 9_000.0, (OpenPosition("DDDUSDT", 10.0, 100.0, 100.0),))
    d = m.decide(cands([0, 1, 2], [0.002, 0.004, 0.003], 0.6, 1.0, 0.02, 0.01, 0.004), pf,
                 independent_returns(), NOW)  # fmt: skip
    # ranked B (0.004), C (0.003), A (0.002): two slots left
    assert [Reason(r) for r in d.reason] == [Reason.MAX_POSITIONS, Reason.TAKEN, Reason.TAKEN]


def test_rows_are_json_safe_and_carry_the_stable_reason_label():
    m = manager(max_per_symbol=0.05)
    d = one(m, cands([0, 1], [0.004, 0.004], [0.6, 0.3], 1.0, 0.02, 0.01, 0.004))
    rows = d.rows()
    assert rows[0].action == "enter" and rows[0].reason.label == "taken"
    assert rows[1].action == "skip" and rows[1].reason.label == "low_probability"
    text = json.dumps([r.log_fields() for r in rows], allow_nan=False)
    assert '"reason": "low_probability"' in text
    assert rows[1].details["caps"]["exposure"] is None  # never reached the shared budget


def test_reason_codes_are_stable():
    # persisted values: changing them would corrupt the decisions history
    assert {r.label: int(r) for r in Reason} == {
        "taken": 0, "invalid_input": 1, "no_market_rules": 2, "kill_switch": 3, "position_open": 4,
        "cooldown": 5, "non_positive_er": 6, "low_probability": 7, "kelly_non_positive": 8,
        "max_positions": 9, "order_rate": 10, "correlation": 11, "correlation_unknown": 12,
        "exposure_limit": 13, "insufficient_cash": 14, "below_min_qty": 15, "below_min_notional": 16,
        "stop_loss_guard": 17, "low_profit_lock": 18, "drawdown_lookback": 19,
    }  # fmt: skip
    # every skip reason has its place in the order of the checks, once
    assert sorted(PRECEDENCE) == sorted(r for r in Reason if r != Reason.TAKEN)


def test_caller_errors_are_raised_with_a_clear_message():
    m = manager()
    with pytest.raises(RiskInputError, match="twice"):
        one(m, cands([0, 0], 0.004, 0.6, 1.0, 0.02, 0.01, 0.004))
    with pytest.raises(RiskInputError, match="symbol_idx must be in"):
        one(m, cands([7], 0.004, 0.6, 1.0, 0.02, 0.01, 0.004))
    with pytest.raises(RiskInputError, match="returns must be"):
        m.decide(cands([0], 0.004, 0.6, 1.0, 0.02, 0.01, 0.004), Portfolio(1.0, 1.0), np.zeros((2, 240)), NOW)
    with pytest.raises(RiskInputError, match="equity"):
        Portfolio(float("nan"), 1.0)
    with pytest.raises(RiskInputError, match="not in the risk universe"):
        m.index_of(["BTCUSDT"])
    assert m.index_of(["CCCUSDT", "AAAUSDT"]).tolist() == [2, 0]


def test_empty_candidates_still_feed_the_kill_switch():
    m = manager(daily_loss_limit=0.03)
    m.decide(Candidates.empty(), Portfolio(10_000.0, 10_000.0), independent_returns(), NOW)
    d = m.decide(Candidates.empty(), Portfolio(9_600.0, 9_600.0), independent_returns(), NOW + 60_000)
    assert len(d) == 0 and d.kill_switch == "daily_loss" and d.kill_switch_event == "tripped:daily_loss"
