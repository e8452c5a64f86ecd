"""Protections (risk/protections.py): each guard trips on a constructed loss sequence with worked
numbers (exactly when it trips, what it blocks, when it clears), through the guard itself and
through `RiskManager.decide` (its reason code, its place in the order of the checks); its state
survives a JSON round trip; `active_protections` lists what is active from the persisted form."""

from __future__ import annotations

import json

import numpy as np
import pytest

from risk import (
    Candidates,
    DrawdownLookback,
    LowProfitLock,
    MarketRules,
    OpenPosition,
    Portfolio,
    RiskConfig,
    RiskManager,
    StopLossGuard,
    active_protections,
)
from risk.config import DrawdownLookbackConfig, LowProfitLockConfig, StopLossGuardConfig
from risk.errors import RiskStateError

MIN = 60_000
HOUR = 60 * MIN
T0 = 19_000 * 86_400_000 + 10 * HOUR  # 2022-01-08 10:00 UTC
SYMS = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
RETURNS = np.random.default_rng(3).normal(0, 1e-3, (len(SYMS), 240)).astype(np.float32)


def at(minutes: float) -> int:
    return T0 + int(minutes * MIN)


def manager(**cfg: object) -> RiskManager:
    return RiskManager(RiskConfig(cooldown_after_stop_minutes=0, **cfg), SYMS,
                       {s: MarketRules(qty_step=0.001) for s in SYMS}, 0.002)  # fmt: skip


def good(idx=(0, 1, 2)) -> Candidates:
    n = len(idx)
    f = np.full
    return Candidates(np.array(idx), f(n, 0.004), f(n, 0.65), f(n, 10.0), f(n, 0.02), f(n, 0.01), f(n, 0.004))


def decide(m: RiskManager, now: int, equity: float = 10_000.0, idx=(0, 1, 2), positions=()) -> dict[str, tuple[str, int]]:
    d = m.decide(good(idx), Portfolio(equity, equity - sum(p.notional for p in positions), tuple(positions)), RETURNS, now)
    return {r.symbol: (r.reason.label, r.details.get("blocked_until_ms", 0)) for r in d.rows()}


def roundtrip(obj):  # noqa: ANN001, ANN201
    """What a restart does: to_dict -> JSON in the store -> a fresh object of the same config."""
    fresh = type(obj)(obj.cfg)
    fresh.load_dict(json.loads(json.dumps(obj.to_dict())))
    return fresh


# --- stop-loss guard ------------------------------------------------------------------------


def test_stop_loss_guard_global_trips_on_the_third_stop_in_the_window_and_clears_after_the_pause():
    g = StopLossGuard(StopLossGuardConfig(stop_losses=3, window_minutes=60, pause_minutes=30, scope="global"))
    assert g.record_exit("AAAUSDT", at(0), stop_loss=True) is None
    assert g.record_exit("BBBUSDT", at(5), stop_loss=False) is None  # a take-profit does not count
    assert g.record_exit("BBBUSDT", at(10), stop_loss=True) is None
    assert g.blocked_until("CCCUSDT", at(49)) == 0
    trip = g.record_exit("CCCUSDT", at(50), stop_loss=True)  # 10:00, 10:10, 10:50: three within 60 min
    assert trip == {"protection": "stop_loss_guard", "scope": "*", "since_ms": at(50), "until_ms": at(80),
                    "stop_losses": 3, "window_minutes": 60}  # fmt: skip
    for s in SYMS:  # global: every symbol, from the trip ...
        assert g.blocked_until(s, at(50)) == at(80) and g.blocked_until(s, at(79)) == at(80)
        assert g.blocked_until(s, at(80)) == 0  # ... until 30 minutes later
    # the trip consumed its three stops: two more do not trip it again, a third does
    assert g.record_exit("AAAUSDT", at(81), True) is None and g.record_exit("AAAUSDT", at(90), True) is None
    assert g.blocked_until("AAAUSDT", at(91)) == 0
    assert g.record_exit("BBBUSDT", at(100), True)["until_ms"] == at(130)


