"""The protections in the engine and the backtest, on real candles with the small real bundle
(tests/support/engine.py): they trip on the engine's own closed trades and equity, block what
they say for as long as they say (checked against the run's own trades and equity curve), are
counted in the report's skip reasons, and survive a restart with the engine state."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from bot.backtest.report import write_report
from bot.backtest.runner import minute_matrix, run_backtest
from bot.engine import Engine, TradingConfig
from models.config import CostConfig
from models.timeutil import HOUR_MS, MINUTE_MS
from risk import active_protections
from risk.config import DrawdownLookbackConfig, LowProfitLockConfig, RiskConfig, StopLossGuardConfig
from risk.reasons import PROTECTION_LABELS
from tests.support.engine import SYMBOLS, restarted_engine

pytestmark = pytest.mark.slow  # real bundle + real candles; part of make test

FLOOR_OFF = TradingConfig(min_validation_pf=0, min_validation_trades=0)
PAPER = CostConfig()
BASE = RiskConfig(cooldown_after_stop_minutes=0)
# settings that trip on the test day (88 trades, 48 of them stop-losses, equity -1.4 % over the day)
STOP = StopLossGuardConfig(stop_losses=3, window_minutes=60, pause_minutes=45)
LOCK = LowProfitLockConfig(max_loss=0.005, trades=2, lock_minutes=120)
LOOKBACK = DrawdownLookbackConfig(max_drawdown=0.002, hours=2, pause_minutes=30)
PROTECTED = BASE.model_copy(update={"stop_loss_guard": STOP, "low_profit_lock": LOCK, "drawdown_lookback": LOOKBACK})


@pytest.fixture(scope="module")
def day(engine_source, engine_bundle):  # noqa: ANN001, ANN201
    from bot.backtest.runner import load_window

    start = engine_bundle.data_range[1] + HOUR_MS
    end = start + 24 * HOUR_MS
    eng = Engine(SYMBOLS, engine_bundle)
    return start, end, load_window(engine_source, eng.symbols, start, end, eng.features.warmup)


def _run(engine_source, engine_bundle, day, risk):  # noqa: ANN001, ANN202
    start, end, data = day
    return run_backtest(engine_source, engine_bundle, SYMBOLS, start, end, trading=FLOOR_OFF, risk=risk, costs=PAPER, data=data)


def test_each_protection_trips_on_the_engines_own_losses_and_blocks_what_it_says(engine_source, engine_bundle, day,
                                                                                  tmp_path) -> None:  # fmt: skip  # noqa: ANN001
    off = _run(engine_source, engine_bundle, day, BASE)
    on = _run(engine_source, engine_bundle, day, PROTECTED)
    assert not any(off.skips[k] for k in PROTECTION_LABELS)  # off by default: nothing of theirs without them
    assert all(on.skips[k] >= 10 for k in PROTECTION_LABELS), dict(on.skips)
    assert len(on.trades) < len(off.trades)
    trades = on.trades  # closed trades of the protected run: what the guards were fed
    sl_exits = np.array(sorted(t.exit_ts for t in trades if t.exit_reason == "sl"), np.int64)
    eq_at = dict(zip(on.equity_ts.tolist(), on.equity.tolist(), strict=True))
    blocks: dict[str, set[tuple[int, int, str]]] = {k: set() for k in PROTECTION_LABELS}
    for d in on.decisions:
        if d.reason not in PROTECTION_LABELS:
            continue
        until = d.details["blocked_until_ms"]
        if d.reason == "stop_loss_guard":  # global: 3 stop-loss exits in (trip - 60 min, trip]
            trip = until - STOP.pause_minutes * MINUTE_MS
            assert trip in set(sl_exits.tolist())
            assert ((sl_exits > trip - STOP.window_minutes * MINUTE_MS) & (sl_exits <= trip)).sum() >= STOP.stop_losses
            blocks[d.reason].add((trip, until, "*"))
        elif d.reason == "low_profit_lock":  # the symbol's last 2 trades by the trip lost more than 0.5 %
            trip = until - LOCK.lock_minutes * MINUTE_MS
            mine = [t for t in trades if t.symbol == d.symbol and t.exit_ts <= trip]
            assert mine[-1].exit_ts == trip and sum(t.ret for t in mine[-LOCK.trades:]) < -LOCK.max_loss
            blocks[d.reason].add((trip, until, d.symbol))
        else:  # equity 0.3 % or more below its highest of the 2 hours before the trip
            trip = until - LOOKBACK.pause_minutes * MINUTE_MS
            peak = max(e for t, e in eq_at.items() if trip - LOOKBACK.hours * HOUR_MS < t <= trip)
            assert eq_at[trip] <= peak * (1 - LOOKBACK.max_drawdown)
            blocks[d.reason].add((trip, until, "*"))
        assert trip <= d.ts < until
    # nothing was entered inside a block that applied to it
    entered = [d for d in on.decisions if d.action == "enter"]
    assert len(entered) >= 20
    for d in entered:
        for kind, spans in blocks.items():
            hit = [(a, b) for a, b, s in spans if a <= d.ts < b and s in ("*", d.symbol)]
            assert not hit, (d.symbol, d.ts, kind, hit)
    # counted in the backtest report: metrics.json and the page
    m = write_report(tmp_path / "rep", trades=on.trades, equity=on.equity_points(), benchmark=None, skips=on.skips,
                     meta={"initial_equity": 10_000.0, "symbols": SYMBOLS})  # fmt: skip
    counts = json.loads((tmp_path / "rep" / "metrics.json").read_text())["skips"]["counts"]
    assert {k: counts[k] for k in PROTECTION_LABELS} == {k: on.skips[k] for k in PROTECTION_LABELS}
    assert m["skips"]["protections"] == sum(on.skips[k] for k in PROTECTION_LABELS)
    page = (tmp_path / "rep" / "report.html").read_text()
    for k in PROTECTION_LABELS:
        row = rf'{k.replace("_", " ")} <span class="tag">protection</span></td><td[^>]*>{on.skips[k]:,}</td>'
        assert re.search(row, page), k
    assert f"{m['skips']['protections']:,} of them blocked by the protections" in page


def test_a_restart_keeps_the_active_protections(engine_bundle, day) -> None:  # noqa: ANN001
    start, end, data = day
    a = Engine(SYMBOLS, engine_bundle, trading=FLOOR_OFF, risk=PROTECTED, costs=PAPER)
    a.warm_up({s: c.between(None, start) for s, c in data.items()})
    minutes, bars = minute_matrix(data, a.symbols, start, end)
    t = 0
    while len({b["protection"] for b in active_protections(a.risk.to_dict(), int(minutes[t]))}) < 2:
        a.step(int(minutes[t]), bars[t])
        t += 1
        assert t < len(minutes) - 360, "never had two protections active at once"
    state = json.loads(json.dumps(a.state_dict()))
    active = active_protections(state["risk"], int(minutes[t]))
    assert active and all(b["until_ms"] > minutes[t] for b in active)

    def restarted(st) -> Engine:  # noqa: ANN001
        return restarted_engine(st, engine_bundle, data, start, minutes, bars, t, trading=FLOOR_OFF, risk=PROTECTED, costs=PAPER)

    b = restarted(state)
    assert b.risk.to_dict() == a.risk.to_dict()
    b.set_risk_config(PROTECTED)  # the operator's reload of the risk section keeps them too
    assert b.risk.to_dict() == a.risk.to_dict()
    forgetful = dict(state, risk={k: v for k, v in state["risk"].items() if k != "protections"})
    c = restarted(forgetful)  # what a restart that lost the protections would do
    da, db, dc = [], [], []
    for k in range(t, t + 360):
        da += a.step(int(minutes[k]), bars[k]).decisions
        db += b.step(int(minutes[k]), bars[k]).decisions
        dc += c.step(int(minutes[k]), bars[k]).decisions
    assert sum(d.reason in PROTECTION_LABELS for d in da) >= 5
    assert db == da
    assert dc != da  # the saved state is what kept them (the test can fail)
