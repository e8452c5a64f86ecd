"""The engine's side of the operator's commands (bot.ops.control), on real candles with the
small real bundle: the pause gate, `close_out` (flatten / force-exit between two minutes) and
`set_risk_config` (the risk section reloaded)."""

from __future__ import annotations

import numpy as np
import pytest

from bot.backtest.runner import load_window, minute_matrix
from bot.engine import Engine, TradingConfig
from bot.engine.engine import SKIP_PAUSED
from models.config import CostConfig
from models.timeutil import HOUR_MS, MINUTE_MS
from models.trading.costs import Costs
from risk.config import RiskConfig
from tests.support.engine import SYMBOLS

pytestmark = pytest.mark.slow  # real bundle + real candles; part of make test

FLOOR_OFF = TradingConfig(min_validation_pf=0, min_validation_trades=0)
RISK = RiskConfig(cooldown_after_stop_minutes=0)
PAPER = CostConfig()


@pytest.fixture(scope="module")
def window(engine_source, engine_bundle):  # noqa: ANN001, ANN201
    start = engine_bundle.data_range[1] + HOUR_MS
    end = start + 24 * HOUR_MS
    eng = Engine(SYMBOLS, engine_bundle)
    data = load_window(engine_source, eng.symbols, start, end, eng.features.warmup)
    minutes, bars = minute_matrix(data, eng.symbols, start, end)
    return start, data, minutes, bars


def _engine(bundle, window, risk: RiskConfig = RISK) -> Engine:  # noqa: ANN001
    start, data, _, _ = window
    eng = Engine(SYMBOLS, bundle, trading=FLOOR_OFF, risk=risk, costs=PAPER)
    eng.warm_up({s: c.between(None, start) for s, c in data.items()})
    return eng


def _key(t) -> tuple:  # noqa: ANN001
    return (t.symbol, t.entry_ts, t.exit_ts, t.exit_reason, t.qty, t.entry_price, t.exit_price)


def test_a_paused_engine_enters_nothing_and_its_positions_exit_as_they_would(engine_bundle, window) -> None:  # noqa: ANN001
    _, _, minutes, bars = window
    a, b = _engine(engine_bundle, window), _engine(engine_bundle, window)
    t = 0
    while len(a.positions) < 2 or a.broker.pending():
        a.step(int(minutes[t]), bars[t])
        b.step(int(minutes[t]), bars[t])
        t += 1
        assert t < len(minutes), "never held two positions"
    held = {(s, p.entry_ts) for s, p in b.positions.items()}
    b.paused = True
    closed_a, closed_b, entered_a, decisions_b = [], [], 0, []
    for k in range(t, len(minutes)):
        ra, rb = a.step(int(minutes[k]), bars[k]), b.step(int(minutes[k]), bars[k])
        closed_a += ra.closed
        closed_b += rb.closed
        entered_a += len(ra.opened)
        decisions_b += rb.decisions
    assert entered_a >= 5, "the unpaused engine kept trading (else the pause proves nothing)"
    assert not [d for d in decisions_b if d.action == "enter"] and not b.broker.pending()
    paused = [d for d in decisions_b if d.reason == SKIP_PAUSED]
    assert len(paused) >= entered_a and b.skips[SKIP_PAUSED] == len(paused)
    # the positions held at the pause closed exactly as in the engine that was not paused
    assert {(x.symbol, x.entry_ts) for x in closed_b} == held
    assert sorted(map(_key, closed_b)) == sorted(_key(x) for x in closed_a if (x.symbol, x.entry_ts) in held)