def test_stop_loss_guard_counts_only_stops_inside_the_window():
    g = StopLossGuard(StopLossGuardConfig(stop_losses=3, window_minutes=60, pause_minutes=30))
    g.record_exit("AAAUSDT", at(0), True)
    g.record_exit("AAAUSDT", at(10), True)
    assert g.record_exit("AAAUSDT", at(61), True) is None  # window (10:01, 11:01]: 10:10 and 11:01 only
    # a fill reported late (11:00 after 11:01) counts in its own window (10:00, 11:00]: 10:10 and 11:00
    assert g.record_exit("AAAUSDT", at(60), True) is None
    trip = g.record_exit("AAAUSDT", at(65), True)  # (10:05, 11:05]: 10:10, 11:00, 11:01, 11:05
    assert trip["stop_losses"] == 4 and trip["until_ms"] == at(95)
    assert g.to_dict()["stops"] == []  # the ones that tripped it were consumed


def test_stop_loss_guard_per_symbol_pauses_only_the_symbol_with_the_stops():
    g = StopLossGuard(StopLossGuardConfig(stop_losses=2, window_minutes=30, pause_minutes=20, scope="symbol"))
    assert g.record_exit("AAAUSDT", at(0), True) is None
    assert g.record_exit("BBBUSDT", at(1), True) is None  # one each: no symbol has two
    trip = g.record_exit("AAAUSDT", at(2), True)
    assert trip["scope"] == "AAAUSDT" and trip["until_ms"] == at(22)
    assert g.blocked_until("AAAUSDT", at(21)) == at(22) and g.blocked_until("AAAUSDT", at(22)) == 0
    assert g.blocked_until("BBBUSDT", at(3)) == 0 and g.blocked_until("CCCUSDT", at(3)) == 0
    assert g.record_exit("BBBUSDT", at(31), True) is None  # BBB's first stop (10:01) left the window (10:01, 10:31]
    assert g.record_exit("BBBUSDT", at(40), True)["scope"] == "BBBUSDT"


def test_stop_loss_guard_off_by_default_records_nothing():
    g = StopLossGuard(RiskConfig().stop_loss_guard)
    for k in range(50):
        assert g.record_exit("AAAUSDT", at(k), True) is None
    assert g.to_dict() == {"stops": [], "blocks": {}} and g.blocked_until("AAAUSDT", at(50)) == 0


# --- low-profit lock ------------------------------------------------------------------------


def test_low_profit_lock_last_n_trades_worked_numbers():
    g = LowProfitLock(LowProfitLockConfig(max_loss=0.02, trades=3, window_minutes=0, lock_minutes=240))
    assert g.record_trade("AAAUSDT", at(0), -0.010) is None
    assert g.record_trade("AAAUSDT", at(10), +0.005) is None
    assert g.record_trade("AAAUSDT", at(20), -0.012) is None  # -1.7 %: not more than 2 %
    assert g.record_trade("BBBUSDT", at(25), -0.050) is None  # another symbol's loss, its first trade
    assert g.record_trade("AAAUSDT", at(30), -0.004) is None  # last three: +0.5 - 1.2 - 0.4 = -1.1 %
    trip = g.record_trade("AAAUSDT", at(40), -0.005)  # -1.2 - 0.4 - 0.5 = -2.1 %
    assert trip["protection"] == "low_profit_lock" and trip["scope"] == "AAAUSDT" and trip["trades"] == 3
    assert trip["net_return"] == pytest.approx(-0.021) and (trip["since_ms"], trip["until_ms"]) == (at(40), at(280))
    assert g.blocked_until("AAAUSDT", at(279)) == at(280) and g.blocked_until("AAAUSDT", at(280)) == 0
    assert g.blocked_until("BBBUSDT", at(41)) == 0  # only the losing symbol
    # the count starts over after the lock: two bad trades are not three
    assert g.record_trade("AAAUSDT", at(300), -0.03) is None and g.record_trade("AAAUSDT", at(310), -0.03) is None


def test_low_profit_lock_exactly_at_the_limit_does_not_lock_and_nan_returns_are_not_counted():
    g = LowProfitLock(LowProfitLockConfig(max_loss=0.03, trades=2, lock_minutes=60))
    assert g.record_trade("AAAUSDT", at(0), -0.01) is None
    assert g.record_trade("AAAUSDT", at(1), float("nan")) is None  # not known: not a trade of the count
    assert g.record_trade("AAAUSDT", at(2), -0.02) is None  # -0.01 - 0.02 = -3 %: a loss of 3 % is not more than 3 %
    assert g.record_trade("AAAUSDT", at(3), -0.0201) is not None  # -0.02 - 0.0201 = -4.01 %


