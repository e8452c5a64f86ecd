"""Kill switch, order rate, cooldowns: worked numbers, reset rules, and restoring state after a
restart through a JSON round trip (what the daemon will persist)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from risk import (
    Candidates,
    Cooldowns,
    KillSwitch,
    MarketRules,
    OpenPosition,
    OrderRateLimiter,
    Portfolio,
    Reason,
    RiskConfig,
    RiskManager,
)
from risk.errors import RiskInputError, RiskStateError

DAY = 86_400_000
MIN = 60_000
T0 = 19_000 * DAY + 10 * 3_600_000  # 2022-01-08 10:00 UTC
SYMS = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
RETURNS = np.random.default_rng(3).normal(0, 1e-3, (len(SYMS), 240)).astype(np.float32)


def manager(**cfg: object) -> RiskManager:
    return RiskManager(RiskConfig(**cfg), SYMS, {s: MarketRules(qty_step=0.001) for s in SYMS}, 0.002)


def good(idx=(0,)) -> Candidates:
    n = len(idx)
    f = np.full
    return Candidates(np.array(idx), f(n, 0.004), f(n, 0.65), f(n, 10.0), f(n, 0.02), f(n, 0.01), f(n, 0.004))


def flat(equity: float, positions=()) -> Portfolio:
    return Portfolio(equity, equity - sum(p.notional for p in positions), tuple(positions))


# --- kill switch ----------------------------------------------------------------------------


def test_daily_loss_trips_at_the_limit_from_the_day_start():
    ks = KillSwitch(daily_loss_limit=0.03, max_drawdown=0.5)
    assert ks.update(10_000.0, T0) is None
    assert ks.update(10_400.0, T0 + MIN) is None  # a gain: the day start stays 10_000
    assert ks.update(9_700.01, T0 + 2 * MIN) is None  # -2.9999 %
    assert not ks.active
    assert ks.update(9_699.99, T0 + 3 * MIN) == "tripped:daily_loss"  # -3.0001 % of 10_000
    assert ks.active and ks.tripped == "daily_loss" and ks.tripped_ms == T0 + 3 * MIN
    assert ks.update(11_000.0, T0 + 4 * MIN) is None  # recovering the same day does not clear it
    assert ks.active


def test_daily_trip_clears_on_the_first_bar_of_the_next_utc_day():
    ks = KillSwitch(0.03, 0.5, daily_reset="next_utc_day")
    ks.update(10_000.0, T0)
    ks.update(9_000.0, T0 + MIN)
    midnight = (T0 // DAY + 1) * DAY
    assert ks.update(9_000.0, midnight - 1) is None and ks.active  # 23:59:59.999 still the same day
    assert ks.update(9_000.0, midnight) == "reset:next_utc_day"
    assert not ks.active and ks.day_start_equity == 9_000.0
    # the new day's limit is measured from the new day's start: 9_000 * 0.97 = 8_730
    assert ks.update(8_730.01, midnight + MIN) is None
    assert ks.update(8_729.99, midnight + 2 * MIN) == "tripped:daily_loss"


def test_manual_reset_rule_keeps_blocking_across_days_until_reset_by_hand():
    ks = KillSwitch(0.03, 0.5, daily_reset="manual")
    ks.update(10_000.0, T0)
    ks.update(9_000.0, T0 + MIN)
    for d in range(1, 4):
        assert ks.update(9_500.0, T0 + d * DAY) is None
        assert ks.active
    ks.reset(9_500.0, T0 + 4 * DAY)
    assert not ks.active and ks.day_start_equity == 9_500.0 and ks.peak_equity == 9_500.0


def test_drawdown_from_the_peak_trips_and_needs_a_manual_reset_by_default():
    ks = KillSwitch(daily_loss_limit=0.5, max_drawdown=0.15)
    ks.update(10_000.0, T0)
    ks.update(12_000.0, T0 + MIN)  # peak
    assert ks.update(10_200.01, T0 + 2 * MIN) is None  # 12_000 * 0.85 = 10_200
    assert ks.update(10_199.99, T0 + 3 * MIN) == "tripped:max_drawdown"
    assert ks.update(10_199.99, T0 + 2 * DAY) is None and ks.active  # not cleared by a new day


def test_drawdown_accumulates_over_days_of_daily_trips():
    # -2.5 % a day never trips a 3 % daily limit... and -3.5 % trips it every day, but clearing a
    # daily trip must not forget the peak: after enough days the 15 % drawdown must trip.
    ks = KillSwitch(daily_loss_limit=0.03, max_drawdown=0.15, daily_reset="next_utc_day", drawdown_reset="manual")
    eq = 10_000.0
    ks.update(eq, T0)
    events = []
    for d in range(1, 8):
        events.append(ks.update(eq, T0 + d * DAY))
        eq *= 1 - 0.035
        events.append(ks.update(eq, T0 + d * DAY + MIN))
    assert "tripped:max_drawdown" in events
    first_dd = events.index("tripped:max_drawdown")
    # 10_000 * 0.965^k <= 8_500 first at k = 5 (0.965^5 = 0.8368); k = 4 gives 0.8672
    assert events[first_dd - 1] == "reset:next_utc_day" and first_dd == 2 * 5 - 1
    assert ks.tripped == "max_drawdown"


def test_daily_trip_upgrades_to_drawdown():
    ks = KillSwitch(0.03, 0.10)
    ks.update(10_000.0, T0)
    assert ks.update(9_600.0, T0 + MIN) == "tripped:daily_loss"
    assert ks.update(8_900.0, T0 + 2 * MIN) == "tripped:max_drawdown"


def test_drawdown_next_day_rule_rebases_the_peak():
    ks = KillSwitch(0.5, 0.10, drawdown_reset="next_utc_day")
    ks.update(10_000.0, T0)
    ks.update(8_900.0, T0 + MIN)
    assert ks.update(8_900.0, T0 + DAY) == "reset:next_utc_day"
    assert ks.peak_equity == 8_900.0 and not ks.active


def test_clock_going_back_a_day_is_refused():
    ks = KillSwitch(0.03, 0.15)
    ks.update(10_000.0, T0)
    with pytest.raises(RiskStateError, match="clock went backwards"):
        ks.update(10_000.0, T0 - DAY)
    with pytest.raises(RiskInputError, match="equity"):
        ks.update(float("nan"), T0)


def test_kill_switch_blocks_entries_and_asks_to_flatten():
    m = manager(daily_loss_limit=0.03, kill_switch_flatten=True)
    pos = OpenPosition("CCCUSDT", 100.0, 10.0, 10.0)
    d = m.decide(good((0, 1)), flat(10_000.0, [pos]), RETURNS, T0)
    assert d.taken.all() and not d.flatten
    d = m.decide(good((0, 1)), flat(9_690.0, [pos]), RETURNS, T0 + MIN)
    assert (d.reason == Reason.KILL_SWITCH).all() and d.flatten and d.kill_switch == "daily_loss"
    assert d.kill_switch_event == "tripped:daily_loss"
    assert d.rows()[0].details["kill_switch"] == "daily_loss"
    m2 = manager(daily_loss_limit=0.03, kill_switch_flatten=False)
    m2.decide(good(), flat(10_000.0), RETURNS, T0)
    assert not m2.decide(good(), flat(9_000.0), RETURNS, T0 + MIN).flatten


# --- order rate -----------------------------------------------------------------------------


def test_order_rate_sliding_window():
    lim = OrderRateLimiter(3)
    lim.record(T0, 2)
    lim.record(T0 + 30_000)
    assert lim.capacity(T0 + 30_000) == 0
    assert lim.capacity(T0 + 59_999) == 0
    assert lim.capacity(T0 + 60_000) == 2  # the two orders at T0 are 60 s old: out of the window
    assert lim.capacity(T0 + 90_000) == 3
    lim.record(T0 + 90_000, 10)  # exits beyond the limit are still counted, the buffer stays bounded
    assert lim.capacity(T0 + 90_001) == 0 and len(lim.to_dict()["sent_ms"]) == 3


def test_order_rate_limits_entries_in_decide():
    m = manager(max_orders_per_minute=3, max_fraction_per_trade=0.05)
    m.record_order(T0 - 10_000)  # an exit sent 10 s ago
    d = m.decide(good((0, 1, 2)), flat(10_000.0), RETURNS, T0)
    assert int(d.taken.sum()) == 2
    assert (d.reason == Reason.ORDER_RATE).sum() == 1
    m.record_order(T0, 2)
    assert (m.decide(good((0,)), flat(10_000.0), RETURNS, T0 + 30_000).reason == Reason.ORDER_RATE).all()
    assert m.decide(good((0,)), flat(10_000.0), RETURNS, T0 + MIN).taken.all()


# --- cooldowns ------------------------------------------------------------------------------


def test_cooldown_after_stop_loss():
    m = manager(cooldown_after_stop_minutes=30)
    assert m.record_stop_loss("BBBUSDT", T0) == T0 + 30 * MIN
    d = m.decide(good((0, 1)), flat(10_000.0), RETURNS, T0 + 29 * MIN)
    assert [Reason(r) for r in d.reason] == [Reason.TAKEN, Reason.COOLDOWN]
    assert d.rows()[1].details["cooldown_until_ms"] == T0 + 30 * MIN
    assert m.decide(good((1,)), flat(10_000.0), RETURNS, T0 + 30 * MIN).taken.all()


def test_cooldowns_prune_and_extend():
    c = Cooldowns(10)
    c.record_stop("AAAUSDT", T0)
    c.record_stop("AAAUSDT", T0 - 5 * MIN)  # an older stop reported late does not shorten it
    assert c.until("AAAUSDT") == T0 + 10 * MIN
    c.prune(T0 + 10 * MIN)
    assert not c and c.to_dict() == {}


# --- persistence ----------------------------------------------------------------------------


def test_state_survives_a_restart_through_json():
    cfg = dict(daily_loss_limit=0.03, kill_switch_reset="manual", max_orders_per_minute=2)
    m = manager(**cfg)
    m.decide(good(), flat(10_000.0), RETURNS, T0)
    m.decide(good(), flat(9_500.0), RETURNS, T0 + MIN)  # trips
    m.record_order(T0 + MIN)
    m.record_stop_loss("CCCUSDT", T0 + MIN)
    saved = json.dumps(m.to_dict())

    restored = manager(**cfg)
    restored.load_dict(json.loads(saved))
    assert restored.to_dict() == m.to_dict()
    # still blocked (the trip survived), cooldown and rate state kept
    d = restored.decide(good((0, 2)), flat(9_500.0), RETURNS, T0 + 2 * MIN)
    assert (d.reason == Reason.KILL_SWITCH).all()
    restored.reset_kill_switch(9_500.0, T0 + 2 * MIN)
    d = restored.decide(good((0, 2)), flat(9_500.0), RETURNS, T0 + 2 * MIN)
    assert [Reason(r) for r in d.reason] == [Reason.TAKEN, Reason.COOLDOWN]
    assert restored.order_rate.capacity(T0 + MIN + 59_999) == 1  # the order sent at T0 + 1 min


def test_fresh_manager_state_round_trips():
    m = manager()
    m2 = manager()
    m2.load_dict(json.loads(json.dumps(m.to_dict())))
    assert m2.to_dict() == m.to_dict()


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"version": 99}, "version 99"),
        ([], "version 'list'"),
        ({"version": 1, "kill_switch": {}, "order_rate": {}}, "'cooldowns' must be a mapping"),
        ({"version": 1, "kill_switch": {"tripped": "yes"}, "order_rate": {}, "cooldowns": {}}, "kill_switch.tripped"),
        ({"version": 1, "kill_switch": {"day": "x"}, "order_rate": {}, "cooldowns": {}}, "kill_switch.day"),
        ({"version": 1, "kill_switch": {"day": 5}, "order_rate": {}, "cooldowns": {}}, "day_start_equity"),
        ({"version": 1, "kill_switch": {}, "order_rate": {"sent_ms": [1.5]}, "cooldowns": {}}, "order_rate.sent_ms"),
        ({"version": 1, "kill_switch": {}, "order_rate": {}, "cooldowns": {"A": "soon"}}, "cooldowns"),
    ],
)
def test_bad_state_is_refused_with_the_key(state, match):
    with pytest.raises(RiskStateError, match=match):
        manager().load_dict(state)
