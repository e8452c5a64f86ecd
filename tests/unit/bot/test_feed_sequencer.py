"""The per-symbol ordering rule (each minute once, in order, nothing invented) and the minute
assembler that turns per-symbol streams into one [S, 5] matrix per minute."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.marketdata.events import ClosedCandle, ExchangeGap
from bot.marketdata.minutes import MinuteAssembler
from bot.marketdata.sequencer import CONFLICT, DUPLICATE, NEW, STALE, SymbolSequencer

M = 60_000
T0 = 1_617_321_600_000


def vals(ts: int) -> tuple[float, float, float, float, float]:
    x = float(ts // M % 1000 + 1)
    return (x, x + 1, x - 0.5, x + 0.5, x * 10)


def test_in_order_candles_are_released_at_once():
    q = SymbolSequencer("BTCUSDT", next_ts=T0)
    for i in range(3):
        assert q.offer(T0 + i * M, vals(T0 + i * M), "ws", 0.0) == NEW
        assert [t for t, _ in q.pop_ready()] == [T0 + i * M]
    assert q.missing_range() is None and q.released == 3


def test_a_hole_holds_later_candles_until_filled():
    q = SymbolSequencer("BTCUSDT", next_ts=T0)
    q.offer(T0, vals(T0), "ws", 0.0)
    q.offer(T0 + 3 * M, vals(T0 + 3 * M), "ws", 0.0)
    assert [t for t, _ in q.pop_ready()] == [T0]
    assert q.missing_range() == (T0 + M, T0 + 3 * M)  # ends at the known later candle
    assert list(q.pop_ready()) == []
    q.offer(T0 + 2 * M, vals(T0 + 2 * M), "rest", 0.0)
    assert list(q.pop_ready()) == [] and q.missing_range() == (T0 + M, T0 + 2 * M)
    q.offer(T0 + M, vals(T0 + M), "rest", 0.0)
    assert [t for t, _ in q.pop_ready()] == [T0 + M, T0 + 2 * M, T0 + 3 * M]


def test_closed_horizon_makes_minutes_missing_and_gaps_release_as_none():
    q = SymbolSequencer("BTCUSDT", next_ts=T0)
    q.close_through(T0 + 2 * M + 5)  # the clock says minutes T0..T0+2 closed
    assert q.missing_range() == (T0, T0 + 2 * M)
    assert q.mark_gap(T0) and q.mark_gap(T0 + M)
    q.offer(T0 + 2 * M, vals(T0 + 2 * M), "rest", 0.0)
    out = list(q.pop_ready())
    assert [(t, s is None) for t, s in out] == [(T0, True), (T0 + M, True), (T0 + 2 * M, False)]
    assert q.released == 1  # gaps are not candles


def test_stale_duplicate_and_conflict():
    q = SymbolSequencer("BTCUSDT", next_ts=T0)
    q.offer(T0, vals(T0), "ws", 0.0)
    list(q.pop_ready())
    assert q.offer(T0, vals(T0), "ws", 0.0) == STALE
    q.offer(T0 + 2 * M, vals(T0 + 2 * M), "ws", 0.0)
    assert q.offer(T0 + 2 * M, vals(T0 + 2 * M), "rest", 0.0) == DUPLICATE
    assert q.offer(T0 + 2 * M, (1.0, 1.0, 1.0, 1.0, 1.0), "rest", 0.0) == CONFLICT
    assert q.pending[T0 + 2 * M].values == vals(T0 + 2 * M)  # the first word stays


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_arrival_order_releases_each_minute_once_in_order(data):
    n = data.draw(st.integers(1, 40))
    minutes = [T0 + i * M for i in range(n)]
    gaps = set(data.draw(st.lists(st.sampled_from(minutes), max_size=n // 3)))
    arrivals = [t for t in minutes if t not in gaps]
    arrivals += data.draw(st.lists(st.sampled_from(arrivals), max_size=10)) if arrivals else []  # duplicates
    arrivals = data.draw(st.permutations(arrivals))
    q = SymbolSequencer("X", next_ts=T0)
    released: list[tuple[int, bool]] = []
    for t in arrivals:
        q.offer(t, vals(t), "ws", 0.0)
        released += [(ts, s is not None) for ts, s in q.pop_ready()]
    q.close_through(minutes[-1])
    for g in sorted(gaps):  # REST later proves these are exchange gaps
        q.mark_gap(g)
        released += [(ts, s is not None) for ts, s in q.pop_ready()]
    assert [t for t, _ in released] == minutes  # each minute once, in order
    assert all(has == (t not in gaps) for t, has in released)  # nothing invented
    assert q.missing_range() is None


def candle(sym: str, ts: int, close: float = 1.0) -> ClosedCandle:
    return ClosedCandle(sym, ts, close, close, close, close, 1.0, "ws", 0.0)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_minute_released_when_every_symbol_has_delivered_it():
    a = MinuteAssembler(["A", "B", "C"], timeout_s=10)
    a.add(candle("A", T0, 1))
    a.add(candle("B", T0, 2))
    assert a.pop_ready() == []
    a.add(ExchangeGap("C", T0, 1))  # C has no candle this minute: NaN row, no waiting
    [(ts, bars)] = a.pop_ready()
    assert ts == T0 and bars.shape == (3, 5) and bars.dtype == np.float64
    assert bars[0, 3] == 1 and bars[1, 3] == 2 and np.isnan(bars[2]).all()


def test_minute_released_on_timeout_and_late_candle_is_not_delivered():
    clock = FakeClock()
    a = MinuteAssembler(["A", "B"], timeout_s=5, clock=clock)
    a.add(candle("A", T0))
    clock.t = 3.0
    a.add(candle("A", T0 + M))
    clock.t = 4.9
    assert a.pop_ready() == []
    clock.t = 5.1
    out = a.pop_ready()
    assert [t for t, _ in out] == [T0]  # T0+M (first seen at t=3) has not timed out yet
    assert np.isnan(out[0][1][1]).all() and a.timed_out_rows == 1
    a.add(candle("B", T0))  # too late for T0
    assert a.late == 1
    a.add(candle("B", T0 + M))
    [(ts, bars)] = a.pop_ready()
    assert ts == T0 + M and not np.isnan(bars).any()


def test_minutes_come_out_in_order_and_all_gap_minutes_are_skipped():
    a = MinuteAssembler(["A", "B"], timeout_s=10)
    a.add(ExchangeGap("A", T0, 3))
    a.add(ExchangeGap("B", T0, 3))
    a.add(candle("B", T0 + 3 * M))
    a.add(candle("A", T0 + 3 * M))
    out = a.pop_ready()
    assert [t for t, _ in out] == [T0 + 3 * M]  # downtime minutes: nothing to compute on
    a.add(candle("A", T0 + 4 * M))
    a.add(candle("A", T0 + 5 * M))
    a.add(candle("B", T0 + 5 * M))  # B jumps: its T0+4 will never come (watermark passed it)
    assert [t for t, _ in a.pop_ready()] == [T0 + 4 * M, T0 + 5 * M]
    assert not any(math.isnan(x) for x in a.watermark.astype(float))