def test_low_profit_lock_window_mode_sums_every_trade_of_the_window_once_there_are_enough():
    g = LowProfitLock(LowProfitLockConfig(max_loss=0.02, trades=2, window_minutes=60, lock_minutes=30))
    assert g.record_trade("AAAUSDT", at(0), -0.015) is None  # one trade: not enough
    assert g.record_trade("AAAUSDT", at(61), -0.015) is None  # 10:00 left the window (10:01, 11:01]: one again
    assert g.record_trade("AAAUSDT", at(70), +0.004) is None  # -1.5 + 0.4 = -1.1 %
    trip = g.record_trade("AAAUSDT", at(80), -0.010)  # all three in the window: -1.5 + 0.4 - 1.0 = -2.1 %
    assert trip["trades"] == 3 and trip["net_return"] == pytest.approx(-0.021) and trip["until_ms"] == at(110)


# --- drawdown lookback ----------------------------------------------------------------------


def test_drawdown_lookback_worked_numbers_trip_pause_and_rebase():
    g = DrawdownLookback(DrawdownLookbackConfig(max_drawdown=0.05, hours=6, pause_minutes=60))
    assert g.update(10_000.0, at(0)) is None
    assert g.update(10_400.0, at(60)) is None
    assert g.update(9_900.0, at(120)) is None  # -4.8 % of 10 400
    trip = g.update(9_870.0, at(180))  # -5.1 %
    assert trip["protection"] == "drawdown_lookback" and trip["scope"] == "*"
    assert trip["peak"] == 10_400.0 and trip["drawdown"] == pytest.approx(1 - 9_870 / 10_400)
    assert (trip["since_ms"], trip["until_ms"]) == (at(180), at(240))
    assert g.blocked_until(at(239)) == at(240) and g.blocked_until(at(240)) == 0
    # the history restarts at 9 870: 10 400 (still within the 6 h) no longer counts
    assert g.update(9_600.0, at(241)) is None  # -2.7 % of 9 870
    assert g.update(9_370.0, at(242)) is not None  # -5.07 % of 9 870


def test_drawdown_lookback_forgets_a_peak_older_than_the_window():
    g = DrawdownLookback(DrawdownLookbackConfig(max_drawdown=0.05, hours=2, pause_minutes=60))
    g.update(10_400.0, at(0))
    g.update(10_000.0, at(1))
    assert g.update(9_800.0, at(120)) is None  # 10 400 at 10:00 is out of (10:00, 12:00]: -2 % of 10 000
    assert g.update(9_500.0, at(121)) is None  # 10 000 at 10:01 is out of (10:01, 12:01]: -3.1 % of 9 800
    assert g.update(9_300.0, at(122))["peak"] == 9_800.0  # -5.1 % of 9 800
    half = DrawdownLookback(DrawdownLookbackConfig(max_drawdown=0.5, hours=1))
    half.update(10_000.0, at(0))
    assert half.update(5_000.0, at(1)) is not None  # exactly at the limit trips, as the kill switch does
    # a value not newer than the last is ignored (a minute replayed after a restart)
    g2 = DrawdownLookback(DrawdownLookbackConfig(max_drawdown=0.05, hours=2, pause_minutes=60))
    g2.update(10_000.0, at(5))
    assert g2.update(1.0, at(5)) is None and g2.update(1.0, at(4)) is None and g2.blocked_until(at(6)) == 0


def test_drawdown_lookback_state_stays_small_while_equity_rises():
    g = DrawdownLookback(DrawdownLookbackConfig(max_drawdown=0.05, hours=24, pause_minutes=60))
    for k in range(1440):
        g.update(10_000.0 + k, at(k))
    assert len(g.to_dict()["peaks"]) == 1


# --- through the risk manager ---------------------------------------------------------------


