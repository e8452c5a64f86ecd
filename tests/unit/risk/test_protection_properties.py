"""Property tests (hypothesis) of the protections against brute-force models written from their
rules (risk/protections.py's docstring): over random loss sequences each guard trips exactly when
its model does, a restart anywhere in the sequence (state through JSON) changes nothing, and the
risk manager never takes a candidate of a blocked symbol while taking every other good one."""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from risk import (
    Candidates,
    DrawdownLookback,
    LowProfitLock,
    MarketRules,
    Portfolio,
    RiskConfig,
    RiskManager,
    StopLossGuard,
)
from risk.config import DrawdownLookbackConfig, LowProfitLockConfig, StopLossGuardConfig

MIN = 60_000
T0 = 19_500 * 86_400_000
SYMS = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# events a minute apart or more, in time order (one engine step books its exits at its minute)
gaps = st.integers(0, 40)


def times(draw_gaps: list[int]) -> list[int]:
    t, out = T0, []
    for g in draw_gaps:
        t += g * MIN
        out.append(t)
    return out


def restarted(guard, k: int, i: int):  # noqa: ANN001, ANN201
    """At event k == i, replace the guard by a fresh one restored from its JSON state."""
    if k != i:
        return guard
    fresh = type(guard)(guard.cfg)
    fresh.load_dict(json.loads(json.dumps(guard.to_dict())))
    return fresh


# --- brute-force models: full lists, no pruning, no deques ---------------------------------


def stop_model(cfg: StopLossGuardConfig, events: list[tuple[str, int, bool]]) -> list[tuple[str, int] | None]:
    unused: list[tuple[str, int]] = []
    out: list[tuple[str, int] | None] = []
    w = cfg.window_minutes * MIN
    for sym, t, sl in events:
        if not sl or cfg.stop_losses == 0:
            out.append(None)
            continue
        unused.append((sym, t))
        key = "*" if cfg.scope == "global" else sym
        inside = [x for x in unused if (key == "*" or x[0] == sym) and t - w < x[1] <= t]
        if len(inside) >= cfg.stop_losses:
            unused = [x for x in unused if x not in inside]
            out.append((key, t + cfg.pause_minutes * MIN))
        else:
            out.append(None)
    return out


def low_profit_model(cfg: LowProfitLockConfig, events: list[tuple[str, int, float]]) -> list[tuple[str, int] | None]:
    since: dict[str, list[tuple[int, float]]] = {}
    out: list[tuple[str, int] | None] = []
    for sym, t, r in events:
        hist = since.setdefault(sym, [])
        hist.append((t, r))
        look = hist[-cfg.trades:] if cfg.window_minutes == 0 else [x for x in hist if x[0] > t - cfg.window_minutes * MIN]
        if len(look) >= cfg.trades and -math.fsum(x[1] for x in look) > cfg.max_loss:
            since[sym] = []
            out.append((sym, t + cfg.lock_minutes * MIN))
        else:
            out.append(None)
    return out


def drawdown_model(cfg: DrawdownLookbackConfig, events: list[tuple[int, float]]) -> list[int | None]:
    hist: list[tuple[int, float]] = []
    out: list[int | None] = []
    for t, e in events:
        hist.append((t, e))
        peak = max(x for s, x in hist if s > t - cfg.hours * 3_600_000)
        if e <= peak * (1 - cfg.max_drawdown):
            hist = [(t, e)]
            out.append(t + cfg.pause_minutes * MIN)
        else:
            out.append(None)
    return out


# --- the guards against their models ------------------------------------------------------


@PROPS
@given(n=st.integers(1, 4), window=st.integers(1, 120), pause=st.integers(1, 60), scope=st.sampled_from(["global", "symbol"]),
       ev=st.lists(st.tuples(st.sampled_from(SYMS), gaps, st.booleans()), max_size=60), cut=st.integers(0, 60))  # fmt: skip
def test_stop_loss_guard_trips_exactly_when_its_model_does(n, window, pause, scope, ev, cut):
    cfg = StopLossGuardConfig(stop_losses=n, window_minutes=window, pause_minutes=pause, scope=scope)
    events = [(s, t, sl) for (s, _, sl), t in zip(ev, times([g for _, g, _ in ev]), strict=True)]
    g = StopLossGuard(cfg)
    got = []
    for k, (s, t, sl) in enumerate(events):
        g = restarted(g, k, cut)
        trip = g.record_exit(s, t, sl)
        got.append(None if trip is None else (trip["scope"], trip["until_ms"]))
        for other in SYMS:  # what it blocks right after this event
            want = [u for (key, u) in (x for x in got if x) if key in ("*", other) and t < u]
            assert g.blocked_until(other, t) == (max(want) if want else 0)
    assert got == stop_model(cfg, events)


