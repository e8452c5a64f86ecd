"""The engine and the backtest on real candles with a small real bundle (tests/support/engine.py).

Tests that compare trades lower the no-edge floor in their own trading config so that the
bundle trades, and assert a minimum number of trades: parity over zero trades proves nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from bot.backtest.runner import load_window, minute_matrix, online_feature_rows, run_backtest
from bot.engine import Engine, PaperBroker, TradingConfig, client_order_id, validated_edge
from bot.engine.records import OrderIntent
from models.config import CostConfig
from models.evaluation.bundle_eval import evaluate_bundle
from models.evaluation.trade_stats import trade_stats
from models.timeutil import DAY_MS, HOUR_MS, MINUTE_MS
from models.trading.costs import Costs
from risk.config import RiskConfig
from tests.support.engine import SYMBOLS, restarted_engine

pytestmark = pytest.mark.slow  # real bundle + real candles; part of make test

FLOOR_OFF = TradingConfig(min_validation_pf=0, min_validation_trades=0)
# the trainer's simulation: a fixed 1/N per symbol, no correlation filter, no position limit,
# and the one probability gate at the bundle's own meta threshold
TRAINER_PROFILE = FLOOR_OFF.model_copy(update={"sizing": "equal_slots"})
RISK_AT_BUNDLE_GATE = RiskConfig(min_probability=0.0)
# the bundle was trained without costs (so that its er is often > 0 and the risk manager trades);
# the paper account pays the default fee and slippage, through models.trading.costs
PAPER = CostConfig()
RISK = RiskConfig(cooldown_after_stop_minutes=0)  # more trades per test day


def _window(bundle, days: float) -> tuple[int, int]:  # noqa: ANN001
    start = bundle.data_range[1] + HOUR_MS
    return start, start + int(days * DAY_MS)


def _key(t) -> tuple:  # noqa: ANN001
    return (t.symbol, t.decision_ts, t.entry_ts, t.exit_ts, t.exit_reason, t.qty, t.entry_price, t.exit_price, t.ret)


@pytest.fixture(scope="module")
def day_data(engine_source, engine_bundle):  # noqa: ANN001, ANN201
    start, end = _window(engine_bundle, 1.0)
    eng = Engine(SYMBOLS, engine_bundle)
    return start, end, load_window(engine_source, eng.symbols, start, end, eng.features.warmup)


@pytest.fixture(scope="module")
def day_run(engine_source, engine_bundle, day_data):  # noqa: ANN001, ANN201
    start, end, data = day_data
    return run_backtest(engine_source, engine_bundle, SYMBOLS, start, end, trading=FLOOR_OFF, risk=RISK, costs=PAPER, data=data)


def test_backtest_reproduces_bot_evaluate_trade_by_trade(engine_source, engine_bundle, tmp_path) -> None:  # noqa: ANN001
    start, end = _window(engine_bundle, 3.0)
    rep = evaluate_bundle(engine_source, engine_bundle, start_ms=start, end_ms=end, work_dir=tmp_path / "e", with_trades=True)
    res = run_backtest(engine_source, engine_bundle, SYMBOLS, start, end, trading=TRAINER_PROFILE, risk=RISK_AT_BUNDLE_GATE)
    want = sorted((t["symbol"], t["entry_ts"], t["exit_ts"], np.float32(t["ret"])) for t in rep["trades"])
    got = sorted((t.symbol, t.entry_ts, t.exit_ts, np.float32(t.ret)) for t in res.trades)
    assert len(want) >= 50
    assert got == want
    assert trade_stats(np.array([g[3] for g in got]))["profit_factor"] == rep["overall"]["profit_factor"]
    assert all(t.exit_reason in ("tp", "sl", "timeout", "gap_timeout") for t in res.trades)


def test_block_scoring_gives_the_same_trades_as_minute_by_minute(engine_source, engine_bundle, day_data, day_run) -> None:  # noqa: ANN001
    start, end, data = day_data
    per_minute = run_backtest(engine_source, engine_bundle, SYMBOLS, start, end, trading=FLOOR_OFF, risk=RISK, costs=PAPER, data=data, block_minutes=1)
    assert len(day_run.trades) >= 50
    assert [_key(t) for t in per_minute.trades] == [_key(t) for t in day_run.trades]
    assert per_minute.decisions == day_run.decisions
    assert np.array_equal(per_minute.equity, day_run.equity)


def test_deterministic_across_runs(engine_source, engine_bundle, day_data, day_run) -> None:  # noqa: ANN001
    start, end, data = day_data
    again = run_backtest(engine_source, engine_bundle, SYMBOLS, start, end, trading=FLOOR_OFF, risk=RISK, costs=PAPER, data=data)
    assert len(again.trades) >= 50
    assert [_key(t) for t in again.trades] == [_key(t) for t in day_run.trades]
    assert again.decisions == day_run.decisions and again.skips == day_run.skips
    assert np.array_equal(again.equity, day_run.equity)


def test_perturbing_candles_after_t_leaves_every_decision_up_to_t_unchanged(engine_source, engine_bundle, day_data,
                                                                             day_run) -> None:  # fmt: skip  # noqa: ANN001
    start, end, data = day_data
    cut = start + 12 * HOUR_MS
    rng = np.random.default_rng(7)
    bent = {}
    for s, c in data.items():
        after = c.ts > cut
        k = np.where(after, rng.uniform(0.9, 1.1, len(c)), 1.0)
        wide = np.where(after, 0.02, 0.0)
        bent[s] = dataclasses.replace(c, open=c.open * k, high=c.high * k * (1 + wide), low=c.low * k * (1 - wide),
                                      close=c.close * k, volume=c.volume * k)  # fmt: skip
    other = run_backtest(engine_source, engine_bundle, SYMBOLS, start, end, trading=FLOOR_OFF, risk=RISK, costs=PAPER, data=bent)
    before = [d for d in day_run.decisions if d.ts <= cut]
    assert len([d for d in before if d.action == "enter"]) >= 20
    assert [d for d in other.decisions if d.ts <= cut] == before
    assert [_key(t) for t in other.trades if t.exit_ts <= cut] == [_key(t) for t in day_run.trades if t.exit_ts <= cut]
    assert np.array_equal(other.equity[other.equity_ts <= cut], day_run.equity[day_run.equity_ts <= cut])
    # and the perturbation did change what came after (the test can fail)
    assert [d for d in other.decisions if d.ts > cut] != [d for d in day_run.decisions if d.ts > cut]


def test_watch_only_with_the_default_floor_makes_no_orders_and_says_why(engine_source, engine_bundle, day_data,
                                                                       day_run) -> None:  # fmt: skip  # noqa: ANN001
    start, end, data = day_data
    wf = engine_bundle.manifest["walk_forward"]["all"]["overall"]
    assert (wf["profit_factor"] or 0.0) < 1.05 or wf["trades"] < 300
    res = run_backtest(engine_source, engine_bundle, SYMBOLS, start, end, trading=TradingConfig(), risk=RISK, costs=PAPER, data=data)
    assert res.orders == 0 and res.trades == []
    assert res.watch_reason is not None and "has no validated edge" in res.watch_reason and "watching only" in res.watch_reason
    assert engine_bundle.version in res.watch_reason and "WATCH ONLY" in res.status_line
    assert res.skips["watch_only"] >= 50 and {d.reason for d in res.decisions} == {"watch_only"}
    assert day_run.orders >= 100  # the same bundle with the floor lowered trades


def test_validated_edge_message_names_pf_and_floor() -> None:
    m = {"version": "v7", "walk_forward": {"all": {"overall": {"profit_factor": 0.87, "trades": 900}}}}
    e = validated_edge(m, TradingConfig())
    assert not e.ok and e.reason == "model v7 has no validated edge: PF 0.87 < 1.05, watching only"
    assert validated_edge(m, TradingConfig(min_validation_pf=0.8)).ok
    few = validated_edge(m, TradingConfig(min_validation_pf=0.8, min_validation_trades=1000))
    assert not few.ok and "900 out-of-sample trades < 1000" in few.reason
    assert not validated_edge({"version": "v8", "walk_forward": {"folds": []}}, TradingConfig()).ok


def test_made_up_minutes_are_never_entered_and_are_counted(engine_source, engine_bundle, day_data) -> None:  # noqa: ANN001
    start, end, data = day_data
    btc_hole = (start + 2 * HOUR_MS, start + 6 * HOUR_MS)  # BTC has no candles: a flat fill
    sol_hole = (start + 10 * HOUR_MS, start + 16 * HOUR_MS)
    holed = dict(data)
    for sym, (a, b) in (("BTCUSDT", btc_hole), ("SOLUSDT", sol_hole)):
        c = data[sym]
        keep = (c.ts < a) | (c.ts >= b)
        holed[sym] = dataclasses.replace(c, **{f: getattr(c, f)[keep] for f in ("ts", "open", "high", "low", "close", "volume")})
    res = run_backtest(engine_source, engine_bundle, SYMBOLS, start, end, trading=FLOOR_OFF, risk=RISK, costs=PAPER, data=holed)
    assert res.skips["reference_stale"] >= 20
    assert res.skips["symbol_filled"] >= 5
    entered = [d for d in res.decisions if d.action == "enter"]
    assert len(entered) >= 50
    assert not [d for d in entered if btc_hole[0] <= d.ts < btc_hole[1]]
    assert not [d for d in entered if d.symbol == "SOLUSDT" and sol_hole[0] <= d.ts < sol_hole[1]]
    skipped = [d for d in res.decisions if d.action == "skip" and d.reason == "reference_stale"]
    assert all(btc_hole[0] <= d.ts < btc_hole[1] for d in skipped)


def test_paper_fills_by_hand(day_data, day_run) -> None:  # noqa: ANN001
    start, end, data = day_data
    fee, slip = PAPER.fee_rate, PAPER.slippage_bps / 10_000
    costs = Costs(fee, slip)
    trades = day_run.trades
    assert len(trades) >= 50
    for t in trades:
        c = data[t.symbol]
        i = int(np.searchsorted(c.ts, t.entry_ts))
        assert c.ts[i] == t.entry_ts == t.decision_ts + MINUTE_MS
        open_ = c.open[i]
        assert t.entry_ref_price == open_ and t.entry_price == open_ * (1 + slip)
        assert t.exit_price == t.exit_ref_price * (1 - slip)
        entry_fee = t.qty * t.entry_price * fee
        exit_fee = t.qty * t.exit_price * fee
        assert math.isclose(t.fees, entry_fee + exit_fee, rel_tol=1e-12)
        assert math.isclose(t.pnl, t.qty * t.exit_price - exit_fee - (t.qty * t.entry_price + entry_fee), rel_tol=1e-9, abs_tol=1e-9)
        assert t.ret == costs.net_return(t.entry_ref_price, t.exit_ref_price)
        hand = t.exit_ref_price * (1 - slip) * (1 - fee) / (open_ * (1 + slip) * (1 + fee)) - 1
        assert math.isclose(t.ret, hand, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(t.ret, t.pnl / (t.qty * t.entry_price + entry_fee), rel_tol=1e-6, abs_tol=1e-12)
        j = int(np.searchsorted(c.ts, t.exit_ts))
        if t.exit_reason == "timeout":
            assert t.exit_ref_price == c.close[j] and t.exit_ts == t.decision_ts + 60 * MINUTE_MS
        elif t.exit_reason in ("tp", "sl"):
            assert c.low[j] <= t.exit_ref_price <= c.high[j] or t.exit_ref_price == c.open[j]
    # the account adds up: cash = initial + all pnl when flat
    assert math.isclose(day_run.cash[-1], 10_000 + sum(t.pnl for t in trades), rel_tol=1e-9)


def test_state_roundtrip_resumes_positions_with_their_barriers(engine_bundle, day_data) -> None:  # noqa: ANN001
    start, end, data = day_data
    a = Engine(SYMBOLS, engine_bundle, trading=FLOOR_OFF, risk=RISK, costs=PAPER)
    a.warm_up({s: c.between(None, start) for s, c in data.items()})
    minutes, bars = minute_matrix(data, a.symbols, start, end)
    t = 0
    while not (len(a.positions) >= 2 and a.broker.pending()):
        a.step(int(minutes[t]), bars[t])
        t += 1
        assert t < len(minutes), "never held two positions with an order pending"
    state = json.loads(json.dumps(a.state_dict()))
    # the restarted daemon warms its features from the store up to the last minute it processed
    b = restarted_engine(state, engine_bundle, data, start, minutes, bars, t, trading=FLOOR_OFF, risk=RISK, costs=PAPER)
    assert b.symbols == a.symbols
    assert b.cash == a.cash and b.positions == a.positions and b.broker.pending() == a.broker.pending()
    assert b.risk.to_dict() == a.risk.to_dict() and b.last_ts == a.last_ts
    held = set(a.positions)
    ta, tb = [], []
    for k in range(t, min(t + 360, len(minutes))):
        ta += a.step(int(minutes[k]), bars[k]).closed
        tb += b.step(int(minutes[k]), bars[k]).closed
    assert held <= {x.symbol for x in ta}, "the positions held at the restart closed"
    assert len(ta) >= 10 and [_key(x) for x in tb] == [_key(x) for x in ta]
    assert b.cash == a.cash


def test_swap_bundle_keeps_open_positions_and_their_barriers(engine_bundle, day_data) -> None:  # noqa: ANN001
    start, end, data = day_data
    eng = Engine(SYMBOLS, engine_bundle, trading=FLOOR_OFF, risk=RISK, costs=PAPER)
    eng.warm_up({s: c.between(None, start) for s, c in data.items()})
    minutes, bars = minute_matrix(data, eng.symbols, start, end)
    t = 0
    while not eng.positions:
        eng.step(int(minutes[t]), bars[t])
        t += 1
    before = dict(eng.positions)
    eng.swap_bundle(engine_bundle)
    assert eng.positions == before
    eng.step(int(minutes[t]), bars[t])
    for s, p in eng.positions.items():
        if s in before:
            assert (p.tp_price, p.sl_price, p.expires_ts) == (before[s].tp_price, before[s].sl_price, before[s].expires_ts)


def test_order_ids_are_deterministic_and_the_paper_broker_is_idempotent() -> None:
    a = client_order_id("20261130T000000Z-abcdef12", "DOGEUSDT", 1_618_000_000_000 - 40_000, "entry")
    assert a == client_order_id("20261130T000000Z-abcdef12", "DOGEUSDT", 1_618_000_000_000 - 40_000, "entry")
    assert a != client_order_id("20261130T000000Z-abcdef13", "DOGEUSDT", 1_618_000_000_000 - 40_000, "entry")
    assert a != client_order_id("20261130T000000Z-abcdef12", "DOGEUSDT", 1_618_000_000_000 - 40_000, "exit")
    assert len(a) <= 36 and a.replace("-", "").isalnum()
    broker = PaperBroker(Costs())
    it = OrderIntent(a, "DOGEUSDT", "buy", "entry", 10.0, 0, 0.3, "signal")
    broker.submit([it])
    broker.submit([it])
    bars = np.array([[0.31, 0.32, 0.30, 0.31, 1.0]])
    up = broker.poll(MINUTE_MS, bars, {"DOGEUSDT": 0})
    assert len(up.fills) == 1 and up.fills[0].price == 0.31 * 1.0002 and up.fills[0].ref_price == 0.31
    assert broker.poll(2 * MINUTE_MS, bars, {"DOGEUSDT": 0}).fills == []
    late = OrderIntent("x2", "DOGEUSDT", "buy", "entry", 1.0, 0, 0.3, "signal")
    broker.submit([late])
    assert broker.poll(2 * MINUTE_MS, bars, {"DOGEUSDT": 0}).cancelled == [("x2", "no_next_bar")]


def test_er_gated_scoring_equals_full_scoring_on_the_rows_that_pass(engine_bundle, day_data) -> None:  # noqa: ANN001
    start, end, data = day_data
    eng = Engine(SYMBOLS, engine_bundle)
    eng.warm_up({s: c.between(None, start) for s, c in data.items()})
    minutes, bars = minute_matrix(data, eng.symbols, start, start + 4 * HOUR_MS)
    feats = online_feature_rows(eng.features, minutes, bars).reshape(-1, len(eng.features.names))
    x = np.ascontiguousarray(feats[:, engine_bundle.column_index(eng.features.names)])
    full = engine_bundle.predictor.predict(x)
    thr = float(np.quantile(full["er"], 0.8))
    gated = engine_bundle.predictor.predict(x, er_gate=thr)
    keep = full["er"] > thr
    assert 0.1 < keep.mean() < 0.3
    for k in ("er", "er_lgb", "er_cat"):
        assert np.array_equal(gated[k], full[k])
    for k in ("q05", "e_mae", "e_hold", "p"):
        assert np.array_equal(gated[k][keep], full[k][keep]) and np.isnan(gated[k][~keep]).all()


def test_a_made_up_row_fills_no_order_and_triggers_no_exit(engine_bundle, day_data) -> None:  # noqa: ANN001
    start, end, data = day_data
    eng = Engine(SYMBOLS, engine_bundle, trading=FLOOR_OFF, risk=RISK, costs=PAPER)
    eng.warm_up({s: c.between(None, start) for s, c in data.items()})
    minutes, bars = minute_matrix(data, eng.symbols, start, end)
    t = 0
    while not (eng.broker.pending() and eng.positions):
        eng.step(int(minutes[t]), bars[t])
        t += 1
    pend = {it.symbol for it in eng.broker.pending()}
    held = dict(eng.positions)
    fake = bars[t].copy()
    made_up = np.zeros(len(eng.symbols), bool)
    for s in pend | set(held):  # the feed made these rows up: flat at a price that hits every barrier
        i = eng.index[s]
        made_up[i] = True
        fake[i, :4] = held[s].sl_price * 0.5 if s in held else fake[i, 3]
        fake[i, 4] = 0.0
    res = eng.step(int(minutes[t]), fake, made_up)
    assert {cid for cid, why in res.cancelled if why == "no_next_bar"} and not res.opened
    assert not res.closed and set(eng.positions) == set(held)
    assert not [d for d in res.decisions if d.action == "enter" and made_up[eng.index[d.symbol]]]