def test_the_manager_skips_with_each_protections_reason_and_the_block_end():
    m = manager(stop_loss_guard={"stop_losses": 2, "window_minutes": 60, "pause_minutes": 30, "scope": "symbol"},
                low_profit_lock={"max_loss": 0.02, "trades": 2, "lock_minutes": 120})  # fmt: skip
    assert decide(m, at(0)) == {s: ("taken", 0) for s in SYMS}
    m.record_trade("AAAUSDT", at(1), -0.004, stop_loss=True)
    assert m.record_trade("AAAUSDT", at(2), -0.004, stop_loss=True)[0]["protection"] == "stop_loss_guard"
    m.record_trade("BBBUSDT", at(3), -0.015, stop_loss=False)
    assert m.record_trade("BBBUSDT", at(4), -0.010, stop_loss=False)[0]["protection"] == "low_profit_lock"
    got = decide(m, at(5))
    assert got == {"AAAUSDT": ("stop_loss_guard", at(32)), "BBBUSDT": ("low_profit_lock", at(124)), "CCCUSDT": ("taken", 0)}
    assert decide(m, at(32))["AAAUSDT"] == ("taken", 0) and decide(m, at(123))["BBBUSDT"] == ("low_profit_lock", at(124))
    assert decide(m, at(124))["BBBUSDT"] == ("taken", 0)


def test_the_drawdown_lookback_is_fed_by_decide_and_by_update_equity_and_blocks_every_symbol():
    m = manager(drawdown_lookback={"max_drawdown": 0.02, "hours": 1, "pause_minutes": 15})
    assert decide(m, at(0), 10_000.0)["AAAUSDT"] == ("taken", 0)
    m.update_equity(10_200.0, at(1))  # a bar without candidates
    assert decide(m, at(2), 10_000.0)["AAAUSDT"] == ("taken", 0)  # -1.96 % of 10 200
    assert decide(m, at(3), 9_990.0) == {s: ("drawdown_lookback", at(18)) for s in SYMS}  # -2.06 %
    assert decide(m, at(17), 10_500.0)["CCCUSDT"] == ("drawdown_lookback", at(18))  # a recovery does not end the pause
    assert decide(m, at(18), 10_500.0) == {s: ("taken", 0) for s in SYMS}
    assert m.kill_switch.tripped is None  # beside the kill switch, not through it


def test_protections_come_after_the_kill_switch_and_before_position_open_and_cooldown():
    m = RiskManager(RiskConfig(cooldown_after_stop_minutes=60, daily_loss_limit=0.05, max_drawdown=0.5,
                               stop_loss_guard={"stop_losses": 1, "scope": "symbol", "pause_minutes": 600},
                               low_profit_lock={"max_loss": 0.001, "trades": 1, "lock_minutes": 600},
                               drawdown_lookback={"max_drawdown": 0.02, "hours": 1, "pause_minutes": 5}),
                    SYMS, {s: MarketRules(qty_step=0.001) for s in SYMS}, 0.002)  # fmt: skip
    held = (OpenPosition("AAAUSDT", 1.0, 10.0, 10.0),)
    m.record_stop_loss("AAAUSDT", at(0))  # cooldown
    assert decide(m, at(1), positions=held)["AAAUSDT"][0] == "position_open"
    m.record_trade("AAAUSDT", at(1), -0.01, stop_loss=False)  # low-profit lock
    assert decide(m, at(2), positions=held)["AAAUSDT"][0] == "low_profit_lock"
    m.record_trade("AAAUSDT", at(2), -0.01, stop_loss=True)  # stop-loss guard (per symbol)
    assert decide(m, at(3), positions=held)["AAAUSDT"][0] == "stop_loss_guard"
    assert decide(m, at(4), 9_700.0, positions=held)["AAAUSDT"][0] == "drawdown_lookback"  # -3 % within the hour
    assert decide(m, at(5), 9_400.0, positions=held)["AAAUSDT"][0] == "kill_switch"  # -6 % of the day's start


def test_manager_state_with_protections_survives_a_restart_and_an_old_state_loads_empty():
    cfg = {"stop_loss_guard": {"stop_losses": 2, "pause_minutes": 30}, "low_profit_lock": {"max_loss": 0.01, "trades": 2},
           "drawdown_lookback": {"max_drawdown": 0.03, "hours": 2}}  # fmt: skip
    a = manager(**cfg)
    a.record_trade("AAAUSDT", at(0), -0.008, True)  # one stop, one losing trade: counted, nothing tripped
    a.update_equity(10_000.0, at(0))
    a.update_equity(10_100.0, at(1))
    b = manager(**cfg)
    b.load_dict(json.loads(json.dumps(a.to_dict())))
    assert b.to_dict() == a.to_dict()
    for m in (a, b):  # the same next events trip the same blocks in both
        assert m.record_trade("BBBUSDT", at(2), -0.001, True)[0]["until_ms"] == at(32)
        assert m.record_trade("AAAUSDT", at(3), -0.003, False)[0]["protection"] == "low_profit_lock"
        m.update_equity(9_790.0, at(4))  # -3.07 % of 10 100
    # the drawdown pause (until 11:04) outranks the global stop-loss pause (until 10:32) and AAA's lock
    assert decide(a, at(5)) == decide(b, at(5)) == {s: ("drawdown_lookback", at(64)) for s in SYMS}
    assert decide(a, at(64)) == decide(b, at(64)) == {"AAAUSDT": ("low_profit_lock", at(243)), "BBBUSDT": ("taken", 0),
                                                     "CCCUSDT": ("taken", 0)}  # fmt: skip
    old = a.to_dict()
    del old["protections"]  # saved by the code before the protections
    c = manager(**cfg)
    c.load_dict(old)
    assert active_protections(c.to_dict(), at(6)) == []