def test_close_out_drops_the_waiting_entries_and_sells_at_the_last_close(engine_bundle, window) -> None:  # noqa: ANN001
    _, _, minutes, bars = window
    eng = _engine(engine_bundle, window)
    t = 0
    while not (len(eng.positions) >= 2 and eng.broker.pending()):
        eng.step(int(minutes[t]), bars[t])
        t += 1
        assert t < len(minutes), "never held two positions with an entry waiting"
    last = bars[t - 1]
    held = dict(eng.positions)
    waiting = {it.client_order_id: it.symbol for it in eng.broker.pending()}
    cash0 = eng.cash
    costs = Costs.from_config(PAPER)
    one = sorted(held)[0]
    res = eng.close_out(eng.last_ts, "force_exit", [one])
    assert [x.symbol for x in res.closed] == [one] and set(eng.positions) == set(held) - {one}
    assert res.closed[0].exit_reason == "force_exit" and res.closed[0].exit_ts == eng.last_ts
    assert res.closed[0].exit_price == pytest.approx(float(costs.sell_fill(last[eng.index[one], 3])))
    res = eng.close_out(eng.last_ts, "flatten")
    assert not eng.positions and not eng.broker.pending()
    assert sorted(x.symbol for x in res.closed) == sorted(set(held) - {one})
    assert {c for c, why in res.cancelled if why == "flatten"} == set(waiting)
    skipped = {(d.symbol, d.reason) for d in res.decisions if d.action == "skip"}
    assert skipped == {(s, "flatten") for s in waiting.values()}
    sold = sum(p.qty * float(costs.sell_fill(last[eng.index[s], 3])) for s, p in held.items())
    fees = sum(float(costs.fee(p.qty * float(costs.sell_fill(last[eng.index[s], 3])))) for s, p in held.items())
    assert eng.cash == pytest.approx(cash0 + sold - fees, rel=1e-12)
    # the dropped entries never fill: the next minute opens none of them
    nxt = eng.step(int(minutes[t]), bars[t])
    assert not {p.client_order_id for p in nxt.opened} & set(waiting)


def test_reloading_the_risk_section_is_a_restart_with_it_and_keeps_the_risk_state(engine_bundle, window) -> None:  # noqa: ANN001
    _, _, minutes, bars = window
    new = RISK.model_copy(update={"max_positions": 1, "correlation_window": 120, "min_probability": 0.6})
    reloaded, built = _engine(engine_bundle, window), _engine(engine_bundle, window, new)
    ret_before = reloaded._ret.window(120).copy()
    reloaded.set_risk_config(new)
    assert reloaded.risk.cfg.max_positions == 1 and reloaded.risk.cfg.min_probability == 0.0  # the gate is the rule's
    assert reloaded.rule == built.rule and np.array_equal(reloaded._ret.window(120), ret_before, equal_nan=True)
    ta, tb, skips = [], [], 0
    for k in range(len(minutes)):
        ra, rb = reloaded.step(int(minutes[k]), bars[k]), built.step(int(minutes[k]), bars[k])
        ta += ra.closed
        tb += rb.closed
        skips += ra.skips["max_positions"]
        assert len(reloaded.positions) <= 1
    assert len(ta) >= 5 and skips > 0 and [_key(x) for x in ta] == [_key(x) for x in tb]
    # the risk state carries over: a tripped kill switch and a cooldown survive a reload
    ts = int(minutes[-1])
    reloaded.set_risk_config(RISK.model_copy(update={"cooldown_after_stop_minutes": 30}))
    reloaded.risk.update_equity(reloaded.equity(), ts)
    reloaded.risk.update_equity(reloaded.equity() * 0.5, ts + MINUTE_MS)
    reloaded.risk.record_stop_loss("SOLUSDT", ts)
    assert reloaded.risk.kill_switch.tripped == "max_drawdown"
    state = reloaded.risk.to_dict()
    reloaded.set_risk_config(RISK.model_copy(update={"cooldown_after_stop_minutes": 45}))
    assert reloaded.risk.kill_switch.tripped == "max_drawdown" and reloaded.risk.cooldowns.until("SOLUSDT") == ts + 30 * MINUTE_MS
    assert reloaded.risk.to_dict() == state and reloaded.risk.cfg.max_positions == 5
    assert reloaded.risk.cfg.cooldown_after_stop_minutes == 45