@PROPS
@given(n=st.integers(1, 4), window=st.sampled_from([0, 0, 30, 120]), limit=st.floats(0.001, 0.05),
       ev=st.lists(st.tuples(st.sampled_from(SYMS), gaps, st.floats(-0.03, 0.02)), max_size=60), cut=st.integers(0, 60))  # fmt: skip
def test_low_profit_lock_trips_exactly_when_its_model_does(n, window, limit, ev, cut):
    cfg = LowProfitLockConfig(max_loss=limit, trades=n, window_minutes=window, lock_minutes=90)
    events = [(s, t, r) for (s, _, r), t in zip(ev, times([g for _, g, _ in ev]), strict=True)]
    g = LowProfitLock(cfg)
    got = []
    for k, (s, t, r) in enumerate(events):
        g = restarted(g, k, cut)
        trip = g.record_trade(s, t, r)
        got.append(None if trip is None else (trip["scope"], trip["until_ms"]))
        for other in SYMS:
            ends = [u for (key, u) in (x for x in got if x) if key == other and t < u]
            assert g.blocked_until(other, t) == (max(ends) if ends else 0)
    assert got == low_profit_model(cfg, events)


@PROPS
@given(limit=st.floats(0.005, 0.1), hours=st.integers(1, 3), pause=st.integers(1, 90),
       steps=st.lists(st.tuples(st.integers(1, 30), st.floats(-0.02, 0.02)), max_size=120), cut=st.integers(0, 120))  # fmt: skip
def test_drawdown_lookback_trips_exactly_when_its_model_does(limit, hours, pause, steps, cut):
    cfg = DrawdownLookbackConfig(max_drawdown=limit, hours=hours, pause_minutes=pause)
    t, e, events = T0, 10_000.0, []
    for gap, r in steps:
        t += gap * MIN
        e *= 1 + r
        events.append((t, e))
    g = DrawdownLookback(cfg)
    got = []
    for k, (t, e) in enumerate(events):
        g = restarted(g, k, cut)
        trip = g.update(e, t)
        got.append(None if trip is None else trip["until_ms"])
        ends = [u for u in got if u is not None and t < u]
        assert g.blocked_until(t) == (max(ends) if ends else 0)
    assert got == drawdown_model(cfg, events)
    assert len(g.to_dict()["peaks"]) <= len(events) + 1


# --- through the manager -----------------------------------------------------------------


@PROPS
@given(ev=st.lists(st.tuples(st.sampled_from(SYMS), st.integers(1, 10), st.floats(-0.02, 0.01), st.booleans()),
                   min_size=1, max_size=40))  # fmt: skip
def test_the_manager_never_takes_a_blocked_symbol_and_takes_every_other_good_one(ev):
    cfg = RiskConfig(cooldown_after_stop_minutes=0, max_positions=10, max_correlation=1.0, max_per_symbol=0.1,
                     stop_loss_guard={"stop_losses": 2, "window_minutes": 20, "pause_minutes": 15, "scope": "symbol"},
                     low_profit_lock={"max_loss": 0.02, "trades": 2, "lock_minutes": 25})  # fmt: skip
    m = RiskManager(cfg, SYMS, {s: MarketRules(qty_step=0.001) for s in SYMS}, 0.002)
    returns = np.random.default_rng(1).normal(0, 1e-3, (len(SYMS), 240))
    returns[1] = -returns[0]  # correlations below any threshold
    returns[2] = np.random.default_rng(2).normal(0, 1e-3, 240)
    blocks: dict[tuple[str, str], int] = {}  # (protection, symbol) -> end of its latest block
    t = T0
    for s, gap, r, sl in ev:
        t += gap * MIN
        for trip in m.record_trade(s, t, r, sl):
            key = (trip["protection"], trip["scope"])
            blocks[key] = max(blocks.get(key, 0), trip["until_ms"])
        n = len(SYMS)
        cands = Candidates(np.arange(n), np.full(n, 0.004), np.full(n, 0.65), np.full(n, 10.0), np.full(n, 0.02),
                           np.full(n, 0.01), np.full(n, 0.004))  # fmt: skip
        d = m.decide(cands, Portfolio(10_000.0, 10_000.0), returns.astype(np.float32), t)
        for row in d.rows():
            # the stop-loss guard outranks the low-profit lock (risk.reasons.PRECEDENCE)
            active = [(p, blocks[(p, row.symbol)]) for p in ("stop_loss_guard", "low_profit_lock")
                      if t < blocks.get((p, row.symbol), 0)]  # fmt: skip
            if active:
                assert (row.reason.label, row.details["blocked_until_ms"]) == active[0], (row.symbol, t, blocks)
            else:
                assert row.taken, (row.symbol, row.reason.label, t, blocks)