@pytest.mark.parametrize("bad", [
    {"stop_loss_guard": {"stops": [["AAAUSDT", 1.5]]}},
    {"stop_loss_guard": {"blocks": {"*": {"since_ms": 1}}}},
    {"low_profit_lock": {"trades": {"AAAUSDT": [[1, "x"]]}}},
    {"drawdown_lookback": {"peaks": [[1, float("inf")]]}},
    {"drawdown_lookback": "nope"},
])  # fmt: skip
def test_a_corrupt_protections_state_is_refused_with_its_key(bad):
    m = manager()
    state = m.to_dict()
    state["protections"] = bad
    with pytest.raises(RiskStateError, match="protections"):
        m.load_dict(state)


def test_each_guard_round_trips_mid_sequence():
    guards = [StopLossGuard(StopLossGuardConfig(stop_losses=3, scope="symbol")),
              LowProfitLock(LowProfitLockConfig(max_loss=0.01, trades=3, window_minutes=30)),
              DrawdownLookback(DrawdownLookbackConfig(max_drawdown=0.01, hours=1))]  # fmt: skip
    guards[0].record_exit("AAAUSDT", at(0), True)
    guards[0].record_exit("AAAUSDT", at(1), True)
    guards[1].record_trade("AAAUSDT", at(0), -0.004)
    guards[1].record_trade("AAAUSDT", at(1), -0.004)
    guards[2].update(10_000.0, at(0))
    guards[2].update(9_950.0, at(1))
    for g in guards:
        r = roundtrip(g)
        assert r.to_dict() == g.to_dict()
    s, lp, dd = (roundtrip(g) for g in guards)
    assert s.record_exit("AAAUSDT", at(2), True) is not None  # the two saved stops still count
    assert lp.record_trade("AAAUSDT", at(2), -0.003) is not None  # -1.1 %
    assert dd.update(9_899.0, at(2)) is not None  # -1.01 % of 10 000


# --- the status view ------------------------------------------------------------------------


def test_active_protections_lists_what_blocks_at_a_time_from_the_persisted_state():
    m = manager(stop_loss_guard={"stop_losses": 1, "pause_minutes": 30},
                low_profit_lock={"max_loss": 0.01, "trades": 1, "lock_minutes": 90},
                drawdown_lookback={"max_drawdown": 0.02, "hours": 1, "pause_minutes": 10})  # fmt: skip
    assert active_protections(m.to_dict(), at(0)) == [] and active_protections(None, at(0)) == []
    m.record_trade("BBBUSDT", at(0), -0.02, stop_loss=True)  # trips both per-trade guards
    m.update_equity(10_000.0, at(1))
    m.update_equity(9_700.0, at(2))
    state = json.loads(json.dumps(m.to_dict()))
    got = active_protections(state, at(5))
    assert [(b["protection"], b["scope"], b["since_ms"], b["until_ms"]) for b in got] == [
        ("drawdown_lookback", "*", at(2), at(12)),
        ("stop_loss_guard", "*", at(0), at(30)),
        ("low_profit_lock", "BBBUSDT", at(0), at(90)),
    ]
    assert got[0]["drawdown"] == pytest.approx(0.03) and got[1]["stop_losses"] == 1
    assert got[2]["net_return"] == pytest.approx(-0.02)
    assert [b["protection"] for b in active_protections(state, at(12))] == ["stop_loss_guard", "low_profit_lock"]
    assert [b["protection"] for b in active_protections(state, at(30))] == ["low_profit_lock"]
    assert active_protections(state, at(90)) == []
